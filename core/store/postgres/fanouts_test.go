package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// rowCount counts the rows of table in the test's schema.
func rowCount(t *testing.T, s *Store, table string) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func leasedEvents(prefix string, n int) []store.NewEvent {
	evs := make([]store.NewEvent, n)
	for i := range evs {
		evs[i] = ev(fmt.Sprintf("%s%d", prefix, i), "")
		evs[i].Leased = []bool{true, true}
	}
	return evs
}

// An event whose deliveries are all leased at birth is one fanouts row and no deliveries row; its deliveries
// read as pending everywhere (by id, by event, in lists, in the counters) until their outcomes close them: one
// that ended is a log row, one to be retried a deliveries row, and the fanouts row goes with the last.
func TestFanoutRowCarriesLeasedDeliveries(t *testing.T) {
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	evs := leasedEvents("f", 3)
	unleased := ev("rows", "")
	unleased.Leased = []bool{true, false} // not all leased at birth: rows, as before
	res, err := s.Append(ctx, append(evs, unleased), appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	if f, d := rowCount(t, s, "fanouts"), rowCount(t, s, "deliveries"); f != 3 || d != 2 {
		t.Fatalf("after appending: %d fanouts rows and %d deliveries rows, want 3 and 2", f, d)
	}
	for _, r := range res[:3] {
		for _, d := range r.Deliveries {
			got, err := s.Delivery(ctx, d.ID)
			if err != nil || got.Status != store.Pending || got.EventID != r.ID || got.Destination != d.Destination {
				t.Fatalf("Delivery(%d) = %+v, %v; want pending of %s to %s", d.ID, got, err, r.ID, d.Destination)
			}
		}
		rec, err := s.Event(ctx, r.ID)
		if err != nil || len(rec.Deliveries) != 2 || rec.Deliveries[0].ID != r.Deliveries[0].ID || rec.Deliveries[1].ID != r.Deliveries[1].ID {
			t.Fatalf("Event(%s) deliveries = %+v, %v; want %+v", r.ID, rec, err, r.Deliveries)
		}
	}
	list, err := s.ListDeliveries(ctx, store.DeliveryFilter{Status: store.Pending, Destinations: []string{"a"}})
	if err != nil || len(list) != 4 {
		t.Fatalf("pending deliveries to a: %d (%v), want 4", len(list), err)
	}
	if c, err := s.PendingCounts(ctx); err != nil || !maps.Equal(c, map[string]int64{"a": 4, "b": 4}) {
		t.Fatalf("pending counts %v, %v; want a 4, b 4", c, err)
	}

	// The first event: one delivered, one to be retried in a minute.
	now := time.Now()
	first := res[0].Deliveries
	outs := []store.Outcome{
		{DeliveryID: first[0].ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: now, StatusCode: 204}},
		{DeliveryID: first[1].ID, Status: store.Pending, NextAt: now.Add(time.Minute),
			Attempt: store.Attempt{N: 1, At: now, StatusCode: 503, Error: "HTTP 503"}},
	}
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	if f := rowCount(t, s, "fanouts"); f != 2 {
		t.Fatalf("%d fanouts rows after the first event's outcomes, want 2", f)
	}
	d0, err := s.Delivery(ctx, first[0].ID)
	if err != nil || d0.Status != store.Delivered || d0.Attempts != 1 || len(d0.AttemptLog) != 1 || d0.AttemptLog[0].StatusCode != 204 {
		t.Fatalf("delivered one: %+v, %v", d0, err)
	}
	d1, err := s.Delivery(ctx, first[1].ID)
	if err != nil || d1.Status != store.Pending || d1.Attempts != 1 || len(d1.AttemptLog) != 1 || d1.AttemptLog[0].StatusCode != 503 ||
		!d1.NextAt.Equal(fromNanos(nanos(now.Add(time.Minute)))) {
		t.Fatalf("retried one: %+v, %v", d1, err)
	}
	if c, _ := s.PendingCounts(ctx); !maps.Equal(c, map[string]int64{"a": 3, "b": 4}) {
		t.Fatalf("pending counts %v; want a 3, b 4", c)
	}
	// The rest, in two batches that split each event's entries.
	var as, bs []store.Outcome
	for _, r := range res[1:3] {
		d := delivered([]store.AppendResult{r})
		as, bs = append(as, d[0]), append(bs, d[1])
	}
	for _, batch := range [][]store.Outcome{as, bs} {
		if err := s.Complete(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if f := rowCount(t, s, "fanouts"); f != 0 {
		t.Fatalf("%d fanouts rows once every entry closed, want 0", f)
	}
	for _, r := range res[1:3] {
		for _, d := range r.Deliveries {
			if got, err := s.Delivery(ctx, d.ID); err != nil || got.Status != store.Delivered {
				t.Fatalf("Delivery(%d) = %+v, %v; want delivered", d.ID, got, err)
			}
		}
	}
	if c, _ := s.PendingCounts(ctx); !maps.Equal(c, map[string]int64{"a": 1, "b": 2}) {
		t.Fatalf("pending counts %v; want a 1, b 2 (the retry and the unleased event's)", c)
	}
}

// Acting on an open entry spills its fanouts row first: a retry by hand finds the delivery leased (ErrConflict)
// as a row, and the holder's outcomes, which then find no fanouts row, are recorded on the rows.
func TestFanoutSpilledBeforeItsOutcomes(t *testing.T) {
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	res, err := s.Append(ctx, leasedEvents("s", 2), appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	id := res[0].Deliveries[1].ID
	if _, err := s.Retry(ctx, id, time.Now()); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Retry of a delivery being attempted: %v, want ErrConflict", err)
	}
	if f, d := rowCount(t, s, "fanouts"), rowCount(t, s, "deliveries"); f != 1 || d != 2 {
		t.Fatalf("after the retry: %d fanouts rows and %d deliveries rows, want 1 and 2", f, d)
	}
	if err := s.Complete(ctx, delivered(res)); err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		for _, d := range r.Deliveries {
			got, err := s.Delivery(ctx, d.ID)
			if err != nil || got.Status != store.Delivered || len(got.AttemptLog) != 1 {
				t.Fatalf("Delivery(%d) = %+v, %v; want delivered with its attempt", d.ID, got, err)
			}
		}
	}
	if c, _ := s.PendingCounts(ctx); len(c) != 0 {
		t.Fatalf("pending counts %v, want none", c)
	}
	// Skipping a destination spills too: its open entries end skipped, the others stay the holder's.
	res, err = s.Append(ctx, leasedEvents("k", 1), appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.SkipPending(ctx, "a", "destination disabled"); err != nil || n != 1 {
		t.Fatalf("SkipPending = %d, %v; want 1", n, err)
	}
	if err := s.Complete(ctx, delivered(res)); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Delivery(ctx, res[0].Deliveries[0].ID)
	b, _ := s.Delivery(ctx, res[0].Deliveries[1].ID)
	if a == nil || b == nil || a.Status != store.Skipped || b.Status != store.Delivered {
		t.Fatalf("after skipping a: %+v and %+v, want skipped and delivered", a, b)
	}
}

// A node that dies holding fanouts rows leaves leases that run out; another node's claims then take their open
// entries, and the dead node's late outcomes record nothing once they are taken.
func TestDeadNodesFanoutsAreClaimed(t *testing.T) {
	dsn, schema := testSchema(t)
	ttl := func(o *Options) { o.LeaseTTL = time.Second }
	dead := openNode(t, dsn, schema, ttl)
	ctx := context.Background()
	res, err := dead.Append(ctx, leasedEvents("d", 2), appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	// It stops renewing without completing anything (the same rows a kill -9 leaves).
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	live := openNode(t, dsn, schema, ttl)
	var jobs []store.Job
	waitFor(t, "the dead node's deliveries to a to be claimable", func() bool {
		j, err := live.Claim(ctx, "a", time.Now(), time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j...)
		return len(jobs) >= 2
	})
	if len(jobs) != 2 || jobs[0].Delivery.ID != res[0].Deliveries[0].ID || jobs[1].Delivery.ID != res[1].Deliveries[0].ID {
		t.Fatalf("claimed %+v, want the deliveries to a of both events", jobs)
	}
	if jobs[0].Event.ID != "d0" || string(jobs[0].Event.Data) != `{"n":1}` {
		t.Fatalf("claimed job's event %+v, want d0 with its data", jobs[0].Event)
	}
	var outs []store.Outcome
	for _, j := range jobs {
		outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: time.Now(), StatusCode: 204}})
	}
	if err := live.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	// The entries to b were spilled with them and come back to a claim of b.
	waitFor(t, "the dead node's deliveries to b to be claimable", func() bool {
		j, err := live.Claim(ctx, "b", time.Now(), time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(j) == 2
	})
	if f := rowCount(t, live, "fanouts"); f != 0 {
		t.Fatalf("%d fanouts rows left after both nodes' work, want 0", f)
	}
	for _, r := range res {
		if got, _ := live.Delivery(ctx, r.Deliveries[0].ID); got == nil || got.Status != store.Delivered {
			t.Fatalf("delivery to a of %s: %+v, want delivered", r.ID, got)
		}
	}
}

// BenchmarkFanoutCycle measures the store's side of a fan-out to ten destinations leased at birth: appends of
// 25 events, then their 250 outcomes (delivered at the first attempt) in batches as the dispatcher writes
// them, per event. "fanouts" is the fanouts row, "rows" a deliveries row per destination. Run them interleaved
// (-bench 'FanoutCycle/(rows|fanouts)$' alternately, -count 1) on a machine left alone.
func BenchmarkFanoutCycle(b *testing.B) {
	for _, mode := range []string{"rows", "fanouts"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "rows" {
				defer func(m int) { fanoutMin = m }(fanoutMin)
				fanoutMin = 1 << 20
			}
			ctx := context.Background()
			dsn, schema := testSchema(b)
			s := openNode(b, dsn, schema, nil)
			dests := make([]string, 10)
			leased := make([]bool, 10)
			for i := range dests {
				dests[i], leased[i] = fmt.Sprintf("d%d", i), true
			}
			const group, batch = 25, 125
			n := 0
			b.ResetTimer()
			for range b.N {
				evs := make([]store.NewEvent, group)
				for j := range evs {
					evs[j] = ev(fmt.Sprint("e", n), "")
					evs[j].Destinations, evs[j].Leased = dests, leased
					n++
				}
				res, err := s.Append(ctx, evs, appendOpts)
				if err != nil {
					b.Fatal(err)
				}
				outs := delivered(res)
				for len(outs) > 0 {
					k := min(batch, len(outs))
					if err := s.Complete(ctx, outs[:k]); err != nil {
						b.Fatal(err)
					}
					outs = outs[k:]
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*group), "µs/event")
		})
	}
}

// Spills racing the holder's completions (other nodes' retries, skips and expiries do this) lose no outcome and
// record none twice: each delivery ends delivered once, with one log row, and nothing stays open or counted.
func TestFanoutSpillsRaceCompletions(t *testing.T) {
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, nil)
	ctx := context.Background()
	var res []store.AppendResult
	for b := range 10 {
		r, err := s.Append(ctx, leasedEvents(fmt.Sprintf("r%d-", b), 40), appendOpts)
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, r...)
	}
	seqs := make([]int64, len(res))
	for i, r := range res {
		seqs[i] = r.Deliveries[0].ID >> idShift
	}
	outs := delivered(res)
	done := make(chan error, 1)
	go func() {
		// Every third event's row is spilled, from the far end, while the completions come from the near end.
		for i := len(seqs) - 1; i >= 0; i -= 3 {
			if err := spill(ctx, s.pool, `f.event_seq = $1`, seqs[i]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for len(outs) > 0 {
		k := min(30, len(outs)) // batches that split events' entries
		if err := s.Complete(ctx, outs[:k]); err != nil {
			t.Fatal(err)
		}
		outs = outs[k:]
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f, d := rowCount(t, s, "fanouts"), rowCount(t, s, "deliveries WHERE status = 'pending'"); f != 0 || d != 0 {
		t.Fatalf("left open: %d fanouts rows, %d pending deliveries rows", f, d)
	}
	var logged, distinct int
	if err := s.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT id) FROM (
		SELECT id FROM delivery_log WHERE status = 'delivered' UNION ALL SELECT id FROM deliveries WHERE status = 'delivered') x`).
		Scan(&logged, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := 2 * len(res); logged != want || distinct != want {
		t.Fatalf("%d delivered rows (%d distinct), want %d", logged, distinct, want)
	}
	if c, err := s.PendingCounts(ctx); err != nil || len(c) != 0 {
		t.Fatalf("pending counts %v, %v; want none", c, err)
	}
}
