package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/storetest"
)

// clock is a settable store clock.
type clock struct{ n atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.n.Store(t.UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.n.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.n.Add(int64(d)) }

// partitionsOf lists the partitions of table by name.
func partitionsOf(t *testing.T, s *Store, table string) map[string]bool {
	t.Helper()
	ds, err := days(context.Background(), s.pool, table)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, d := range ds {
		out[partitionName(table, d)] = true
	}
	return out
}

func TestPartitionsPremade(t *testing.T) {
	c := newClock(time.Date(2031, 5, 20, 23, 30, 0, 0, time.UTC))
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now })
	for _, table := range partitioned {
		got := partitionsOf(t, s, table)
		for _, day := range []string{"20310520", "20310521", "20310522"} {
			if !got[table+"_p"+day] {
				t.Errorf("%s: no partition for %s (have %v)", table, day, got)
			}
		}
	}
	// A clock beyond the days made ahead: the insert makes its day and goes in.
	c.Advance(10 * 24 * time.Hour)
	res, err := s.Append(context.Background(), []store.NewEvent{ev("far", "")}, appendOpts)
	if err != nil || len(res[0].Deliveries) != 2 {
		t.Fatalf("append past the premade days = %+v, %v", res, err)
	}
	if !partitionsOf(t, s, "events")["events_p20310530"] {
		t.Fatal("the insert did not make its day's partition")
	}
	if rec, err := s.Event(context.Background(), "far"); err != nil || !rec.ReceivedAt.Equal(c.Now()) {
		t.Fatalf("event = %+v, %v", rec, err)
	}
}

// TestRetentionDropsDays: a day wholly before the cutoff goes whole, with its deliveries and ids; a day with
// a pending delivery stays (its finished events go row by row) until that delivery ends.
// retentionDay1 is the day retention tests start on; retentionNode opens a node on a fresh schema whose clock
// starts there and that renews no leases.
var retentionDay1 = time.Date(2031, 5, 20, 10, 0, 0, 0, time.UTC)

func retentionNode(t *testing.T) (*Store, *clock) {
	c := newClock(retentionDay1)
	dsn, schema := testSchema(t)
	return openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now; o.LeaseTTL = -1 }), c
}

// deliverAll records every delivery of res as delivered at its first attempt, except destination b's of the
// event keep.
func deliverAll(t *testing.T, s *Store, c *clock, res []store.AppendResult, keep string) {
	t.Helper()
	var outs []store.Outcome
	for _, r := range res {
		for _, d := range r.Deliveries {
			if r.ID == keep && d.Destination == "b" {
				continue
			}
			outs = append(outs, store.Outcome{DeliveryID: d.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}})
		}
	}
	if err := s.Complete(context.Background(), outs); err != nil {
		t.Fatal(err)
	}
}

func TestRetentionDropsDays(t *testing.T) {
	ctx := context.Background()
	s, c := retentionNode(t)
	deliverAll := func(res []store.AppendResult, keep string) {
		t.Helper()
		deliverAll(t, s, c, res, keep)
	}
	var first []store.NewEvent
	for i := range 20 {
		first = append(first, ev(fmt.Sprint("d1-", i), ""))
	}
	res1, err := s.Append(ctx, first, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(res1, "")
	c.Advance(24 * time.Hour)
	res2, err := s.Append(ctx, []store.NewEvent{ev("d2-done", ""), ev("d2-pending", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(res2, "d2-pending")
	c.Advance(48 * time.Hour)
	if _, err := s.Append(ctx, []store.NewEvent{ev("d4", "")}, appendOpts); err != nil {
		t.Fatal(err)
	}

	if !partitionsOf(t, s, "delivery_log")["delivery_log_p20310520"] || logged(t, s) != 20*2+3 {
		t.Fatalf("day 1's finished deliveries are not in its log partition (%d logged)", logged(t, s))
	}
	cutoff := s.PartitionFloor(c.Now().Add(-time.Hour)) // the start of day 4: days 1 and 2 lie before it
	n, err := s.Prune(ctx, cutoff, 5)
	if err != nil || n != 20 {
		t.Fatalf("prune = %d, %v; want day 1's 20 events dropped at once", n, err)
	}
	have := partitionsOf(t, s, "events")
	if have["events_p20310520"] || partitionsOf(t, s, "attempts")["attempts_p20310520"] {
		t.Fatalf("day 1 was not dropped: %v", have)
	}
	if partitionsOf(t, s, "delivery_log")["delivery_log_p20310520"] || logged(t, s) != 3 {
		t.Fatalf("day 1's log was not dropped with it (%d logged)", logged(t, s))
	}
	if !have["events_p20310521"] || !partitionsOf(t, s, "attempts")["attempts_p20310521"] || !partitionsOf(t, s, "delivery_log")["delivery_log_p20310521"] {
		t.Fatalf("day 2 (a pending delivery) was dropped: %v", have)
	}
	if _, err := s.Delivery(ctx, res1[0].Deliveries[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a delivery of a dropped day: %v, want ErrNotFound", err)
	}
	var ids, retired int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM event_ids WHERE id LIKE 'd1-%'), (SELECT count(*) FROM retired_days)`).Scan(&ids, &retired); err != nil || ids != 0 || retired != 0 {
		t.Fatalf("event ids of day 1 left: %d, retired days left: %d (%v)", ids, retired, err)
	}
	// The id of a dropped event is free again.
	if again, err := s.Append(ctx, []store.NewEvent{ev("d1-0", "")}, appendOpts); err != nil || again[0].Duplicate || again[0].Err != nil {
		t.Fatalf("reusing a dropped id = %+v, %v", again, err)
	}

	// Day 2 is kept whole for its pending delivery; its finished event goes row by row.
	if n, err := s.Prune(ctx, cutoff, 5); err != nil || n != 1 {
		t.Fatalf("prune of day 2's finished event = %d, %v; want 1", n, err)
	}
	if _, err := s.Event(ctx, "d2-done"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("d2-done: %v, want gone", err)
	}
	jobs, err := s.Claim(ctx, "b", c.Now(), time.Minute, 10)
	if err != nil || len(jobs) != 3 || jobs[0].Event.ID != "d2-pending" {
		t.Fatalf("claim = %+v, %v; want d2-pending's delivery with its event (and d4's, d1-0's)", jobs, err)
	}
	for _, j := range jobs {
		if err := s.Complete(ctx, []store.Outcome{{DeliveryID: j.Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Its last pending delivery ended, day 2 goes (the one event left in it).
	if n, err := s.Prune(ctx, cutoff, 5); err != nil || n != 1 {
		t.Fatalf("prune of day 2 = %d, %v; want 1", n, err)
	}
	if partitionsOf(t, s, "events")["events_p20310521"] {
		t.Fatal("day 2 kept after its pending delivery ended")
	}
	if rec, err := s.Event(ctx, "d4"); err != nil || len(rec.Deliveries) != 2 {
		t.Fatalf("day 4's event = %+v, %v", rec, err)
	}
}

// TestRetentionHeldByItsOwnDayOnly: retention finds a day's pending deliveries through its events' range of
// seqs. A node whose clock lags puts an event into an earlier day after later days' events, so that day's range
// holds another day's seq: the pending delivery of that other day must not keep it, and its own must.
func TestRetentionHeldByItsOwnDayOnly(t *testing.T) {
	ctx := context.Background()
	day1 := retentionDay1
	s, c := retentionNode(t)
	deliver := func(res []store.AppendResult) {
		t.Helper()
		deliverAll(t, s, c, res, "")
	}
	early, err := s.Append(ctx, []store.NewEvent{ev("d1-early", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(24 * time.Hour)
	if _, err := s.Append(ctx, []store.NewEvent{ev("d2-pending", "")}, appendOpts); err != nil { // left pending
		t.Fatal(err)
	}
	c.Advance(-24 * time.Hour) // the lagging node
	late, err := s.Append(ctx, []store.NewEvent{ev("d1-late", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	var lo, mid, hi int64
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT seq FROM events WHERE id = 'd1-early'), (SELECT seq FROM events WHERE id = 'd2-pending'),
		(SELECT seq FROM events WHERE id = 'd1-late')`).Scan(&lo, &mid, &hi); err != nil || !(lo < mid && mid < hi) {
		t.Fatalf("seqs %d, %d, %d (%v): day 1's range does not hold day 2's event", lo, mid, hi, err)
	}
	lo1 := s.PartitionFloor(day1).UnixNano()
	heldNow := func() bool {
		t.Helper()
		minSeq, maxSeq, err := s.seqs(ctx, partitionName("events", lo1))
		if err != nil {
			t.Fatal(err)
		}
		held, err := s.held(ctx, lo1, minSeq, maxSeq)
		if err != nil {
			t.Fatal(err)
		}
		return held
	}
	if !heldNow() {
		t.Fatal("day 1 is not held while its own deliveries are pending")
	}
	deliver(early)
	if !heldNow() {
		t.Fatal("day 1 is not held while its late event's deliveries are pending")
	}
	deliver(late)
	if heldNow() {
		t.Fatal("day 1 is held by day 2's pending delivery, whose seq lies in its range")
	}

	// And retention acts on it: day 1 is dropped whole, day 2 kept.
	c.Advance(4 * 24 * time.Hour)
	if n, err := s.Prune(ctx, s.PartitionFloor(day1.Add(2*24*time.Hour)), 5); err != nil || n != 2 {
		t.Fatalf("prune = %d, %v; want day 1's two events", n, err)
	}
	have := partitionsOf(t, s, "events")
	if have["events_p20310520"] || !have["events_p20310521"] {
		t.Fatalf("events partitions after prune: %v; want day 1 gone and day 2 kept", have)
	}
	if rec, err := s.Event(ctx, "d2-pending"); err != nil || len(rec.Deliveries) != 2 {
		t.Fatalf("d2-pending = %+v, %v; want kept with its deliveries", rec, err)
	}
}

// TestRetentionDoesNotBlockIntake: a day is detached while a long reader holds the events table; the detach
// waits for the reader, and appends go on meanwhile.
func TestRetentionDoesNotBlockIntake(t *testing.T) {
	ctx := context.Background()
	c := newClock(time.Date(2031, 5, 20, 10, 0, 0, 0, time.UTC))
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now })
	res, err := s.Append(ctx, []store.NewEvent{ev("old", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	var outs []store.Outcome
	for _, d := range res[0].Deliveries {
		outs = append(outs, store.Outcome{DeliveryID: d.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}})
	}
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	c.Advance(3 * 24 * time.Hour)
	if err := s.premakeAround(ctx); err != nil {
		t.Fatal(err)
	}

	reader, err := pgx.Connect(ctx, dsn+"&search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(ctx)
	tx, err := reader.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var x int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&x); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var pruned int
	var pruneErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		pruned, pruneErr = s.Prune(ctx, s.PartitionFloor(c.Now()), 100)
	}()
	waitFor(t, "the detach to wait for the reader", func() bool {
		var waiting bool
		err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%DETACH PARTITION%CONCURRENTLY%'
			AND wait_event_type = 'Lock' AND pid <> pg_backend_pid())`).Scan(&waiting)
		return err == nil && waiting
	})
	for i := range 20 {
		if _, err := s.Append(ctx, []store.NewEvent{ev(fmt.Sprint("new", i), "")}, appendOpts); err != nil {
			t.Fatalf("append while a day is being detached: %v", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if pruneErr != nil || pruned != 1 {
		t.Fatalf("prune = %d, %v; want the old day's event", pruned, pruneErr)
	}
	if page, err := s.ListEvents(ctx, store.EventFilter{}); err != nil || len(page) != 20 {
		t.Fatalf("events after retention: %d, %v; want the 20 new", len(page), err)
	}
}

// TestMigrationKeepsRows: a database at migration 3 holding events, deliveries and attempts is migrated to day
// partitions and still answers for them (dedupe included).
func TestMigrationKeepsRows(t *testing.T) {
	ctx := context.Background()
	dsn, schema, conn := schemaAt(t, 3)
	old := storetest.T0.Add(-40 * 24 * time.Hour).UnixNano()
	recent := storetest.T0.UnixNano()
	for _, q := range []string{
		`INSERT INTO events (seq, tenant, id, topic, time, received_at, data) VALUES
		  (1, '', 'old', 't', $1, $1, '{}'), (2, 'acme', 'recent', 't', $2, $2, '{}')`,
		`INSERT INTO deliveries (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at) VALUES
		  (1, 1, 'old', 'a', 'delivered', 1, $1, $1, $1), (2, 2, 'recent', 'a', 'pending', 1, $2, $2, $2)`,
		`INSERT INTO attempts (delivery_id, n, at, duration_us, status_code) VALUES (1, 1, $1, 5, 200), (2, 1, $2, 5, 503)`,
	} {
		if _, err := conn.Exec(ctx, q, old, recent); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `INSERT INTO pending_counts (destination, shard, n) VALUES ('a', 0, 1)`); err != nil {
		t.Fatal(err)
	}
	// Sequences as the old store left them (the rows above came in with explicit ids).
	if _, err := conn.Exec(ctx, `SELECT setval('events_seq_seq', 2), setval('deliveries_id_seq', 2)`); err != nil {
		t.Fatal(err)
	}
	c := newClock(storetest.T0.Add(time.Minute))
	s := openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now; o.LeaseTTL = -1 })

	rec, err := s.Event(ctx, "old")
	if err != nil || len(rec.Deliveries) != 1 || len(rec.Deliveries[0].AttemptLog) != 1 || rec.Deliveries[0].AttemptLog[0].StatusCode != 200 {
		t.Fatalf("old event after the migration = %+v, %v", rec, err)
	}
	if d, err := s.Delivery(ctx, 2); err != nil || len(d.AttemptLog) != 1 || d.AttemptLog[0].StatusCode != 503 {
		t.Fatalf("recent delivery after the migration = %+v, %v", d, err)
	}
	dup, err := s.Append(ctx, []store.NewEvent{ev("recent", "acme")}, appendOpts)
	if err != nil || !dup[0].Duplicate || len(dup[0].Deliveries) != 1 || dup[0].Deliveries[0].ID != 2 {
		t.Fatalf("append of a migrated id = %+v, %v; want a duplicate of it", dup, err)
	}
	fresh, err := s.Append(ctx, []store.NewEvent{ev("fresh", "")}, appendOpts)
	if err != nil || fresh[0].Duplicate {
		t.Fatalf("fresh = %+v, %v", fresh, err)
	}
	page, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil || len(page) != 3 || page[0].Event.ID != "fresh" || page[0].Seq <= 2 {
		t.Fatalf("events = %+v, %v; want fresh (seq after the migrated ones) first", page, err)
	}
	jobs, err := s.Claim(ctx, "a", c.Now(), time.Minute, 10)
	if err != nil || len(jobs) != 2 || jobs[0].Event.ID != "recent" {
		t.Fatalf("claim = %+v, %v; want recent, then fresh", jobs, err)
	}
	// The old day lies before any cutoff of a week: it goes whole.
	if n, err := s.Prune(ctx, s.PartitionFloor(c.Now().Add(-7*24*time.Hour)), 10); err != nil || n != 1 {
		t.Fatalf("prune = %d, %v; want the old event's day", n, err)
	}
}

// A group of appends goes as one pipeline: concurrent calls with one id are stored once (one caller first, the
// rest answered its deliveries), and a call the server refuses fails alone.
func TestPipelinedGroup(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const n = 48
	res := make([][]store.AppendResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := []store.NewEvent{ev("same", ""), ev(fmt.Sprint("own", i), "")}
			if i == 7 {
				evs[1].Event.ID = "bad\x00id" // PostgreSQL text cannot hold NUL: the server refuses the statement
			}
			res[i], errs[i] = s.Append(ctx, evs, appendOpts)
		}()
	}
	wg.Wait()
	first := 0
	var ids []int64
	for i := range n {
		if i == 7 {
			if errs[i] == nil {
				t.Fatal("the refused call succeeded")
			}
			continue
		}
		if errs[i] != nil || res[i][1].Duplicate || len(res[i][1].Deliveries) != 2 {
			t.Fatalf("call %d: %+v, %v", i, res[i], errs[i])
		}
		if !res[i][0].Duplicate {
			first++
		}
		if ids == nil {
			ids = []int64{res[i][0].Deliveries[0].ID, res[i][0].Deliveries[1].ID}
		}
		if got := res[i][0].Deliveries; len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[1] {
			t.Fatalf("call %d answered other deliveries for \"same\": %+v, want ids %v", i, got, ids)
		}
	}
	if first != 1 {
		t.Fatalf("%d callers were answered as first for one id, want 1", first)
	}
	counts, err := s.PendingCounts(ctx)
	if want := int64(1 + n - 1); err != nil || counts["a"] != want || counts["b"] != want {
		t.Fatalf("pending = %v, %v; want %d each", counts, err, want)
	}
	// "same" and every call's own event but the refused one's.
	if page, err := s.ListEvents(ctx, store.EventFilter{Limit: 1000}); err != nil || len(page) != n {
		t.Fatalf("%d events stored (%v), want %d", len(page), err, n)
	}
}

// schemaAt makes a fresh schema with the migrations up to version applied and recorded, as a database written
// by an earlier Sluice would be, and returns its DSN, its name and a connection to it (closed with the test).
func schemaAt(t *testing.T, version int) (string, string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	dsn, schema := testSchema(t)
	conn, err := pgx.Connect(ctx, dsn+"&search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := ensureSchema(ctx, conn, schema); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE sluice_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range Migrations() {
		if m.Version > version {
			break
		}
		if _, err := conn.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO sluice_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	return dsn, schema, conn
}
