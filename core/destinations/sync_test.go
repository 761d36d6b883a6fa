package destinations_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
)

// peerKey is the store key of the nodes in these tests.
var peerKey = bytes.Repeat([]byte{7}, 32)

// nodeA starts the first node of a two-node test: its store and manager over one YAML destination (yaml-a,
// to rc, for case.*). The second node is peer(t, a.st, cfg), or peer over a wrapper of a.st.
func nodeA(t testing.TB) (*stack, *config.Config, *receiver) {
	t.Helper()
	dir := t.TempDir()
	rc := newReceiver(t, 204)
	cfg := conf(t, dir, "1s", 0, "1h", yamlDest("yaml-a", rc.URL, "case.*"))
	return start(t, dir, cfg, peerKey), cfg, rc
}

// peer starts a second node's manager on st (a store another node shares) with cfg.
func peer(t testing.TB, st store.Store, cfg *config.Config) *destinations.Manager {
	t.Helper()
	box, err := seal.New([][]byte{peerKey})
	if err != nil {
		t.Fatal(err)
	}
	disp := dispatch.New(st, dispatch.Options{Poll: 50 * time.Millisecond})
	m := destinations.New(destinations.Options{Store: st, Dispatcher: disp, Lanes: lanes(), Box: box})
	in := intake.New(st, disp, nil, intake.Options{DedupeWindow: time.Hour})
	if err := m.Start(context.Background(), cfg, in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = disp.Shutdown(context.Background()) })
	return m
}

// TestSyncFollowsAnotherNode: a second manager on the same store (as a second node on a shared store) follows,
// through Sync, the destinations the first creates, disables, enables and deletes.
func TestSyncFollowsAnotherNode(t *testing.T) {
	a, cfg, rc := nodeA(t)
	b := peer(t, a.st, cfg)
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

// countingWatcher is a shared store whose change signal the test sends; each Sync it serves (a read of the
// destinations) is reported on synced.
type countingWatcher struct {
	store.Store
	changes chan struct{}
	synced  chan struct{}
}

func (w countingWatcher) Changes(context.Context) <-chan struct{} { return w.changes }

func (w countingWatcher) Destinations(ctx context.Context) ([]store.DestinationRecord, error) {
	w.synced <- struct{}{}
	return w.Store.Destinations(ctx)
}

// TestWatchRestsBetweenSyncs: changes announced while Watch rests after a Sync, however many, are taken by one
// Sync once the rest is over; none is lost, and none runs a Sync of its own.
func TestWatchRestsBetweenSyncs(t *testing.T) {
	a, cfg, rc := nodeA(t)
	w := countingWatcher{Store: a.st, changes: make(chan struct{}, 1), synced: make(chan struct{}, 100)}
	b := peer(t, w, cfg)
	<-w.synced // Start's read
	gap := make(chan time.Time)
	b.SetSyncGap(func(time.Duration) <-chan time.Time { return gap })
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); b.Watch(ctx) }()
	t.Cleanup(func() { cancel(); <-watched })
	guard := time.After(20 * time.Second) // a guard against a hang, not a timed assertion
	step := func(what string, c <-chan struct{}) {
		t.Helper()
		select {
		case <-c:
		case <-guard:
			t.Fatalf("gave up waiting for %s", what)
		}
	}
	rest := func() {
		t.Helper()
		select {
		case gap <- time.Now():
		case <-w.synced:
			t.Fatal("a Sync ran while Watch should have been resting")
		case <-guard:
			t.Fatal("Watch never rested")
		}
	}
	announce := func() {
		select {
		case w.changes <- struct{}{}:
		default: // one is pending already, as the store's hub would leave it
		}
	}
	step("the first Sync", w.synced)

	// A hundred changes while Watch rests, one of them a destination created on a.
	v, err := a.mgr.Create(ctx, []byte(fmt.Sprintf(`{"name": "api-a", "type": "webhook", "topics": ["case.*"], "config": {"url": %q}}`, rc.URL)), "")
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		announce()
	}
	if _, err := b.Get(v.ID, ""); err == nil {
		t.Fatal("b knew of the destination before its Sync")
	}
	rest()
	step("the Sync after the rest", w.synced)
	rest()
	// Nothing is pending now: the next Sync is the next change's.
	announce()
	step("the next change's Sync", w.synced)
	if _, err := b.Get(v.ID, ""); err != nil {
		t.Fatalf("b does not know of the destination created on a: %v", err)
	}
	select {
	case <-w.synced:
		t.Fatal("more Syncs than changes taken")
	default:
	}
}

// TestWatchCatchesUpOnChangesMadeBeforeItSubscribed: a destination another node creates between this node's
// Start and its Watch is running here once Watch has started, though no change signal ever arrives for it.
func TestWatchCatchesUpOnChangesMadeBeforeItSubscribed(t *testing.T) {
	a, cfg, rc := nodeA(t)
	b := peer(t, silentWatcher{a.st}, cfg)

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

// TestSyncBuildsOnlyWhatChanged: Sync builds a destination again only when its stored record changed (or the
// config did), not every destination at every change another node makes; and what changed still takes effect.
func TestSyncBuildsOnlyWhatChanged(t *testing.T) {
	a, cfg, rc := nodeA(t)
	b := peer(t, a.st, cfg)
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		v, err := a.mgr.Create(ctx, []byte(fmt.Sprintf(`{"name": "api-%d", "type": "webhook", "topics": ["case.*"], "config": {"url": %q, "secrets": ["whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"]}}`, i, rc.URL)), "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
	}
	// sync runs b's Sync and reports how many destinations it built.
	sync := func() int64 {
		t.Helper()
		before := b.Built()
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return b.Built() - before
	}
	if n := sync(); n != 5 {
		t.Fatalf("the first sync built %d destinations, want the 5 new ones", n)
	}
	if n := sync(); n != 0 {
		t.Fatalf("a sync with nothing changed built %d destinations", n)
	}

	if _, err := a.mgr.Patch(ctx, ids[1], "", []byte(`{"topics": ["invoice.*"]}`)); err != nil {
		t.Fatal(err)
	}
	if n := sync(); n != 1 {
		t.Fatalf("after one destination was changed, the sync built %d", n)
	}
	if v, err := b.Get(ids[1], ""); err != nil || fmt.Sprint(v.Spec["topics"]) != "[invoice.*]" {
		t.Fatalf("the changed destination on b: %v (%v)", v.Spec["topics"], err)
	}

	if _, _, err := a.mgr.RotateSecret(ctx, ids[2], "", ""); err != nil {
		t.Fatal(err)
	}
	if n := sync(); n != 1 {
		t.Fatalf("after one secret was rotated, the sync built %d", n)
	}
	if v, err := b.Get(ids[2], ""); err != nil || len(v.Retiring) != 1 {
		t.Fatalf("the rotated destination on b retires %d secrets (%v), want 1", len(v.Retiring), err)
	}

	// A state change needs no build.
	if _, err := a.mgr.SetEnabled(ctx, ids[3], "", false, "maintenance"); err != nil {
		t.Fatal(err)
	}
	if n := sync(); n != 0 {
		t.Fatalf("after a destination was disabled, the sync built %d", n)
	}
	if b.Enabled()["api-3"] {
		t.Fatal("disabled on a, still enabled on b")
	}

	// A reload builds every API destination under the new config; the next sync builds each once from the
	// store, and after that nothing.
	next := conf(t, a.dir, "1s", 0, "1h", yamlDest("yaml-b", rc.URL, "case.*"))
	if err := b.Apply(ctx, next); err != nil {
		t.Fatal(err)
	}
	if n := sync(); n != 5 {
		t.Fatalf("the sync after a reload built %d destinations, want all 5", n)
	}
	if n := sync(); n != 0 {
		t.Fatalf("the second sync after a reload built %d destinations", n)
	}
}

// BenchmarkSyncUnchanged: what a change on another node costs this one when it concerns none of its 1,000 API
// destinations (the store's reads and a comparison per destination), on each store.
func BenchmarkSyncUnchanged(b *testing.B) {
	const n = 1000
	create := func(b *testing.B, m *destinations.Manager, url string) {
		ctx := context.Background()
		for i := range n {
			if _, err := m.Create(ctx, []byte(fmt.Sprintf(`{"name": "api-%d", "type": "webhook", "topics": ["case.*"], "config": {"url": %q, "secrets": ["whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"]}}`, i, url)), ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	loop := func(b *testing.B, m *destinations.Manager) {
		ctx := context.Background()
		if err := m.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		if got := len(m.List("")); got < n {
			b.Fatalf("the peer has %d destinations, want %d", got, n)
		}
		for b.Loop() {
			if err := m.Sync(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("embedded", func(b *testing.B) {
		a, cfg, rc := nodeA(b)
		create(b, a.mgr, rc.URL)
		loop(b, peer(b, a.st, cfg))
	})
	b.Run("postgres", func(b *testing.B) {
		dsn, schema := pgSchema(b)
		rc := newReceiver(b, 204)
		a := startPGNode(b, dsn, schema, b.TempDir(), nil)
		create(b, a.mgr, rc.URL)
		loop(b, startPGNode(b, dsn, schema, b.TempDir(), nil).mgr)
	})
	// The same with 1,000 per-run subscriptions beside the destinations (each run's first event registers one).
	b.Run("postgres+runs", func(b *testing.B) {
		dsn, schema := pgSchema(b)
		rc := newReceiver(b, 204)
		a := startPGNode(b, dsn, schema, b.TempDir(), nil)
		create(b, a.mgr, rc.URL)
		for i := range n {
			// A topic none of the destinations takes: each event reaches only its run's subscription.
			body := fmt.Sprintf(`{"topic":"run.started","correlation_id":"run-%d","data":{},"subscriptions":[{"url":%q,"topics":["run.*"],"secret":%q}]}`,
				i, rc.URL+"/run", secretA)
			if _, err := publishJSON(&stack{in: a.in}, body); err != nil {
				b.Fatal(err)
			}
		}
		p := startPGNode(b, dsn, schema, b.TempDir(), nil)
		if got := len(p.mgr.Subscriptions().Match(&event.Event{CorrelationID: "run-7", Topic: "run.ended"})); got != 1 {
			b.Fatalf("the peer routes run-7 to %d subscriptions, want 1", got)
		}
		loop(b, p.mgr)
	})
}
