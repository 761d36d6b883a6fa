package destinations_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/postgres"
)

// pgNode is one node of a cluster over a shared PostgreSQL store: its own store handle, dispatcher, manager
// (following the others through Watch) and intake.
type pgNode struct {
	st   *postgres.Store
	disp *dispatch.Dispatcher
	mgr  *destinations.Manager
	in   *intake.Intake
}

// pgSchema returns the test DSN and a schema for this test alone, dropped when it ends; the test is skipped
// without SLUICE_TEST_PG_DSN.
func pgSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = os.Getenv("SLUICE_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("SLUICE_TEST_PG_DSN is not set")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema = "sluice_test_runs_" + hex.EncodeToString(b)
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

func startPGNode(t testing.TB, dsn, schema, dir string, now func() time.Time) *pgNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Schema: schema, MaxConns: 8,
		Logger: slog.New(slog.DiscardHandler), LeaderEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	box, err := seal.New([][]byte{[]byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	n := &pgNode{st: st}
	n.disp = dispatch.New(st, dispatch.Options{Poll: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	n.mgr = destinations.New(destinations.Options{Store: st, Dispatcher: n.disp, Lanes: lanes(), Box: box, Now: now})
	n.in = intake.New(st, n.disp, nil, intake.Options{DedupeWindow: time.Hour, Now: now, Subscriptions: n.mgr.Subscriptions()})
	if err := n.mgr.Start(ctx, parse(t, dir, runsOn+fmt.Sprintf(base, testKey, "1h", 0, "1h", "")), n.in); err != nil {
		t.Fatal(err)
	}
	watched := make(chan struct{})
	go func() { defer close(watched); n.mgr.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-watched
		n.in.Close()
		n.mgr.Close()
		_ = n.disp.Shutdown(context.Background())
		_ = n.st.Close()
	})
	return n
}

// routes reports whether an event of run corr and topic would reach the subscription name on this node.
func (n *pgNode) routes(corr, topic, name string) bool {
	return slices.Contains(n.mgr.Subscriptions().Match(&event.Event{CorrelationID: corr, Topic: topic}), name)
}

// TestRunSubscriptionsAcrossNodes: a per-run subscription registered on one node reaches every node through
// the store's change feed — an event published on another node with the same correlation id reaches it, and
// each delivery is made once — and its expiry, decided by the maintenance leader, ends it on every node.
func TestRunSubscriptionsAcrossNodes(t *testing.T) {
	dsn, schema := pgSchema(t)
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())).UTC() }
	a := startPGNode(t, dsn, schema, t.TempDir(), now)
	b := startPGNode(t, dsn, schema, t.TempDir(), now)
	run := newReceiver(t, 204)
	ctx := context.Background()

	name := destinations.SubscriptionName("run-x", "", run.URL+"/run", []string{"case.*"})
	sub := fmt.Sprintf(`"subscriptions":[{"url":%q,"topics":["case.*"],"secret":%q}]`, run.URL+"/run", secretA)
	registered := time.Now()
	res, err := publishJSON(&stack{in: a.in}, `{"id":"x1","topic":"case.created","correlation_id":"run-x","data":{},`+sub+`}`)
	if err != nil || res.Deliveries != 1 {
		t.Fatalf("register on a: %+v %v", res, err)
	}
	waitFor(t, "b to learn of the subscription", func() bool { return b.routes("run-x", "case.updated", name) })
	t.Logf("b routed to the subscription %v after it was registered on a", time.Since(registered).Round(time.Millisecond))

	// Published on b without the subscription: the run's correlation id is enough.
	res, err = publishJSON(&stack{in: b.in}, `{"id":"x2","topic":"case.updated","correlation_id":"run-x","data":{}}`)
	if err != nil || res.Deliveries != 1 {
		t.Fatalf("publish on b: %+v %v", res, err)
	}
	for _, id := range []string{"x1", "x2"} {
		waitFor(t, id+" delivered", func() bool {
			rec, err := a.st.Event(ctx, id)
			return err == nil && len(rec.Deliveries) == 1 && rec.Deliveries[0].Status == store.Delivered
		})
	}
	if ids := run.ids(); len(ids) != 2 || !slices.Contains(ids, "x1") || !slices.Contains(ids, "x2") {
		t.Fatalf("the subscription received %v, want x1 and x2 once each", ids)
	}

	// Past its TTL: the leader ends it in the store; the other node drops it when it hears of that.
	skew.Add(int64(2 * time.Hour))
	var leader, other *pgNode
	waitFor(t, "a maintenance leader", func() bool { return a.st.Leading() || b.st.Leading() })
	leader, other = a, b
	if b.st.Leading() {
		leader, other = b, a
	}
	leader.mgr.ExpireRuns(ctx)
	if subs, err := leader.st.Subscriptions(ctx); err != nil || len(subs) != 0 {
		t.Fatalf("the leader left %v (%v) in the store", subs, err)
	}
	waitFor(t, "the other node to stop the expired subscription's lane", func() bool { return !other.disp.Accepting(name) })
	if other.routes("run-x", "case.updated", name) || leader.disp.Accepting(name) {
		t.Fatal("the expired subscription still runs")
	}
}

// TestRunExpiryOnlyByLeader: a node that does not lead drops an expired subscription from its own registry
// but leaves ending it in the store to the leader.
func TestRunExpiryOnlyByLeader(t *testing.T) {
	dsn, schema := pgSchema(t)
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())).UTC() }
	a := startPGNode(t, dsn, schema, t.TempDir(), now)
	waitFor(t, "a to lead", a.st.Leading)
	b := startPGNode(t, dsn, schema, t.TempDir(), now)
	run := newReceiver(t, 204)
	ctx := context.Background()
	name := destinations.SubscriptionName("run-y", "", run.URL, []string{"*"})
	if _, err := publishJSON(&stack{in: b.in}, fmt.Sprintf(`{"topic":"a","correlation_id":"run-y","data":{},"subscriptions":[{"url":%q,"topics":["*"]}]}`, run.URL)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to learn of the subscription", func() bool { return a.routes("run-y", "a", name) })
	skew.Add(int64(2 * time.Hour))
	b.mgr.ExpireRuns(ctx) // b does not lead
	if b.disp.Accepting(name) {
		t.Fatal("b still runs the expired subscription")
	}
	if subs, err := b.st.Subscriptions(ctx); err != nil || len(subs) != 1 {
		t.Fatalf("a node that does not lead ended the subscription in the store: %v %v", subs, err)
	}
	a.mgr.ExpireRuns(ctx)
	if subs, err := a.st.Subscriptions(ctx); err != nil || len(subs) != 0 {
		t.Fatalf("the leader left %v (%v) in the store", subs, err)
	}
}
