package embedded

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/core/store"
)

// TestUpgradeKeysDeliveriesByDestinationID: a database the previous version wrote, whose deliveries and
// states name API destinations by name, comes up with them keyed by the destination's id; rows of a name no
// longer known stay where they were, out of reach of any API destination.
func TestUpgradeKeysDeliveriesByDestinationID(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// What the previous version stored: rows keyed by names.
	if err := s.PutDestination(ctx, store.DestinationRecord{ID: "dst_1", Name: "hook", Type: "webhook", Spec: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("e-1"), Destinations: []string{"hook", "gone"}}}, opts)
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if err := s.SetDestinationState(ctx, store.DestinationState{Name: "hook", Enabled: false, Reason: "paused"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = open(t, dir)
	byID, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"dst_1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(byID) != 1 || byID[0].Destination != "dst_1" {
		t.Fatalf("deliveries of dst_1 after upgrade: %+v, want the one that was keyed by its name", byID)
	}
	byName, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"hook"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(byName) != 0 {
		t.Fatalf("deliveries still keyed by the name hook: %+v", byName)
	}
	gone, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"gone"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 {
		t.Fatalf("the delivery of an unknown name moved: %+v", gone)
	}
	states, err := s.DestinationStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || states[0].Name != "dst_1" || states[0].Reason != "paused" {
		t.Fatalf("states after upgrade: %+v, want hook's state under dst_1", states)
	}
	// Names became unique per tenant.
	if err := s.PutDestination(ctx, store.DestinationRecord{ID: "dst_2", Name: "hook", Tenant: "acme", Type: "webhook", Spec: []byte(`{}`)}); err != nil {
		t.Fatalf("acme's hook beside the tenant-less hook after upgrade: %v", err)
	}
	// A second open changes nothing more (the version is recorded).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	if again, _ := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"dst_1"}}); len(again) != 1 {
		t.Fatalf("after a second open: %+v", again)
	}
}
