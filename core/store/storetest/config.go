package storetest

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// destinations: API destinations are created and replaced by ID, listed oldest first, refused when their
// name is another's, and deleted (ErrNotFound when unknown).
func (s *suite) destinations(t *testing.T) {
	e := s.store(t)
	if got, err := e.st.Destinations(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	a := store.DestinationRecord{ID: "dst_a", Name: "alpha", Tenant: "acme", Type: "webhook", Spec: []byte(`{"url":"x"}`),
		Retiring:  []store.RetiringSecret{{Secret: "sealed:1", Until: T0.Add(time.Hour)}, {Secret: "sealed:0", Until: T0.Add(time.Minute)}},
		CreatedAt: T0.Add(time.Minute), UpdatedAt: T0.Add(time.Minute)}
	b := store.DestinationRecord{ID: "dst_b", Name: "beta", Type: "sqs", Spec: []byte(`{}`), CreatedAt: T0, UpdatedAt: T0}
	for _, d := range []store.DestinationRecord{a, b} {
		if err := e.st.PutDestination(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.st.Destinations(ctx)
	if err != nil || !reflect.DeepEqual(got, []store.DestinationRecord{b, a}) {
		t.Fatalf("oldest first:\n got %+v\nwant %+v (%v)", got, []store.DestinationRecord{b, a}, err)
	}
	// A name another id of the same tenant uses clashes; the stored one is unchanged.
	clash := b
	clash.Name, clash.Tenant = "alpha", "acme"
	if err := e.st.PutDestination(ctx, clash); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("name clash: %v, want ErrConflict", err)
	}
	if got, _ := e.st.Destinations(ctx); !reflect.DeepEqual(got, []store.DestinationRecord{b, a}) {
		t.Fatalf("a refused put changed the stored destinations: %+v", got)
	}
	// Names are per tenant: another tenant (or the tenant-less) may use acme's name.
	other := store.DestinationRecord{ID: "dst_g", Name: "alpha", Tenant: "globex", Type: "webhook", Spec: []byte(`{}`), CreatedAt: T0, UpdatedAt: T0}
	if err := e.st.PutDestination(ctx, other); err != nil {
		t.Fatalf("globex's alpha beside acme's: %v", err)
	}
	if err := e.st.DeleteDestination(ctx, "dst_g"); err != nil {
		t.Fatal(err)
	}
	// Replace by id: rename, new spec, no retiring secrets, creation time kept when not given.
	a2 := store.DestinationRecord{ID: "dst_a", Name: "alpha-2", Tenant: "acme", Type: "webhook", Spec: []byte(`{"url":"y"}`), UpdatedAt: T0.Add(2 * time.Minute)}
	if err := e.st.PutDestination(ctx, a2); err != nil {
		t.Fatal(err)
	}
	a2.CreatedAt = a.CreatedAt
	// The old name is free again; times not given are the store's now.
	e.clock.Advance(time.Hour)
	c2 := store.DestinationRecord{ID: "dst_c", Name: "alpha", Type: "webhook"}
	if err := e.st.PutDestination(ctx, c2); err != nil {
		t.Fatalf("reusing a released name: %v", err)
	}
	c2.CreatedAt, c2.UpdatedAt = e.clock.Now(), e.clock.Now()
	got, _ = e.st.Destinations(ctx)
	if want := []store.DestinationRecord{b, a2, c2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after replace:\n got %+v\nwant %+v", got, want)
	}
	// A replace that gives no UpdatedAt takes the store's now.
	e.clock.Advance(time.Minute)
	b2 := b
	b2.UpdatedAt = time.Time{}
	b2.Spec = []byte(`{"queue":"q"}`)
	if err := e.st.PutDestination(ctx, b2); err != nil {
		t.Fatal(err)
	}
	b2.UpdatedAt = e.clock.Now()
	if got, _ := e.st.Destinations(ctx); !reflect.DeepEqual(got[0], b2) {
		t.Fatalf("replace without UpdatedAt:\n got %+v\nwant %+v", got[0], b2)
	}
	if err := e.st.DeleteDestination(ctx, "dst_b"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteDestination(ctx, "dst_b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting an unknown destination: %v, want ErrNotFound", err)
	}
	got, _ = e.st.Destinations(ctx)
	if len(got) != 2 || got[0].ID != "dst_a" || got[1].ID != "dst_c" {
		t.Fatalf("after delete: %+v", got)
	}
	for _, bad := range []store.DestinationRecord{{Name: "x", Type: "webhook"}, {ID: "dst_x", Type: "webhook"}} {
		if err := e.st.PutDestination(ctx, bad); err == nil {
			t.Fatalf("a destination without id or name must be refused: %+v", bad)
		}
	}
	if got, _ := e.st.Destinations(ctx); len(got) != 2 {
		t.Fatalf("a refused destination was stored: %+v", got)
	}
}

// states: a destination's state is set (replaced) by name, listed by name, and forgotten; forgetting an
// unknown name is no error.
func (s *suite) states(t *testing.T) {
	e := s.store(t)
	if got, err := e.st.DestinationStates(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	x := store.DestinationState{Name: "x", Enabled: false, Reason: "410 Gone", UpdatedAt: T0}
	y := store.DestinationState{Name: "y", Enabled: true}
	e.clock.Advance(time.Minute)
	for _, st := range []store.DestinationState{y, x} {
		if err := e.st.SetDestinationState(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	y.UpdatedAt = e.clock.Now() // not given: the store's now
	if got, err := e.st.DestinationStates(ctx); err != nil || !reflect.DeepEqual(got, []store.DestinationState{x, y}) {
		t.Fatalf("states: %+v %v, want %+v", got, err, []store.DestinationState{x, y})
	}
	x2 := store.DestinationState{Name: "x", Enabled: true, Reason: "enabled over the API", UpdatedAt: T0.Add(time.Hour)}
	if err := e.st.SetDestinationState(ctx, x2); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteDestinationState(ctx, "unknown"); err != nil {
		t.Fatalf("forgetting an unknown state: %v", err)
	}
	if got, err := e.st.DestinationStates(ctx); err != nil || !reflect.DeepEqual(got, []store.DestinationState{x2, y}) {
		t.Fatalf("states after replace: %+v %v", got, err)
	}
	if err := e.st.SetDestinationState(ctx, store.DestinationState{Enabled: true}); err == nil {
		t.Fatal("a state without a name must be refused")
	}
	if err := e.st.DeleteDestinationState(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.DestinationStates(ctx); len(got) != 1 || got[0].Name != "y" {
		t.Fatalf("after delete: %+v", got)
	}
}

// subscriptions: per-run subscriptions are put (replaced by Name), listed oldest first with expired ones
// (expiry is the caller's to act on), found by correlation id among them, and deleted.
func (s *suite) subscriptions(t *testing.T) {
	e := s.store(t)
	if got, err := e.st.Subscriptions(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	now := e.clock.Now()
	a := store.Subscription{Name: "inline-a", CorrelationID: "run-1", Tenant: "acme", URL: "https://example.com/a",
		Topics: []string{"case.*"}, Secret: "whsec_x", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	b := store.Subscription{Name: "inline-b", CorrelationID: "run-2", URL: "https://example.com/b",
		Topics: []string{"*", "x"}, CreatedAt: now.Add(time.Second), ExpiresAt: now.Add(2 * time.Hour)}
	c := store.Subscription{Name: "inline-c", CorrelationID: "run-2", URL: "https://example.com/c",
		Topics: []string{"y"}, CreatedAt: now.Add(2 * time.Second), ExpiresAt: now.Add(2 * time.Hour)}
	old := store.Subscription{Name: "inline-old", CorrelationID: "run-0", URL: "https://example.com/old",
		Topics: []string{"z"}, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
	for _, sub := range []store.Subscription{c, a, b, old} {
		if err := e.st.PutSubscription(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.st.Subscriptions(ctx)
	if want := []store.Subscription{old, a, b, c}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("oldest first, expired included:\n got %+v\nwant %+v (%v)", got, want, err)
	}
	var run2 []string
	for _, sub := range got {
		if sub.CorrelationID == "run-2" {
			run2 = append(run2, sub.Name)
		}
	}
	if !slices.Equal(run2, []string{"inline-b", "inline-c"}) {
		t.Fatalf("subscriptions of run-2: %v", run2)
	}

	a.ExpiresAt = now.Add(3 * time.Hour) // replace: a refresh moves the expiry
	a.Topics = []string{"case.*", "user.*"}
	if err := e.st.PutSubscription(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"inline-c", "inline-old"} {
		if err := e.st.DeleteSubscription(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.DeleteSubscription(ctx, "unknown"); err != nil {
		t.Fatalf("deleting an unknown subscription: %v", err)
	}
	got, err = e.st.Subscriptions(ctx)
	if want := []store.Subscription{a, b}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("after replace and delete:\n got %+v\nwant %+v (%v)", got, want, err)
	}
}
