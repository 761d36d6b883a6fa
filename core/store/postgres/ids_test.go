package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// A database written before migration 0008 (delivery ids from their own sequence) keeps answering for its
// deliveries through the partial indexes the migration leaves for them, and its new deliveries take ids made
// from their events' seqs, above every old one.
func TestUpgradeToDeliveryIDs(t *testing.T) {
	ctx := context.Background()
	dsn, schema, conn := schemaAt(t, 7)
	now := time.Now()
	at := max(now.Add(-time.Minute).UnixNano(), dayStart(now.UnixNano())) // today, which has its partitions
	// As a store at migration 7 wrote them: "done" delivered (in the log), "open" pending, with ids from the
	// sequence (far along it, so the new numbering must start past them).
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO events (seq, tenant, id, topic, time, received_at, data) VALUES
		  (1, '', 'done', 't', $1, $1, '{}'), (2, '', 'open', 't', $1, $1, '{}')`, []any{at}},
		{`INSERT INTO event_ids (tenant, id, seq, received_at) VALUES ('', 'done', 1, $1), ('', 'open', 2, $1)`, []any{at}},
		{`INSERT INTO delivery_log (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at)
		  VALUES (999999, 1, 'done', 'a', 'delivered', 1, $1, $1, $1)`, []any{at}},
		{`INSERT INTO deliveries (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at)
		  VALUES (1000000, 2, 'open', 'a', 'pending', 0, $1, $1, $1)`, []any{at}},
		{`INSERT INTO pending_counts (destination, shard, n) VALUES ('a', 0, 1)`, nil},
		{`SELECT setval('events_seq_seq', 2), setval('deliveries_id_seq', 1000000)`, nil},
	} {
		if _, err := conn.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	// The store's clock stays at now, so the new event falls on the old ones' day whenever the test runs.
	c := newClock(now)
	s := openNode(t, dsn, schema, func(o *Options) { o.Now = c.Now })
	if want := int64(1000000>>idShift + 1); s.firstSeq != want {
		t.Fatalf("first seq after the migration = %d, want %d (the first whose ids lie above 1000000)", s.firstSeq, want)
	}
	var idx []string
	rows, err := s.pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE schemaname = $1
		AND tablename IN ('deliveries', 'delivery_log') AND indexname LIKE '%event%' ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		idx = append(idx, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"deliveries_event_before", "delivery_log_event_before"}; !slices.Equal(idx, want) {
		t.Fatalf("event indexes of the deliveries after the migration: %v, want %v", idx, want)
	}

	// The old deliveries, found by their events.
	for _, c := range []struct {
		event  string
		id     int64
		status store.Status
	}{{"done", 999999, store.Delivered}, {"open", 1000000, store.Pending}} {
		rec, err := s.Event(ctx, c.event)
		if err != nil || len(rec.Deliveries) != 1 || rec.Deliveries[0].ID != c.id || rec.Deliveries[0].Status != c.status {
			t.Fatalf("event %s after the migration: %+v, %v; want its delivery %d", c.event, rec, err, c.id)
		}
		list, err := s.ListDeliveries(ctx, store.DeliveryFilter{EventID: c.event})
		if err != nil || len(list) != 1 || list[0].ID != c.id {
			t.Fatalf("deliveries of event %s: %+v, %v; want %d", c.event, list, err, c.id)
		}
	}
	dup, err := s.Append(ctx, []store.NewEvent{ev("open", "")}, appendOpts)
	if err != nil || !dup[0].Duplicate || len(dup[0].Deliveries) != 1 || dup[0].Deliveries[0].ID != 1000000 {
		t.Fatalf("append of an old id = %+v, %v; want a duplicate answered with its delivery", dup, err)
	}

	// A new event: its seq is of the new numbering, and its deliveries' ids are made from it.
	res, err := s.Append(ctx, []store.NewEvent{ev("new", "")}, appendOpts)
	if err != nil || len(res[0].Deliveries) != 2 {
		t.Fatalf("append after the migration = %+v, %v", res, err)
	}
	var seq int64
	if err := s.pool.QueryRow(ctx, `SELECT seq FROM events WHERE id = 'new'`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	// (The duplicate above drew a seq too: the id claim draws one before it finds the id taken.)
	if seq < s.firstSeq || res[0].Deliveries[0].ID != deliveryID(seq, 0) || res[0].Deliveries[1].ID != deliveryID(seq, 1) {
		t.Fatalf("new event seq %d, deliveries %d and %d; want a seq from %d and ids made from it", seq, res[0].Deliveries[0].ID,
			res[0].Deliveries[1].ID, s.firstSeq)
	}
	if rec, err := s.Event(ctx, "new"); err != nil || len(rec.Deliveries) != 2 {
		t.Fatalf("new event: %+v, %v", rec, err)
	}
	// Whether a day's deliveries are pending, old and new alike.
	day := dayStart(at)
	held, err := s.held(ctx, day, &[]int64{1}[0], &[]int64{1}[0])
	if err != nil || held {
		t.Fatalf("held by the old delivered event: %v, %v", held, err)
	}
	for _, r := range [][2]int64{{2, 2}, {seq, seq}, {1, seq}} {
		if held, err := s.held(ctx, day, &r[0], &r[1]); err != nil || !held {
			t.Fatalf("held by seqs %v: %v, %v; want a pending delivery found", r, held, err)
		}
	}
	// Retention row by row: the delivered old event goes with its delivery; the pending one stays.
	if err := s.Complete(ctx, delivered(res)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, now.Add(time.Second), 10); err != nil || n != 2 {
		t.Fatalf("prune = %d, %v; want done and new", n, err)
	}
	if _, err := s.Delivery(ctx, 999999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the old delivered delivery after retention: %v, want not found", err)
	}
	if _, err := s.Delivery(ctx, res[0].Deliveries[1].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the new delivery after retention: %v, want not found", err)
	}
	if d, err := s.Delivery(ctx, 1000000); err != nil || d.Status != store.Pending {
		t.Fatalf("the old pending delivery after retention: %+v, %v", d, err)
	}

	// A node of the version before, still running, cannot make a delivery under an id of the new numbering.
	_, err = conn.Exec(ctx, `INSERT INTO deliveries (event_seq, event_id, destination, status, next_at, created_at, updated_at)
		VALUES (2, 'open', 'b', 'pending', $1, $1, $1)`, at)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23502" {
		t.Fatalf("an insert without an id: %v, want a not-null violation", err)
	}
}

// A database migrated while empty numbers from seq 1 and keeps no index for older events.
func TestFreshDeliveryIDs(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if s.firstSeq != 1 {
		t.Fatalf("first seq of a new database = %d, want 1", s.firstSeq)
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE '%event_before'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("indexes for older events in a new database: %d, %v", n, err)
	}
	res, err := s.Append(ctx, []store.NewEvent{ev("e1", ""), ev("e2", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		for j, d := range r.Deliveries {
			if want := deliveryID(int64(i+1), j); d.ID != want {
				t.Fatalf("event %d delivery %d: id %d, want %d", i, j, d.ID, want)
			}
		}
	}
}

// An event whose deliveries its ids cannot number is refused alone (store.ErrFanout, naming the limit), as a
// reused id is: nothing of it is stored, and the events beside it are.
func TestFanoutBound(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dests := make([]string, MaxFanout+1)
	for i := range dests {
		dests[i] = fmt.Sprint("d", i)
	}
	wide := store.NewEvent{Event: event.Event{ID: "wide", Topic: "t", Time: time.Now(), Data: []byte(`{}`)}, Destinations: dests}
	res, err := s.Append(ctx, []store.NewEvent{ev("ok", ""), wide, ev("ok2", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	if e := res[1].Err; !errors.Is(e, store.ErrFanout) || !strings.Contains(e.Error(), fmt.Sprint("at most ", MaxFanout)) ||
		!strings.Contains(e.Error(), `"wide"`) || len(res[1].Deliveries) != 0 {
		t.Fatalf("append of %d destinations: %+v; want it refused with the limit named", len(dests), res[1])
	}
	if res[0].Err != nil || len(res[0].Deliveries) != 2 || res[2].Err != nil || len(res[2].Deliveries) != 2 ||
		res[0].ID != "ok" || res[2].ID != "ok2" {
		t.Fatalf("the events beside it: %+v, %+v; want both stored", res[0], res[2])
	}
	page, err := s.ListEvents(ctx, store.EventFilter{})
	if err != nil || len(page) != 2 || page[0].Event.ID != "ok2" || page[1].Event.ID != "ok" {
		t.Fatalf("events stored: %+v, %v; want ok and ok2 only", page, err)
	}
	// Alone, it is refused without a statement; at the bound it goes in, its last delivery numbered just below
	// the next event's first.
	if res, err := s.Append(ctx, []store.NewEvent{wide}, appendOpts); err != nil || !errors.Is(res[0].Err, store.ErrFanout) {
		t.Fatalf("append of the wide event alone: %+v, %v", res, err)
	}
	res, err = s.Append(ctx, []store.NewEvent{{Event: wide.Event, Destinations: dests[:MaxFanout]}}, appendOpts)
	if err != nil || res[0].Err != nil || len(res[0].Deliveries) != MaxFanout {
		t.Fatalf("append of %d destinations: %v", MaxFanout, err)
	}
	var seq int64
	if err := s.pool.QueryRow(ctx, `SELECT seq FROM events WHERE id = 'wide'`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if last := res[0].Deliveries[MaxFanout-1].ID; last != deliveryID(seq+1, 0)-1 {
		t.Fatalf("last delivery of a full fan-out: %d, want %d", last, deliveryID(seq+1, 0)-1)
	}
}
