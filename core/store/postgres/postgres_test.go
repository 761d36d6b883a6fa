package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// testDSN returns SLUICE_TEST_PG_DSN or skips the test.
func testDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("SLUICE_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("SLUICE_TEST_PG_DSN is not set (source .ci/services/postgres.sh to run the PostgreSQL store tests)")
	}
	return dsn
}

// testSchema makes a schema for this test alone and drops it when the test ends.
func testSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = testDSN(t)
	schema = fmt.Sprintf("sluice_test_%s", strings.ToLower(randomID()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return dsn, schema
}

// openNode opens a store on schema, closed when the test ends.
func openNode(t testing.TB, dsn, schema string, tune func(*Options)) *Store {
	t.Helper()
	opts := Options{DSN: dsn, Schema: schema, MaxConns: 8, Logger: slog.New(slog.DiscardHandler)}
	if tune != nil {
		tune(&opts)
	}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB) *Store {
	dsn, schema := testSchema(t)
	return openNode(t, dsn, schema, nil)
}

func ev(id, tenant string) store.NewEvent {
	return store.NewEvent{Event: event.Event{ID: id, Topic: "case.updated", Tenant: tenant, Time: time.Now(),
		Data: []byte(`{"n":1}`), Metadata: map[string]string{"k": "v"}}, Destinations: []string{"a", "b"}}
}

var appendOpts = store.AppendOptions{DedupeWindow: time.Hour, Lease: time.Hour}

// delivered is an outcome for every delivery of res: delivered at the first attempt.
func delivered(res []store.AppendResult) []store.Outcome {
	var outs []store.Outcome
	for _, r := range res {
		for _, d := range r.Deliveries {
			outs = append(outs, store.Outcome{DeliveryID: d.ID, Status: store.Delivered,
				Attempt: store.Attempt{N: 1, At: time.Now(), StatusCode: 200}})
		}
	}
	return outs
}

// waitFor polls cond until it holds, failing after a generous deadline (a guard, not a timed assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAppendDedupePerTenant(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	res, err := s.Append(ctx, []store.NewEvent{ev("e1", ""), ev("e1", "acme"), ev("e1", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate {
		t.Fatalf("duplicates = %v %v %v, want false false true (ids dedupe per tenant)", res[0].Duplicate, res[1].Duplicate, res[2].Duplicate)
	}
	if len(res[0].Deliveries) != 2 || len(res[2].Deliveries) != 2 || res[2].Deliveries[0].ID != res[0].Deliveries[0].ID {
		t.Fatalf("a duplicate answers the first event's deliveries: %+v vs %+v", res[2].Deliveries, res[0].Deliveries)
	}
	again, err := s.Append(ctx, []store.NewEvent{ev("e1", "acme")}, appendOpts)
	if err != nil || !again[0].Duplicate || again[0].Deliveries[1].ID != res[1].Deliveries[1].ID {
		t.Fatalf("second append of acme/e1 = %+v, %v; want a duplicate", again, err)
	}
	late, err := s.Append(ctx, []store.NewEvent{ev("e1", "")}, store.AppendOptions{DedupeWindow: -time.Second})
	if err != nil || !errors.Is(late[0].Err, store.ErrIDReused) {
		t.Fatalf("append outside the window = %+v, %v; want ErrIDReused", late, err)
	}
	if rec, err := s.TenantEvent(ctx, "acme", "e1"); err != nil || rec.Event.Tenant != "acme" {
		t.Fatalf("acme's e1 = %+v, %v", rec, err)
	}
	if rec, err := s.TenantEvent(ctx, "", "e1"); err != nil || rec.Event.Tenant != "" {
		t.Fatalf("tenant-less e1 = %+v, %v", rec, err)
	}
	if _, err := s.TenantEvent(ctx, "other", "e1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another tenant's e1: %v, want ErrNotFound", err)
	}
	rec, err := s.Event(ctx, "e1")
	if err != nil || len(rec.Deliveries) != 2 || rec.Event.Metadata["k"] != "v" || string(rec.Event.Data) != `{"n":1}` {
		t.Fatalf("event = %+v, %v", rec, err)
	}
	if _, err := s.Event(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown event: %v, want ErrNotFound", err)
	}
}

func TestClaimCompleteAttempts(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, []store.NewEvent{ev("e1", ""), ev("e2", "")}, appendOpts); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	jobs, err := s.Claim(ctx, "a", now, time.Minute, 10)
	if err != nil || len(jobs) != 2 || jobs[0].Event.ID != "e1" || jobs[1].Event.ID != "e2" {
		t.Fatalf("claim = %+v, %v; want e1, e2", jobs, err)
	}
	if again, _ := s.Claim(ctx, "a", now, time.Minute, 10); len(again) != 0 {
		t.Fatalf("leased deliveries were claimed again: %+v", again)
	}
	if _, ok, _ := s.NextDue(ctx, "a"); ok {
		t.Fatal("NextDue counts leased deliveries")
	}
	if _, err := s.Retry(ctx, jobs[0].Delivery.ID, now); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("retry of a leased delivery: %v, want ErrConflict", err)
	}
	next := now.Add(time.Hour)
	err = s.Complete(ctx, []store.Outcome{
		{DeliveryID: jobs[0].Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: now, StatusCode: 200, Duration: time.Millisecond}},
		{DeliveryID: jobs[1].Delivery.ID, Status: store.Pending, NextAt: next, Attempt: store.Attempt{N: 1, At: now, StatusCode: 503, Error: "busy"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Delivery(ctx, jobs[1].Delivery.ID)
	if err != nil || d.Status != store.Pending || d.Attempts != 1 || len(d.AttemptLog) != 1 || d.AttemptLog[0].StatusCode != 503 || d.LastError != "busy" {
		t.Fatalf("delivery = %+v, %v", d, err)
	}
	if due, ok, _ := s.NextDue(ctx, "a"); !ok || !due.Equal(next.UTC().Truncate(0)) && due.UnixNano() != next.UnixNano() {
		t.Fatalf("next due = %v %v, want %v", due, ok, next)
	}
	// Completing a delivered delivery again leaves it as it is.
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: jobs[0].Delivery.ID, Status: store.Failed, Attempt: store.Attempt{N: 2}}}); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Delivery(ctx, jobs[0].Delivery.ID); d.Status != store.Delivered || len(d.AttemptLog) != 1 {
		t.Fatalf("a final delivery changed: %+v", d)
	}
	r, err := s.Retry(ctx, jobs[0].Delivery.ID, now)
	if err != nil || r.Status != store.Pending || r.RetryBase != 1 {
		t.Fatalf("retry = %+v, %v", r, err)
	}
	counts, err := s.PendingCounts(ctx)
	if err != nil || counts["a"] != 2 || counts["b"] != 2 {
		t.Fatalf("pending counts = %v, %v", counts, err)
	}
	n, err := s.SkipPending(ctx, "b", "disabled")
	if err != nil || n != 2 {
		t.Fatalf("skip pending = %d, %v", n, err)
	}
	if n, err := s.Replay(ctx, store.ReplayFilter{Destination: "b"}, now); err != nil || n != 2 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	list, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"b"}, Status: store.Pending})
	if err != nil || len(list) != 2 || list[0].ID < list[1].ID || list[0].RetryBase != 0 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{Limit: 1})
	if err != nil || len(evs) != 1 || evs[0].Event.ID != "e2" {
		t.Fatalf("list events = %+v, %v", evs, err)
	}
	if more, _ := s.ListEvents(ctx, store.EventFilter{Before: evs[0].Seq}); len(more) != 1 || more[0].Event.ID != "e1" {
		t.Fatalf("next page = %+v", more)
	}
}

func TestPruneKeepsPending(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	res, err := s.Append(ctx, []store.NewEvent{ev("old-done", ""), ev("old-pending", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	var outs []store.Outcome
	for _, d := range res[0].Deliveries {
		outs = append(outs, store.Outcome{DeliveryID: d.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: time.Now()}})
	}
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(ctx, time.Now().Add(time.Minute), 10)
	if err != nil || n != 1 {
		t.Fatalf("prune = %d, %v; want 1", n, err)
	}
	if _, err := s.Event(ctx, "old-done"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("pruned event still there: %v", err)
	}
	if _, err := s.Event(ctx, "old-pending"); err != nil {
		t.Fatalf("event with pending deliveries pruned: %v", err)
	}
}

func TestDestinationsStatesSubscriptions(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	d := store.DestinationRecord{ID: "d1", Name: "one", Type: "webhook", Spec: []byte(`{}`),
		Retiring: []store.RetiringSecret{{Secret: "s", Until: time.Unix(100, 0).UTC()}}}
	if err := s.PutDestination(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDestination(ctx, store.DestinationRecord{ID: "d2", Name: "one", Type: "webhook"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("name reuse: %v, want ErrConflict", err)
	}
	ds, err := s.Destinations(ctx)
	if err != nil || len(ds) != 1 || ds[0].Retiring[0].Secret != "s" {
		t.Fatalf("destinations = %+v, %v", ds, err)
	}
	if err := s.DeleteDestination(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDestination(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	if err := s.SetDestinationState(ctx, store.DestinationState{Name: "one", Enabled: false, Reason: "410"}); err != nil {
		t.Fatal(err)
	}
	if sts, _ := s.DestinationStates(ctx); len(sts) != 1 || sts[0].Enabled || sts[0].Reason != "410" {
		t.Fatalf("states = %+v", sts)
	}
	sub := store.Subscription{Name: "run-1", CorrelationID: "c", URL: "http://x", Topics: []string{"a.*"},
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.PutSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if subs, _ := s.Subscriptions(ctx); len(subs) != 1 || subs[0].Topics[0] != "a.*" {
		t.Fatalf("subscriptions = %+v", subs)
	}
	if err := s.DeleteSubscription(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// Nodes starting together apply each migration once, under the advisory lock.
func TestConcurrentOpen(t *testing.T) {
	dsn, schema := testSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), Options{DSN: dsn, Schema: schema, MaxConns: 4})
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent open: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{schema, "sluice_migrations"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(Migrations()) {
		t.Fatalf("%d migrations recorded, want %d", n, len(Migrations()))
	}
	todo, err := Migrate(context.Background(), Options{DSN: dsn, Schema: schema}, true)
	if err != nil || len(todo) != 0 {
		t.Fatalf("dry run after open = %v, %v; want nothing to apply", todo, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, nil)
	if _, err := s.pool.Exec(context.Background(), `INSERT INTO sluice_migrations (version, name) VALUES (9999, '9999_future')`); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Options{DSN: dsn, Schema: schema})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("open against a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

func TestUnreachable(t *testing.T) {
	_, err := Open(context.Background(), Options{DSN: "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("open against a closed port: %v, want ErrUnavailable", err)
	}
}

// A node whose lease ran out cannot complete a delivery another node has claimed since.
func TestStaleNodeCannotComplete(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, nil)
	b := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	if _, err := a.Append(ctx, []store.NewEvent{ev("e1", "")}, appendOpts); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ja, err := a.Claim(ctx, "a", now, time.Minute, 10)
	if err != nil || len(ja) != 1 {
		t.Fatalf("a claims: %+v, %v", ja, err)
	}
	if jb, _ := b.Claim(ctx, "a", now, time.Minute, 10); len(jb) != 0 {
		t.Fatalf("b claimed a live lease: %+v", jb)
	}
	// Later than a's lease (a stopped renewing: it is stale), b takes the delivery over.
	later := now.Add(2 * DefaultLeaseTTL)
	jb, err := b.Claim(ctx, "a", later, time.Minute, 10)
	if err != nil || len(jb) != 1 || jb[0].Delivery.ID != ja[0].Delivery.ID {
		t.Fatalf("b claims the expired lease: %+v, %v", jb, err)
	}
	id := ja[0].Delivery.ID
	if err := a.Complete(ctx, []store.Outcome{{DeliveryID: id, Status: store.Failed, Attempt: store.Attempt{N: 1, Error: "stale"}}}); err != nil {
		t.Fatal(err)
	}
	if d, _ := b.Delivery(ctx, id); d.Status != store.Pending || len(d.AttemptLog) != 0 {
		t.Fatalf("the stale node completed b's claim: %+v", d)
	}
	if err := b.Complete(ctx, []store.Outcome{{DeliveryID: id, Status: store.Delivered, Attempt: store.Attempt{N: 1}}}); err != nil {
		t.Fatal(err)
	}
	if d, _ := a.Delivery(ctx, id); d.Status != store.Delivered || len(d.AttemptLog) != 1 {
		t.Fatalf("b's completion: %+v", d)
	}
}

// Leases this node holds are renewed while it lives, up to the lease asked for.
func TestLeaseRenewed(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, func(o *Options) { o.LeaseTTL = 300 * time.Millisecond })
	ctx := context.Background()
	if _, err := a.Append(ctx, []store.NewEvent{ev("e1", "")}, appendOpts); err != nil {
		t.Fatal(err)
	}
	jobs, err := a.Claim(ctx, "a", time.Now(), time.Hour, 1)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %+v, %v", jobs, err)
	}
	first := jobs[0].Delivery.NextAt
	waitFor(t, "a renewal", func() bool {
		var next int64
		_ = a.pool.QueryRow(ctx, `SELECT next_at FROM deliveries WHERE id = $1`, jobs[0].Delivery.ID).Scan(&next)
		return fromNanos(next).After(first)
	})
}

// ReleaseLeases at a node's start hands back the leases of nodes that are gone, never a live node's.
func TestReleaseLeasesOfGoneNodesOnly(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, nil)
	live := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	leasedTo := func(id, dest string) store.NewEvent {
		return store.NewEvent{Event: ev(id, "").Event, Destinations: []string{dest}, Leased: []bool{true}}
	}
	if _, err := a.Append(ctx, []store.NewEvent{leasedTo("from-a", "a")}, appendOpts); err != nil {
		t.Fatal(err)
	}
	if _, err := live.Append(ctx, []store.NewEvent{leasedTo("from-live", "a")}, appendOpts); err != nil {
		t.Fatal(err)
	}
	a.Close() // as if it died: its leases stay behind
	b := openNode(t, dsn, schema, nil)
	if jb, _ := b.Claim(ctx, "a", time.Now(), time.Minute, 10); len(jb) != 0 {
		t.Fatalf("b claimed leased deliveries: %+v", jb)
	}
	if err := b.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	jb, err := b.Claim(ctx, "a", time.Now(), time.Minute, 10)
	if err != nil || len(jb) != 1 || jb[0].Event.ID != "from-a" {
		t.Fatalf("after ReleaseLeases b claimed %+v, %v; want from-a alone (live's lease is live)", jb, err)
	}
}

// Ordering keys hold across nodes: while one node holds the first delivery of a key, no node claims the next.
func TestOrderingAcrossNodes(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, nil)
	b := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	var evs []store.NewEvent
	for i := range 3 {
		e := ev(fmt.Sprint("k", i), "")
		e.Destinations, e.OrderingKeys = []string{"a"}, []string{"key"}
		evs = append(evs, e)
	}
	if _, err := a.Append(ctx, evs, appendOpts); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ja, _ := a.Claim(ctx, "a", now, time.Minute, 10)
	jb, _ := b.Claim(ctx, "a", now, time.Minute, 10)
	if len(ja) != 1 || ja[0].Event.ID != "k0" || len(jb) != 0 {
		t.Fatalf("a claimed %+v, b %+v; want k0 alone", ja, jb)
	}
	if err := a.Complete(ctx, []store.Outcome{{DeliveryID: ja[0].Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1}}}); err != nil {
		t.Fatal(err)
	}
	if jb, _ = b.Claim(ctx, "a", now, time.Minute, 10); len(jb) != 1 || jb[0].Event.ID != "k1" {
		t.Fatalf("b claimed %+v, want k1", jb)
	}
}

// Many concurrent appends share commits and all land; the writers' time on them is counted, and is no more
// than they could have spent side by side.
func TestGroupCommit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	begun := time.Now()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(ctx, []store.NewEvent{ev(fmt.Sprint("g", i), ""), ev(fmt.Sprint("g", i), "t")}, appendOpts); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	counts, err := s.PendingCounts(ctx)
	if err != nil || counts["a"] != 128 || counts["b"] != 128 {
		t.Fatalf("pending = %v, %v; want 128 each", counts, err)
	}
	commits, ops := s.Stats()
	t.Logf("%d appends in %d commits", ops, commits)
	writers := time.Duration(s.opts.Writers + 1) // the appends' writers and the completions' one
	if busy, ran := s.CommitTime(), time.Since(begun); busy <= 0 || busy > writers*ran {
		t.Fatalf("writers busy %v over %v with %d writers", busy, ran, writers)
	}
}

// A change on one node reaches another node's Changes.
func TestChangesReachOtherNodes(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, nil)
	b := openNode(t, dsn, schema, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := b.Changes(ctx)
	if err := a.SetDestinationState(ctx, store.DestinationState{Name: "x", Enabled: false}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("b never learned of a's change")
	}
}

// One node leads maintenance; when it goes, another takes over.
func TestLeaderMoves(t *testing.T) {
	dsn, schema := testSchema(t)
	tune := func(o *Options) { o.LeaderEvery = 100 * time.Millisecond }
	a := openNode(t, dsn, schema, tune)
	b := openNode(t, dsn, schema, tune)
	waitFor(t, "a leader", func() bool { return a.Leading() || b.Leading() })
	if a.Leading() && b.Leading() {
		t.Fatal("two leaders")
	}
	first, other := a, b
	if b.Leading() {
		first, other = b, a
	}
	first.Close()
	waitFor(t, "the other node to lead", other.Leading)
}

// A connection lost at COMMIT: the store asks PostgreSQL what became of the transaction. Here it never
// committed, so the append fails with ErrUnavailable and nothing is stored; a retry with the same id is new.
func TestConnectionLostAtCommit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var once sync.Once
	s.beforeCommit = func(tx pgx.Tx) {
		once.Do(func() {
			pid := tx.Conn().PgConn().PID()
			if _, err := s.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Errorf("terminate the committing backend: %v", err)
			}
		})
	}
	_, err := s.Append(ctx, []store.NewEvent{ev("lost", "")}, appendOpts)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("append whose connection died at commit: %v, want ErrUnavailable", err)
	}
	if _, err := s.Event(ctx, "lost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed append was stored: %v", err)
	}
	res, err := s.Append(ctx, []store.NewEvent{ev("lost", "")}, appendOpts)
	if err != nil || res[0].Duplicate {
		t.Fatalf("retry: %+v, %v; want stored as new", res, err)
	}
}

// resolve answers a transaction that did commit as a success (its COMMIT answer was what got lost).
func TestResolveCommitted(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var xid int64
	if err := tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	errs, err := s.resolve(xid, errors.New("connection reset"), []error{nil})
	if err != nil || len(errs) != 1 || errs[0] != nil {
		t.Fatalf("resolve of a committed transaction: %v, %v; want success", errs, err)
	}
}

// The maintained pending counters agree with the rows through every kind of write, on two nodes, and after
// the leader folds them.
func TestPendingCountersMatchRows(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, nil)
	b := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		got, err := a.PendingCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := a.pool.Query(ctx, `SELECT destination, count(*) FROM deliveries WHERE status = 'pending' GROUP BY destination`)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{}
		for rows.Next() {
			var d string
			var n int64
			if err := rows.Scan(&d, &n); err != nil {
				t.Fatal(err)
			}
			want[d] = n
		}
		rows.Close()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after %s: counters %v, rows %v", step, got, want)
		}
	}
	for i := range 20 {
		node := a
		if i%2 == 1 {
			node = b
		}
		if _, err := node.Append(ctx, []store.NewEvent{ev(fmt.Sprint("c", i), ""), ev(fmt.Sprint("c", i), "")}, appendOpts); err != nil {
			t.Fatal(err)
		}
	}
	check("appends (with duplicates)")
	now := time.Now()
	ja, _ := a.Claim(ctx, "a", now, time.Minute, 7)
	jb, _ := b.Claim(ctx, "a", now, time.Minute, 7)
	var outs []store.Outcome
	for i, j := range ja {
		st := []store.Status{store.Delivered, store.Failed, store.Pending}[i%3]
		outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: st, NextAt: now.Add(time.Hour), Attempt: store.Attempt{N: 1, At: now}})
	}
	if err := a.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	// b's outcomes twice: the second changes nothing.
	for range 2 {
		var outs []store.Outcome
		for _, j := range jb {
			outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: now}})
		}
		if err := b.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	check("completions")
	if _, err := a.Retry(ctx, ja[0].Delivery.ID, now); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Retry(ctx, ja[0].Delivery.ID, now); err != nil { // pending already: no change
		t.Fatal(err)
	}
	check("retries")
	if _, err := b.SkipPending(ctx, "b", "disabled"); err != nil {
		t.Fatal(err)
	}
	check("skip")
	if _, err := a.Replay(ctx, store.ReplayFilter{Destination: "b", Statuses: []store.Status{store.Skipped}}, now); err != nil {
		t.Fatal(err)
	}
	check("replay")
	if err := a.foldCounts(ctx); err != nil {
		t.Fatal(err)
	}
	check("fold")
	var shards int
	if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM pending_counts WHERE shard <> 0`).Scan(&shards); err != nil || shards != 0 {
		t.Fatalf("after the fold %d shard rows are left (%v)", shards, err)
	}
}

// A node whose presence connection breaks takes its presence lock again, so other nodes keep leaving its
// leases alone.
func TestPresenceRetaken(t *testing.T) {
	dsn, schema := testSchema(t)
	a := openNode(t, dsn, schema, func(o *Options) { o.LeaderEvery = 100 * time.Millisecond })
	ctx := context.Background()
	holder := func() int32 {
		var pid int32
		err := a.pool.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
			AND ((classid::bigint << 32) | objid::bigint) = $1`, a.nodeID).Scan(&pid)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return pid
	}
	first := holder()
	if first == 0 {
		t.Fatal("no connection holds the presence lock")
	}
	if _, err := a.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the presence lock taken again", func() bool { p := holder(); return p != 0 && p != first })
}

// Forgetting a hold taken under one claim leaves a newer claim's hold of the same delivery alone (a
// completion racing the next claim of its delivery must not strip that claim of its token).
func TestHoldsDropKeepsNewerClaim(t *testing.T) {
	h := holds{m: map[int64]hold{}}
	h.put(1, hold{token: 10})
	h.put(1, hold{token: 20}) // claimed again
	h.drop([]int64{1}, []int64{10})
	if got := h.get(1).token; got != 20 {
		t.Fatalf("token after dropping the older claim = %d, want 20", got)
	}
	h.drop([]int64{1}, []int64{20})
	if got := h.get(1).token; got != 0 {
		t.Fatalf("token after dropping the current claim = %d, want 0", got)
	}
}

// Completions commit on a writer of their own: a Complete is durable while the only writer of appends is
// stuck in a commit (the dispatcher's outcomes never wait behind intake's groups).
func TestCompletionsDoNotWaitForAppends(t *testing.T) {
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, func(o *Options) { o.Writers = 1 })
	ctx := context.Background()
	if _, err := s.Append(ctx, []store.NewEvent{ev("c1", "")}, appendOpts); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Claim(ctx, "a", time.Now(), time.Minute, 10)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim = %+v, %v; want one job", jobs, err)
	}
	stuck, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	s.beforeCommit = func(pgx.Tx) {
		if first.CompareAndSwap(false, true) {
			close(stuck)
			<-release
		}
	}
	appended := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []store.NewEvent{ev("c2", "")}, appendOpts)
		appended <- err
	}()
	<-stuck
	err = s.Complete(ctx, []store.Outcome{{DeliveryID: jobs[0].Delivery.ID, Status: store.Delivered,
		Attempt: store.Attempt{N: 1, At: time.Now(), StatusCode: 200}}})
	close(release)
	if err != nil {
		t.Fatalf("complete while the appends' writer commits: %v", err)
	}
	if err := <-appended; err != nil {
		t.Fatalf("append held at its commit: %v", err)
	}
	d, err := s.Delivery(ctx, jobs[0].Delivery.ID)
	if err != nil || d.Status != store.Delivered {
		t.Fatalf("delivery = %+v, %v; want delivered", d, err)
	}
}
