package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/storetest"
)

// hotRows returns the statuses (with their ordering key) of the rows left in deliveries, by id.
func hotRows(t *testing.T, s *Store) map[int64]string {
	t.Helper()
	rows, err := s.pool.Query(context.Background(), `SELECT id, status || '/' || ordering_key FROM deliveries`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		out[id] = st
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func logged(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM delivery_log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// onlyUnfinished fails unless deliveries holds pending rows and failed rows with an ordering key only.
func onlyUnfinished(t *testing.T, s *Store) {
	t.Helper()
	for id, st := range hotRows(t, s) {
		if !strings.HasPrefix(st, "pending/") && !(strings.HasPrefix(st, "failed/") && st != "failed/") {
			t.Errorf("delivery %d (%s) is finished but still in deliveries", id, st)
		}
	}
}

// unmoveAll puts every logged delivery back into deliveries as it is (finished), as it was stored before the
// log existed: a first attempt kept on the log row goes back to attempts.
func unmoveAll(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), `WITH g AS (DELETE FROM delivery_log RETURNING `+logCols+`,
		  a1_at, a1_us, a1_code, a1_error, a1_response),
		a1 AS (INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response, received_at)
		  SELECT id, 1, a1_at, a1_us, a1_code, a1_error, a1_response, created_at FROM g WHERE a1_at IS NOT NULL)
		INSERT INTO deliveries (`+logCols+`) SELECT `+logCols+` FROM g`); err != nil {
		t.Fatal(err)
	}
}

// noLeader holds the leader lock of schema for the rest of the test, so no store opened on it runs maintenance
// (the mover) behind the test's back.
func noLeader(t testing.TB, dsn, schema string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	var held bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('sluice.leader.' || $1::text))`, schema).Scan(&held); err != nil || !held {
		t.Fatalf("take the leader lock of %s: %v, %v", schema, held, err)
	}
}

// snapshot is every read that sees deliveries, as the API and console make them.
type snapshot struct {
	Lists      map[string][]store.Delivery
	Pages      [][]store.Delivery
	ByID       map[int64]*store.DeliveryRecord
	Events     map[string]*store.EventRecord
	Tenant     map[string]*store.EventRecord
	Duplicates []store.AppendResult
	Pending    map[string]int64
}

func readAll(t *testing.T, s *Store, evs []store.NewEvent, since, until time.Time) snapshot {
	t.Helper()
	ctx := context.Background()
	sn := snapshot{Lists: map[string][]store.Delivery{}, ByID: map[int64]*store.DeliveryRecord{},
		Events: map[string]*store.EventRecord{}, Tenant: map[string]*store.EventRecord{}}
	filters := map[string]store.DeliveryFilter{
		"all": {}, "delivered": {Status: store.Delivered}, "failed": {Status: store.Failed},
		"pending": {Status: store.Pending}, "skipped": {Status: store.Skipped},
		"a": {Destinations: []string{"a"}}, "b,c failed": {Destinations: []string{"b", "c"}, Status: store.Failed},
		"none": {Destinations: []string{}}, "event": {EventID: evs[3].Event.ID},
		"window": {Since: since, Until: until}, "before": {Before: 20, Limit: 5},
	}
	for name, f := range filters {
		ds, err := s.ListDeliveries(ctx, f)
		if err != nil {
			t.Fatalf("list %s: %v", name, err)
		}
		sn.Lists[name] = ds
	}
	var before int64
	for {
		page, err := s.ListDeliveries(ctx, store.DeliveryFilter{Before: before, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		sn.Pages = append(sn.Pages, page)
		before = page[len(page)-1].ID
	}
	for _, d := range sn.Lists["all"] {
		rec, err := s.Delivery(ctx, d.ID)
		if err != nil {
			t.Fatalf("delivery %d: %v", d.ID, err)
		}
		sn.ByID[d.ID] = rec
	}
	if _, err := s.Delivery(ctx, 1<<40); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a delivery that does not exist: %v, want ErrNotFound", err)
	}
	for _, e := range evs {
		rec, err := s.Event(ctx, e.Event.ID)
		if err != nil {
			t.Fatalf("event %s: %v", e.Event.ID, err)
		}
		sn.Events[e.Event.ID] = rec
		if rec, err = s.TenantEvent(ctx, e.Event.Tenant, e.Event.ID); err != nil {
			t.Fatalf("tenant event %s: %v", e.Event.ID, err)
		}
		sn.Tenant[e.Event.ID] = rec
	}
	dup, err := s.Append(ctx, evs, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	sn.Duplicates = dup
	if sn.Pending, err = s.PendingCounts(ctx); err != nil {
		t.Fatal(err)
	}
	return sn
}

// TestDeliveryLogAnswersAsTheQueue: once deliveries finish, deliveries keeps only what is still to do (pending
// rows, and failed ones with an ordering key) and every read answers exactly as it does with all rows in
// deliveries, as before the log existed.
func TestDeliveryLogAnswersAsTheQueue(t *testing.T) {
	ctx := context.Background()
	c := newClock(storetest.T0)
	dsn, schema := testSchema(t)
	noLeader(t, dsn, schema)
	s := openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now; o.LeaseTTL = -1 })

	var evs []store.NewEvent
	for i := range 12 {
		tenant := ""
		if i%3 == 0 {
			tenant = "acme"
		}
		ne := store.NewEvent{Event: event.Event{ID: fmt.Sprint("e-", i), Topic: "case.updated", Tenant: tenant, Time: c.Now(),
			Data: []byte(`{"n":1}`)}, Destinations: []string{"a", "b", "c"},
			OrderingKeys: []string{"", "", fmt.Sprint("k", i%2)}, OrderingBlock: []bool{false, false, true}}
		if i == 5 {
			ne.Skipped = []string{"", "destination disabled", ""}
		}
		evs = append(evs, ne)
		if _, err := s.Append(ctx, []store.NewEvent{ne}, appendOpts); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Second)
	}
	since, until := storetest.T0.Add(3*time.Second), storetest.T0.Add(8*time.Second)
	// a: delivered; b: failed; c: the first of each key fails (it stays, holding its key), the rest wait.
	for _, dest := range []string{"a", "b", "c"} {
		jobs, err := s.Claim(ctx, dest, c.Now(), time.Minute, 100)
		if err != nil {
			t.Fatal(err)
		}
		var outs []store.Outcome
		for i, j := range jobs {
			o := store.Outcome{DeliveryID: j.Delivery.ID, Attempt: store.Attempt{N: 1, At: c.Now(), Duration: time.Millisecond}}
			switch {
			case dest == "a":
				o.Status, o.Attempt.StatusCode, o.Attempt.Response = store.Delivered, 200, []byte("ok")
			case dest == "b" || i < 2:
				o.Status, o.Attempt.StatusCode, o.Attempt.Error = store.Failed, 500, "boom"
			default:
				o.Status, o.NextAt, o.Attempt.Error = store.Pending, c.Now().Add(time.Hour), "timeout"
			}
			outs = append(outs, o)
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	c.Advance(time.Minute)

	moved := readAll(t, s, evs, since, until)
	if len(moved.Lists["all"]) != 36 || len(moved.Lists["a"]) != 12 || len(moved.Lists["delivered"]) != 12 ||
		len(moved.Lists["skipped"]) != 1 || len(moved.Lists["failed"]) != 13 || len(moved.Lists["pending"]) != 10 {
		t.Fatalf("all %d, skipped %d, failed %d, pending %d; want 36, 1, 13, 10", len(moved.Lists["all"]), len(moved.Lists["skipped"]), len(moved.Lists["failed"]), len(moved.Lists["pending"]))
	}
	if logged(t, s) == 0 {
		t.Fatal("no delivery was moved to the log at completion")
	}
	if _, err := s.moveFinished(ctx); err != nil {
		t.Fatal(err)
	}
	onlyUnfinished(t, s)
	hot := hotRows(t, s)
	if len(hot) != 12 { // c's 12: two failed with their key, ten pending
		t.Fatalf("deliveries holds %v; want c's twelve (two failed with a key, the rest pending)", hot)
	}
	if got := readAll(t, s, evs, since, until); !reflect.DeepEqual(got, moved) {
		t.Fatalf("reads after the mover differ:\n got %+v\nwant %+v", got, moved)
	}
	unmoveAll(t, s)
	if logged(t, s) != 0 {
		t.Fatal("log not emptied")
	}
	if got := readAll(t, s, evs, since, until); !reflect.DeepEqual(got, moved) {
		t.Fatalf("reads with every row in deliveries differ from reads of the log:\n got %+v\nwant %+v", got, moved)
	}
	if n, err := s.moveFinished(ctx); err != nil || n != 12*3-12 {
		t.Fatalf("mover moved %d, %v; want the 24 finished rows of a and b", n, err)
	}
	onlyUnfinished(t, s)
	if s.Leading() {
		t.Fatal("the store led (and may have moved rows) although the test holds the leader lock")
	}
}

// TestRetryAndReplayOfLoggedDeliveries: a logged delivery retried or replayed is pending again in deliveries
// under its id, counted, claimable, and goes back to the log when it ends, its attempts kept.
func TestRetryAndReplayOfLoggedDeliveries(t *testing.T) {
	ctx := context.Background()
	c := newClock(storetest.T0)
	dsn, schema := testSchema(t)
	noLeader(t, dsn, schema)
	s := openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now; o.LeaseTTL = -1 })

	const n = 600 // more than replayBatch, so a replay walks several batches across both tables
	var evs []store.NewEvent
	for i := range n {
		evs = append(evs, store.NewEvent{Event: event.Event{ID: fmt.Sprint("r-", i), Topic: "t", Time: c.Now(), Data: []byte(`{}`)},
			Destinations: []string{"a"}})
	}
	res, err := s.Append(ctx, evs, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Claim(ctx, "a", c.Now(), time.Minute, n/2)
	if err != nil || len(jobs) != n/2 {
		t.Fatalf("claim = %d, %v", len(jobs), err)
	}
	var outs []store.Outcome
	for _, j := range jobs {
		outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Delivered,
			Attempt: store.Attempt{N: 1, At: c.Now(), StatusCode: 200}})
	}
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	// The other half is skipped in place: those rows wait in deliveries for the mover.
	if k, err := s.SkipPending(ctx, "a", "disabled"); err != nil || k != n/2 {
		t.Fatalf("skip = %d, %v", k, err)
	}
	if logged(t, s) != n/2 || len(hotRows(t, s)) != n/2 {
		t.Fatalf("logged %d, hot %d; want %d each", logged(t, s), len(hotRows(t, s)), n/2)
	}

	first := jobs[0].Delivery.ID
	c.Advance(time.Minute)
	d, err := s.Retry(ctx, first, c.Now())
	if err != nil || d.ID != first || d.Status != store.Pending || d.Attempts != 1 || d.RetryBase != 1 || !d.NextAt.Equal(c.Now()) {
		t.Fatalf("retry of a logged delivery = %+v, %v", d, err)
	}
	if st := hotRows(t, s)[first]; st != "pending/" {
		t.Fatalf("the retried delivery in deliveries: %q, want pending", st)
	}
	if pc, err := s.PendingCounts(ctx); err != nil || pc["a"] != 1 {
		t.Fatalf("pending counts = %v, %v; want a: 1", pc, err)
	}
	got, err := s.Claim(ctx, "a", c.Now(), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].Delivery.ID != first || got[0].Event.ID != res[0].ID {
		t.Fatalf("claim after the retry = %+v, %v", got, err)
	}
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: first, Status: store.Delivered,
		Attempt: store.Attempt{N: 2, At: c.Now(), StatusCode: 201}}}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Delivery(ctx, first)
	if err != nil || rec.Status != store.Delivered || rec.Attempts != 2 || len(rec.AttemptLog) != 2 || rec.AttemptLog[1].StatusCode != 201 {
		t.Fatalf("the retried delivery after its second attempt = %+v, %v", rec, err)
	}
	if _, ok := hotRows(t, s)[first]; ok {
		t.Fatal("the retried delivery stayed in deliveries after it ended")
	}
	if _, err := s.Retry(ctx, 1<<40, c.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry of a delivery that does not exist: %v, want ErrNotFound", err)
	}

	// Replay walks both tables once each delivery, whichever it is in.
	k, err := s.Replay(ctx, store.ReplayFilter{Destination: "a"}, c.Now())
	if err != nil || k != n {
		t.Fatalf("replay = %d, %v; want %d", k, err, n)
	}
	if logged(t, s) != 0 {
		t.Fatalf("%d deliveries left in the log after the replay", logged(t, s))
	}
	for id, st := range hotRows(t, s) {
		if st != "pending/" {
			t.Fatalf("delivery %d is %s after the replay", id, st)
		}
	}
	if pc, err := s.PendingCounts(ctx); err != nil || pc["a"] != n {
		t.Fatalf("pending counts after the replay = %v, %v; want a: %d", pc, err, n)
	}
	if k, err := s.Replay(ctx, store.ReplayFilter{Destination: "a"}, c.Now()); err != nil || k != 0 {
		t.Fatalf("second replay = %d, %v; want 0 (every delivery is pending)", k, err)
	}
	if s.Leading() {
		t.Fatal("the store led (and may have moved rows) although the test holds the leader lock")
	}
}

// TestMigrationMovesFinishedRows: a database at migration 0004 holding finished deliveries is migrated; the
// leader moves the finished rows to the log, and every read answers as before.
func TestMigrationMovesFinishedRows(t *testing.T) {
	ctx := context.Background()
	dsn, schema, conn := schemaAt(t, 4)
	// 0004 made the partitions of today and the two days after (by the database's clock).
	now := time.Now().UnixNano()
	for _, q := range []string{
		`INSERT INTO events (seq, tenant, id, topic, time, received_at, data) VALUES (1, '', 'x', 't', $1, $1, '{}')`,
		`INSERT INTO event_ids (tenant, id, seq, received_at) VALUES ('', 'x', 1, $1)`,
		`INSERT INTO deliveries (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, last_error, ordering_key) VALUES
		  (1, 1, 'x', 'a', 'delivered', 1, $1, $1, $1, '', ''), (2, 1, 'x', 'b', 'failed', 1, $1, $1, $1, 'boom', ''),
		  (3, 1, 'x', 'c', 'skipped', 0, $1, $1, $1, 'disabled', ''), (4, 1, 'x', 'd', 'failed', 1, $1, $1, $1, 'boom', 'k'),
		  (5, 1, 'x', 'e', 'pending', 1, $1, $1, $1, '', '')`,
		`INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, received_at) VALUES (1, 1, $1, 5, 200, $1), (2, 1, $1, 5, 500, $1)`,
		`INSERT INTO pending_counts (destination, shard, n) VALUES ('e', 0, 1)`,
		`SELECT setval('events_seq_seq', 1), setval('deliveries_id_seq', 5)`,
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, now)
		}
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	// The reads before the move are made by a store that cannot lead (this connection holds the leader lock),
	// so nothing is moved under them.
	var held bool
	if err := conn.QueryRow(ctx, leaderLock).Scan(&held); err != nil || !held {
		t.Fatalf("take the leader lock: %v, %v", held, err)
	}
	before := map[int64]*store.DeliveryRecord{}
	old, err := Open(ctx, Options{DSN: dsn, Schema: schema, MaxConns: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hotRows(t, old)) != 5 || logged(t, old) != 0 {
		t.Fatal("rows moved by a store that is not the leader")
	}
	for id := range int64(5) {
		if before[id+1], err = old.Delivery(ctx, id+1); err != nil {
			t.Fatal(err)
		}
	}
	evBefore, err := old.Event(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}

	s := openNode(t, dsn, schema, func(o *Options) { o.LeaderEvery = 50 * time.Millisecond })
	waitFor(t, "the leader to move the finished rows", func() bool { return len(hotRows(t, s)) == 2 })
	if hot := hotRows(t, s); hot[4] != "failed/k" || hot[5] != "pending/" {
		t.Fatalf("deliveries after the move = %v; want the failed one with a key and the pending one", hot)
	}
	for id, want := range before {
		got, err := s.Delivery(ctx, id)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("delivery %d after the move = %+v, %v; want %+v", id, got, err, want)
		}
	}
	if got, err := s.Event(ctx, "x"); err != nil || !reflect.DeepEqual(got, evBefore) {
		t.Fatalf("event after the move = %+v, %v; want %+v", got, err, evBefore)
	}
	if _, err := s.Retry(ctx, 1, time.Now()); err != nil {
		t.Fatalf("retry of a moved delivery: %v", err)
	}
	if pc, err := s.PendingCounts(ctx); err != nil || pc["a"] != 1 || pc["e"] != 1 {
		t.Fatalf("pending counts = %v, %v", pc, err)
	}
}

// TestFirstAttemptOnTheLogRow: a delivery that ends at its first attempt keeps that attempt on its log row, and
// no row of attempts is written for it; every read shows the attempt as before. A delivery tried again keeps its
// attempts as rows, and a logged delivery moved back to the queue (Retry) takes its first attempt into attempts.
func TestFirstAttemptOnTheLogRow(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	evs := []store.NewEvent{ev("once", ""), ev("twice", ""), ev("failed", "")}
	for i := range evs {
		evs[i].Destinations, evs[i].Leased = []string{"a"}, []bool{true}
	}
	res, err := s.Append(ctx, evs, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	once, twice, failed := res[0].Deliveries[0].ID, res[1].Deliveries[0].ID, res[2].Deliveries[0].ID
	at := time.Now().UTC().Truncate(time.Microsecond)
	first := store.Attempt{N: 1, At: at, StatusCode: 204, Duration: 1500 * time.Microsecond, Response: []byte("ok")}
	if err := s.Complete(ctx, []store.Outcome{
		{DeliveryID: once, Status: store.Delivered, Attempt: first},
		{DeliveryID: twice, Status: store.Pending, NextAt: at, Attempt: store.Attempt{N: 1, At: at, StatusCode: 503, Error: "busy"}},
		{DeliveryID: failed, Status: store.Failed, Attempt: store.Attempt{N: 1, At: at, StatusCode: 410, Error: "gone"}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: twice, Status: store.Delivered, Attempt: store.Attempt{N: 2, At: at, StatusCode: 200}}}); err != nil {
		t.Fatal(err)
	}
	rows := func(id int64) (n int) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM attempts WHERE delivery_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if a, b, c := rows(once), rows(twice), rows(failed); a != 0 || b != 2 || c != 0 {
		t.Fatalf("rows of attempts: %d for the delivery ended at its first attempt, %d for the one tried twice, %d for the failed one; want 0, 2, 0", a, b, c)
	}
	want := map[int64]string{once: "[1:204:]", twice: "[1:503:busy 2:200:]", failed: "[1:410:gone]"}
	show := func(log []store.Attempt) string {
		out := make([]string, len(log))
		for i, a := range log {
			out[i] = fmt.Sprintf("%d:%d:%s", a.N, a.StatusCode, a.Error)
		}
		return fmt.Sprint(out)
	}
	for id, w := range want {
		d, err := s.Delivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := show(d.AttemptLog); got != w {
			t.Errorf("delivery %d shows attempts %s, want %s", id, got, w)
		}
	}
	d, _ := s.Delivery(ctx, once)
	if a := d.AttemptLog[0]; !a.At.Equal(at) || a.Duration != first.Duration || string(a.Response) != "ok" || a.DeliveryID != once {
		t.Errorf("the first attempt read back from the log row: %+v, want %+v", a, first)
	}
	rec, err := s.Event(ctx, "once")
	if err != nil || len(rec.Deliveries) != 1 || show(rec.Deliveries[0].AttemptLog) != want[once] {
		t.Fatalf("the event shows %+v (%v), want its delivery with attempts %s", rec, err, want[once])
	}

	// Retried, the delivery is back in the queue with its first attempt in attempts; its second attempt ends it.
	if _, err := s.Retry(ctx, once, at); err != nil {
		t.Fatal(err)
	}
	if n := rows(once); n != 1 {
		t.Fatalf("after a retry the delivery has %d rows of attempts, want its first", n)
	}
	if d, _ := s.Delivery(ctx, once); show(d.AttemptLog) != want[once] || d.Status != store.Pending {
		t.Fatalf("after a retry: %s with attempts %s, want pending with %s", d.Status, show(d.AttemptLog), want[once])
	}
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: once, Status: store.Delivered, Attempt: store.Attempt{N: 2, At: at, StatusCode: 200}}}); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Delivery(ctx, once); show(d.AttemptLog) != "[1:204: 2:200:]" || d.Status != store.Delivered || rows(once) != 2 {
		t.Fatalf("after its second attempt: %s with attempts %s (%d rows), want delivered with [1:204: 2:200:] in 2 rows", d.Status, show(d.AttemptLog), rows(once))
	}
}
