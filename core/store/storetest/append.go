package storetest

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// sameEvent fails unless got carries every stored field of want (Body and OrderingKey are never stored).
func sameEvent(t *testing.T, got, want event.Event) {
	t.Helper()
	want.Body, want.OrderingKey = nil, ""
	got.OrderingKey = ""
	if !got.Time.Equal(want.Time) {
		t.Fatalf("event %s: time %v, want %v", want.ID, got.Time, want.Time)
	}
	got.Time = want.Time
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("event read back:\n got %+v\nwant %+v", got, want)
	}
}

// appendRead: Append answers the delivery rows it made, stamped by the store's clock, and Event reads the
// event back byte for byte with them.
func (s *suite) appendRead(t *testing.T) {
	e := s.store(t)
	e1 := newEvent("e1")
	e1.Data = json.RawMessage(`{"case": {"id":"c-1"},  "n": 1.50}`)            // kept byte for byte, not normalised
	e1.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" // forwarded to receivers later
	e2 := newEvent("e2")
	e2.Tenant, e2.CorrelationID, e2.Metadata, e2.Scope = "", "", nil, nil
	e3 := newEvent("e3")
	now := e.clock.Now()
	res := e.appendOpts([]store.NewEvent{
		{Event: e1, Destinations: []string{"a", "b"}, Leased: []bool{true, false}, OrderingKeys: []string{"k1", ""}},
		{Event: e2},
		{Event: e3, Destinations: []string{"a"}, Test: true},
	}, store.AppendOptions{DedupeWindow: time.Hour, Lease: 5 * time.Minute})

	want := []store.Delivery{
		{EventID: "e1", Destination: "a", Status: store.Pending, NextAt: now.Add(5 * time.Minute), CreatedAt: now, UpdatedAt: now, OrderingKey: "k1"},
		{EventID: "e1", Destination: "b", Status: store.Pending, NextAt: now, CreatedAt: now, UpdatedAt: now},
	}
	if res[0].Duplicate || len(res[0].Deliveries) != 2 {
		t.Fatalf("first append: %+v", res[0])
	}
	for i, d := range res[0].Deliveries {
		want[i].ID = d.ID
		if d.ID <= 0 || !reflect.DeepEqual(d, want[i]) {
			t.Fatalf("delivery %d answered by Append:\n got %+v\nwant %+v", i, d, want[i])
		}
	}
	if res[1].Duplicate || len(res[1].Deliveries) != 0 {
		t.Fatalf("an event without destinations: %+v", res[1])
	}
	if len(res[2].Deliveries) != 1 || !res[2].Deliveries[0].Test {
		t.Fatalf("Append does not answer Test: %+v", res[2])
	}
	// Delivery ids grow in the order the rows were made: the lists' cursors rely on it.
	if a, b, c := res[0].Deliveries[0].ID, res[0].Deliveries[1].ID, res[2].Deliveries[0].ID; !(a < b && b < c) {
		t.Fatalf("delivery ids %d, %d, %d do not grow in append order", a, b, c)
	}

	rec := e.event("e1")
	sameEvent(t, rec.Event, e1)
	sameTime(t, "ReceivedAt", rec.ReceivedAt, now)
	if len(rec.Deliveries) != 2 {
		t.Fatalf("Event e1 has %d deliveries, want 2", len(rec.Deliveries))
	}
	for i, d := range rec.Deliveries {
		if !reflect.DeepEqual(d.Delivery, want[i]) || len(d.AttemptLog) != 0 {
			t.Fatalf("Event e1 delivery %d:\n got %+v\nwant %+v", i, d, want[i])
		}
	}
	rec = e.event("e2")
	sameEvent(t, rec.Event, e2)
	if len(rec.Deliveries) != 0 {
		t.Fatalf("Event e2 has deliveries %+v", rec.Deliveries)
	}
	if rec := e.event("e3"); len(rec.Deliveries) != 1 || !rec.Deliveries[0].Test {
		t.Fatalf("Event does not surface Test: %+v", rec.Deliveries)
	}
	if d := e.delivery(want[0].ID); !reflect.DeepEqual(d.Delivery, want[0]) {
		t.Fatalf("Delivery:\n got %+v\nwant %+v", d.Delivery, want[0])
	}
	if _, err := e.st.Event(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Event of an unknown id: %v, want ErrNotFound", err)
	}
}

// dedupe: an id seen within the window is stored once and answered Duplicate with the first delivery rows;
// outside it, the event is refused alone with ErrIDReused.
func (s *suite) dedupe(t *testing.T) {
	e := s.store(t)
	received := e.clock.Now()
	first := e.append(to([]string{"a", "b"}, "e1"))

	e.clock.Advance(30 * time.Minute)
	again := e.append(to([]string{"c"}, "e1"))
	if !again[0].Duplicate || !reflect.DeepEqual(again[0].Deliveries, first[0].Deliveries) {
		t.Fatalf("a duplicate must answer the original's deliveries:\n got %+v\nwant %+v", again[0], first[0].Deliveries)
	}
	if all := e.walkDeliveries(store.DeliveryFilter{}); len(all) != 2 {
		t.Fatalf("a duplicate made delivery rows: %d stored, want 2", len(all))
	}
	sameTime(t, "ReceivedAt of a duplicated event", e.event("e1").ReceivedAt, received)

	// The same id twice in one call: the second is the first's duplicate.
	twice := e.append(to([]string{"a"}, "x", "x"))
	if twice[0].Duplicate || !twice[1].Duplicate || !reflect.DeepEqual(twice[0].Deliveries, twice[1].Deliveries) {
		t.Fatalf("the same id twice in one call: %+v", twice)
	}

	// The window includes its end.
	e.clock.Advance(30 * time.Minute)
	if r := e.append(to(nil, "e1")); !r[0].Duplicate {
		t.Fatalf("exactly DedupeWindow after: %+v, want a duplicate", r[0])
	}

	e.clock.Advance(time.Microsecond)
	res, err := e.st.Append(ctx, to([]string{"a"}, "e1", "e2"), opts)
	if err != nil {
		t.Fatalf("Append: %v (a reused id is refused in its result, not for the whole call)", err)
	}
	if !errors.Is(res[0].Err, store.ErrIDReused) || res[0].Duplicate || len(res[0].Deliveries) != 0 {
		t.Fatalf("reuse outside the window: %+v, want Err ErrIDReused", res[0])
	}
	if res[1].Err != nil || res[1].Duplicate || len(res[1].Deliveries) != 1 {
		t.Fatalf("the other event of the call must be stored: %+v", res[1])
	}
	if rec := e.event("e1"); len(rec.Deliveries) != 2 || !rec.ReceivedAt.Equal(received) {
		t.Fatalf("a refused reuse changed the stored event: %+v", rec)
	}
	// A zero window remembers nothing past the instant.
	e.clock.Advance(time.Second)
	if r, _ := e.st.Append(ctx, to(nil, "e2"), store.AppendOptions{}); !errors.Is(r[0].Err, store.ErrIDReused) {
		t.Fatalf("zero window: %+v, want ErrIDReused", r[0])
	}
}

// tenantIDs: event ids are per tenant. The same id from two tenants is two events, each with its own
// deliveries, neither a duplicate of the other; within one tenant it is a duplicate as always. TenantEvent
// reads one tenant's; Event reads the first appended; a delivery list by event id finds all, and one tenant's
// list (its destinations) only its own.
func (s *suite) tenantIDs(t *testing.T) {
	e := s.store(t)
	ofTenant := func(tenant, dest string) store.NewEvent {
		ev := newEvent("shared")
		ev.Tenant = tenant
		ev.Data = []byte(`{"tenant":"` + tenant + `"}`)
		return store.NewEvent{Event: ev, Destinations: []string{dest}}
	}
	a := e.append([]store.NewEvent{ofTenant("acme", "dst-a")})
	b := e.append([]store.NewEvent{ofTenant("globex", "dst-b"), ofTenant("", "dst-c")})
	for i, r := range append(a, b...) {
		if r.Duplicate || r.Err != nil || len(r.Deliveries) != 1 {
			t.Fatalf("event %d: the same id from another tenant must be a new event: %+v", i, r)
		}
	}
	if b[0].Deliveries[0].Destination != "dst-b" {
		t.Fatalf("globex's event got %+v, want its own delivery to dst-b", b[0].Deliveries)
	}
	again := e.append([]store.NewEvent{ofTenant("globex", "dst-x")})
	if !again[0].Duplicate || again[0].Deliveries[0].ID != b[0].Deliveries[0].ID {
		t.Fatalf("the same (tenant, id) again: %+v, want globex's first as a duplicate", again[0])
	}
	for _, tenant := range []string{"acme", "globex", ""} {
		rec, err := e.st.TenantEvent(ctx, tenant, "shared")
		if err != nil {
			t.Fatalf("TenantEvent(%q): %v", tenant, err)
		}
		if rec.Event.Tenant != tenant || string(rec.Event.Data) != `{"tenant":"`+tenant+`"}` || len(rec.Deliveries) != 1 {
			t.Fatalf("TenantEvent(%q) = %+v", tenant, rec)
		}
	}
	if _, err := e.st.TenantEvent(ctx, "initech", "shared"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TenantEvent of a tenant without that id: %v, want ErrNotFound", err)
	}
	if rec := e.event("shared"); rec.Event.Tenant != "acme" {
		t.Fatalf("Event of a shared id = tenant %q, want the first appended (acme)", rec.Event.Tenant)
	}
	if got := e.walkDeliveries(store.DeliveryFilter{EventID: "shared"}); len(got) != 3 {
		t.Fatalf("deliveries of event id shared: %d, want 3 (one per tenant)", len(got))
	}
	// A tenant's list (its destinations only) asked for an id another tenant also used sees its own delivery.
	if got := e.walkDeliveries(store.DeliveryFilter{EventID: "shared", Destinations: []string{"dst-b"}}); len(got) != 1 ||
		got[0].ID != b[0].Deliveries[0].ID {
		t.Fatalf("globex's deliveries of event id shared: %+v, want its own one (%d)", got, b[0].Deliveries[0].ID)
	}
}

// bornSkipped: a delivery NewEvent.Skipped names is stored skipped with the reason, is never claimed, counts
// as nothing pending, holds no ordering key back, and a replay sends it like any skipped one.
func (s *suite) bornSkipped(t *testing.T) {
	e := s.store(t)
	ne := store.NewEvent{Event: newEvent("off"), Destinations: []string{"on", "off"}, Skipped: []string{"", "destination disabled"},
		OrderingKeys: []string{"k", "k"}}
	res := e.append([]store.NewEvent{ne})
	on, off := res[0].Deliveries[0], res[0].Deliveries[1]
	if on.Status != store.Pending || off.Status != store.Skipped || off.LastError != "destination disabled" {
		t.Fatalf("deliveries: %+v, want pending and skipped (destination disabled)", res[0].Deliveries)
	}
	if rec := e.event("off"); rec.Deliveries[1].Status != store.Skipped || rec.Deliveries[1].LastError != "destination disabled" {
		t.Fatalf("stored: %+v", rec.Deliveries[1])
	}
	if jobs, err := e.st.Claim(ctx, "off", e.clock.Now().Add(time.Hour), time.Minute, 10); err != nil || len(jobs) != 0 {
		t.Fatalf("Claim of a born-skipped delivery: %+v %v", jobs, err)
	}
	if counts, err := e.st.PendingCounts(ctx); err != nil || counts["off"] != 0 {
		t.Fatalf("PendingCounts: %v %v", counts, err)
	}
	// A later event of the same key to the same destination is not held back by the skipped one.
	e.append([]store.NewEvent{{Event: newEvent("next"), Destinations: []string{"off"}, OrderingKeys: []string{"k"}}})
	if jobs, err := e.st.Claim(ctx, "off", e.clock.Now().Add(time.Hour), time.Minute, 10); err != nil || len(jobs) != 1 || jobs[0].Event.ID != "next" {
		t.Fatalf("Claim after a skipped delivery of the same key: %+v %v", jobs, err)
	}
	if n, err := e.st.Replay(ctx, store.ReplayFilter{Destination: "off", Statuses: []store.Status{store.Skipped}}, e.clock.Now()); err != nil || n != 1 {
		t.Fatalf("Replay of the born-skipped delivery: %d %v", n, err)
	}
}

// durable: what was appended, completed and configured is there after Close and a fresh open; leases too,
// until ReleaseLeases.
func (s *suite) durable(t *testing.T) {
	if s.f.NoReopen {
		s.skip(t, CaseDurable, "no data survives Close")
	}
	e := s.store(t)
	if e.reopen == nil {
		s.skip(t, CaseDurable, "Target.Reopen is nil")
	}
	now := e.clock.Now()
	res := e.append([]store.NewEvent{
		{Event: newEvent("leased"), Destinations: []string{"d"}, Leased: []bool{true}},
		{Event: newEvent("tried"), Destinations: []string{"d"}},
	})
	jobs := e.claim("d", now, time.Minute, 10)
	if len(jobs) != 1 || jobs[0].Event.ID != "tried" {
		t.Fatalf("claim: %v", eventIDs(jobs))
	}
	e.complete(store.Outcome{DeliveryID: jobs[0].Delivery.ID, Status: store.Pending, NextAt: now.Add(time.Hour),
		Attempt: store.Attempt{N: 1, At: now, Duration: 3 * time.Millisecond, StatusCode: 503, Error: "http 503", Response: []byte("busy")}})
	sub := store.Subscription{Name: "inline-a", CorrelationID: "run-1", Tenant: "acme", URL: "https://example.com/a",
		Topics: []string{"case.*"}, Secret: "whsec_x", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	dst := store.DestinationRecord{ID: "dst_a", Name: "alpha", Tenant: "acme", Type: "webhook", Spec: []byte(`{"url":"x"}`),
		Retiring: []store.RetiringSecret{{Secret: "sealed:1", Until: now.Add(time.Hour)}}, CreatedAt: now, UpdatedAt: now}
	state := store.DestinationState{Name: "alpha", Enabled: false, Reason: "410 Gone", UpdatedAt: now}
	if err := e.st.PutSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if err := e.st.PutDestination(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetDestinationState(ctx, state); err != nil {
		t.Fatal(err)
	}
	tried := e.delivery(res[1].Deliveries[0].ID)

	e.restart()

	sameEvent(t, e.event("leased").Event, newEvent("leased"))
	if got := e.delivery(tried.ID); !reflect.DeepEqual(got, tried) {
		t.Fatalf("delivery after reopen:\n got %+v\nwant %+v", got, tried)
	}
	if got, err := e.st.Subscriptions(ctx); err != nil || !reflect.DeepEqual(got, []store.Subscription{sub}) {
		t.Fatalf("subscriptions after reopen: %+v %v", got, err)
	}
	if got, err := e.st.Destinations(ctx); err != nil || !reflect.DeepEqual(got, []store.DestinationRecord{dst}) {
		t.Fatalf("destinations after reopen: %+v %v", got, err)
	}
	if got, err := e.st.DestinationStates(ctx); err != nil || !reflect.DeepEqual(got, []store.DestinationState{state}) {
		t.Fatalf("destination states after reopen: %+v %v", got, err)
	}
	// The lease taken at birth outlived the restart; a crashed node's leases are released at startup.
	if jobs := e.claim("d", now, time.Minute, 10); len(jobs) != 0 {
		t.Fatalf("claimed %v while still leased", eventIDs(jobs))
	}
	if err := e.st.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if jobs := e.claim("d", now, time.Minute, 10); len(jobs) != 1 || jobs[0].Event.ID != "leased" {
		t.Fatalf("after ReleaseLeases claimed %v, want [leased]", eventIDs(jobs))
	}
	// Dedupe remembers across the restart, and new rows continue after the old ones.
	if r := e.append(to([]string{"d"}, "leased", "new")); !r[0].Duplicate || r[1].Deliveries[0].ID <= tried.ID {
		t.Fatalf("append after reopen: %+v", r)
	}
}
