package embedded

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// TestSubscriptionsSurviveReopen stores, replaces and deletes subscriptions and reads them back after the
// store is closed and opened again.
func TestSubscriptionsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	a := store.Subscription{Name: "inline-a", CorrelationID: "run-1", Tenant: "acme", URL: "https://example.com/a",
		Topics: []string{"case.*"}, Secret: "whsec_x", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	b := store.Subscription{Name: "inline-b", CorrelationID: "run-2", URL: "https://example.com/b",
		Topics: []string{"*", "x"}, CreatedAt: now.Add(time.Second), ExpiresAt: now.Add(2 * time.Hour)}
	c := store.Subscription{Name: "inline-c", CorrelationID: "run-2", URL: "https://example.com/c",
		Topics: []string{"y"}, CreatedAt: now.Add(2 * time.Second), ExpiresAt: now.Add(2 * time.Hour)}
	for _, sub := range []store.Subscription{a, b, c} {
		if err := s.PutSubscription(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	a.ExpiresAt = now.Add(3 * time.Hour) // replace: a refresh moves the expiry
	if err := s.PutSubscription(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubscription(ctx, "inline-c"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubscription(ctx, "unknown"); err != nil {
		t.Fatalf("deleting an unknown subscription: %v", err)
	}
	s.Close()

	s = open(t, dir)
	got, err := s.Subscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []store.Subscription{a, b}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, want)
	}
}
