package destinations_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
)

// TestSyncFollowsAnotherNode: a second manager on the same store (as a second node on a shared store) follows,
// through Sync, the destinations the first creates, disables, enables and deletes.
func TestSyncFollowsAnotherNode(t *testing.T) {
	dir := t.TempDir()
	rc := newReceiver(t, 204)
	cfg := conf(t, dir, "1s", 0, "1h", yamlDest("yaml-a", rc.URL, "case.*"))
	a := start(t, dir, cfg, bytes.Repeat([]byte{7}, 32))
	box, err := seal.New([][]byte{bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	disp := dispatch.New(a.st, dispatch.Options{Poll: 50 * time.Millisecond})
	b := destinations.New(destinations.Options{Store: a.st, Dispatcher: disp, Lanes: lanes(), Box: box})
	in := intake.New(a.st, disp, nil, intake.Options{DedupeWindow: time.Hour})
	if err := b.Start(context.Background(), cfg, in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = disp.Shutdown(context.Background()) })
	ctx := context.Background()

	v, err := a.mgr.Create(ctx, []byte(fmt.Sprintf(`{"name": "api-a", "type": "webhook", "topics": ["case.*"], "config": {"url": %q}}`, rc.URL)), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(v.ID, ""); err == nil {
		t.Fatal("b knew of the destination before syncing")
	}
	sync := func() {
		t.Helper()
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	if got, err := b.Get(v.ID, ""); err != nil || got.Name != "api-a" || !b.Enabled()["api-a"] {
		t.Fatalf("after sync b has %+v (%v), enabled %v", got, err, b.Enabled())
	}
	if _, err := a.mgr.SetEnabled(ctx, "yaml-a", "", false, "maintenance"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.mgr.SetEnabled(ctx, v.ID, "", false, "maintenance"); err != nil {
		t.Fatal(err)
	}
	sync()
	if en := b.Enabled(); en["yaml-a"] || en["api-a"] {
		t.Fatalf("disabled on a, still enabled on b: %v", en)
	}
	if _, err := a.mgr.SetEnabled(ctx, "yaml-a", "", true, ""); err != nil {
		t.Fatal(err)
	}
	sync()
	if !b.Enabled()["yaml-a"] {
		t.Fatalf("enabled again on a, disabled on b: %v", b.Enabled())
	}
	if err := a.mgr.Delete(ctx, v.ID, ""); err != nil {
		t.Fatal(err)
	}
	sync()
	if _, err := b.Get(v.ID, ""); err == nil {
		t.Fatal("deleted on a, still on b")
	}
}

// silentWatcher is a shared store whose change signal never fires: what Watch sees of a change another node
// announced before Watch subscribed.
type silentWatcher struct{ store.Store }

func (silentWatcher) Changes(context.Context) <-chan struct{} { return make(chan struct{}) }

// TestWatchCatchesUpOnChangesMadeBeforeItSubscribed: a destination another node creates between this node's
// Start and its Watch is running here once Watch has started, though no change signal ever arrives for it.
func TestWatchCatchesUpOnChangesMadeBeforeItSubscribed(t *testing.T) {
	dir := t.TempDir()
	rc := newReceiver(t, 204)
	cfg := conf(t, dir, "1s", 0, "1h", yamlDest("yaml-a", rc.URL, "case.*"))
	key := bytes.Repeat([]byte{7}, 32)
	a := start(t, dir, cfg, key)
	box, err := seal.New([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	disp := dispatch.New(a.st, dispatch.Options{Poll: 50 * time.Millisecond})
	b := destinations.New(destinations.Options{Store: silentWatcher{a.st}, Dispatcher: disp, Lanes: lanes(), Box: box})
	in := intake.New(a.st, disp, nil, intake.Options{DedupeWindow: time.Hour})
	if err := b.Start(context.Background(), cfg, in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = disp.Shutdown(context.Background()) })

	v, err := a.mgr.Create(context.Background(), []byte(fmt.Sprintf(`{"name": "api-a", "type": "webhook", "topics": ["case.*"], "config": {"url": %q}}`, rc.URL)), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); b.Watch(ctx) }()
	t.Cleanup(func() { cancel(); <-watched })

	deadline := time.Now().Add(10 * time.Second)
	for {
		if got, err := b.Get(v.ID, ""); err == nil && got.Name == "api-a" && b.Enabled()["api-a"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("10 s after Watch started, the destination created before it is still unknown here")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
