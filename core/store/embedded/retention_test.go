package embedded

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// TestRetentionBesideIntake prunes a large table of old, delivered events while appends and completions keep
// coming, and checks that they made progress while pruning was under way (not how fast: no timing), that
// every old event is gone, and that no new one was touched.
func TestRetentionBesideIntake(t *testing.T) {
	oldEvents := 200_000
	if testing.Short() || raceEnabled {
		oldEvents = 20_000 // the race detector makes the pure-Go SQLite ~10x slower; the shape is the same
	}
	const batch = 500
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)

	// Build the old table fast: big Appends, each followed by one Complete of its deliveries.
	for start := 0; start < oldEvents; start += 2000 {
		evs := make([]store.NewEvent, 0, 2000)
		for i := start; i < min(start+2000, oldEvents); i++ {
			evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprint("old-", i)), Destinations: []string{"d"}})
		}
		res := mustAppend(t, s, evs)
		outs := make([]store.Outcome, 0, len(res))
		for _, r := range res {
			outs = append(outs, store.Outcome{DeliveryID: r.Deliveries[0].ID, Status: store.Delivered,
				Attempt: store.Attempt{N: 1, At: c.Now(), StatusCode: 204}})
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	const retention = 168 * time.Hour
	c.Advance(retention + 24*time.Hour)
	cutoff := c.Now().Add(-retention)

	// Intake: appends new events and completes half of them, until told to stop.
	var appended, completed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var evs []store.NewEvent
			for j := range 10 {
				evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprintf("new-%d-%d", i, j)), Destinations: []string{"d"}})
			}
			res, err := s.Append(ctx, evs, opts)
			if err != nil {
				t.Error(err)
				return
			}
			appended.Add(int64(len(res)))
			var outs []store.Outcome
			for _, r := range res[:5] {
				outs = append(outs, store.Outcome{DeliveryID: r.Deliveries[0].ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}})
			}
			if err := s.Complete(ctx, outs); err != nil {
				t.Error(err)
				return
			}
			completed.Add(int64(len(outs)))
		}
	}()

	// Retention, recording intake's counters at its first and last batch.
	var (
		mu                            sync.Mutex
		batches, pruned               int
		appendsFirst, appendsLast     int64
		completesFirst, completesLast int64
	)
	done := make(chan struct{})
	rctx, cancel := context.WithCancel(ctx)
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		store.RunRetention(rctx, s, retention, store.RetentionOptions{Every: time.Hour, Batch: batch, Pause: time.Millisecond, Now: c.Now,
			OnPruned: func(n int) {
				mu.Lock()
				defer mu.Unlock()
				batches++
				pruned += n
				if batches == 1 {
					appendsFirst, completesFirst = appended.Load(), completed.Load()
				}
				appendsLast, completesLast = appended.Load(), completed.Load()
				if pruned == oldEvents {
					close(done)
				}
			}})
	}()
	<-done
	close(stop)
	wg.Wait()
	cancel()
	<-rdone

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d old events pruned in %d batches; meanwhile %d events appended and %d deliveries completed",
		pruned, batches, appendsLast-appendsFirst, completesLast-completesFirst)
	if batches < oldEvents/batch {
		t.Fatalf("%d batches, want at least %d", batches, oldEvents/batch)
	}
	if appendsLast-appendsFirst <= 0 || completesLast-completesFirst <= 0 {
		t.Fatalf("intake stalled while pruning: %d appends and %d completions between the first and last batch",
			appendsLast-appendsFirst, completesLast-completesFirst)
	}
	var old, events, deliveries, attempts int64
	for q, v := range map[string]*int64{
		`SELECT count(*) FROM events WHERE received_at < ?`: &old,
	} {
		if err := s.rdb.QueryRow(q, nanos(cutoff)).Scan(v); err != nil {
			t.Fatal(err)
		}
	}
	for q, v := range map[string]*int64{
		`SELECT count(*) FROM events`:     &events,
		`SELECT count(*) FROM deliveries`: &deliveries,
		attemptsCount:                     &attempts,
	} {
		if err := s.rdb.QueryRow(q).Scan(v); err != nil {
			t.Fatal(err)
		}
	}
	if old != 0 {
		t.Fatalf("%d old events survived retention", old)
	}
	if n := appended.Load(); events != n || deliveries != n || attempts != completed.Load() {
		t.Fatalf("new data was pruned: %d events, %d deliveries, %d attempts left; appended %d, completed %d",
			events, deliveries, attempts, n, completed.Load())
	}
}

// TestPruneLeavesNoOrphans: Prune removes an event's deliveries and attempts with it, leaving no row behind
// (the suite can only see what the API shows; this looks at the tables).
func TestPruneLeavesNoOrphans(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	res := mustAppend(t, s, []store.NewEvent{
		{Event: newEvent("a"), Destinations: []string{"d", "e"}},
		{Event: newEvent("b"), Destinations: []string{"d"}},
		{Event: newEvent("keep"), Destinations: []string{"d"}},
	})
	// Two attempts each, so both the first (on the delivery row) and a later one (a row of attempts) are kept.
	for n := 1; n <= 2; n++ {
		var outs []store.Outcome
		for _, r := range res[:2] {
			for _, d := range r.Deliveries {
				st := store.Failed
				if n == 1 {
					st = store.Pending
				}
				outs = append(outs, store.Outcome{DeliveryID: d.ID, Status: st, NextAt: c.Now(), Attempt: store.Attempt{N: n, At: c.Now(), Error: "x"}})
			}
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	if n := countAttempts(t, s); n != 6 {
		t.Fatalf("%d attempts recorded, want 6", n)
	}
	keep := res[2].Deliveries[0].ID
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: keep, Status: store.Pending, NextAt: c.Now(), Attempt: store.Attempt{N: 1, At: c.Now()}}}); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	if n, err := s.Prune(ctx, c.Now(), 0); err != nil || n != 2 {
		t.Fatalf("Prune = %d %v, want 2", n, err)
	}
	var events, deliveries, attempts int
	for q, v := range map[string]*int{
		`SELECT count(*) FROM events`:     &events,
		`SELECT count(*) FROM deliveries`: &deliveries,
		attemptsCount:                     &attempts,
	} {
		if err := s.rdb.QueryRow(q).Scan(v); err != nil {
			t.Fatal(err)
		}
	}
	if events != 1 || deliveries != 1 || attempts != 1 {
		t.Fatalf("%d events, %d deliveries, %d attempts left; want 1 each (the pending one's)", events, deliveries, attempts)
	}
}

// attemptsCount counts recorded attempts: the first ones kept on delivery rows and the rows of attempts.
const attemptsCount = `SELECT (SELECT count(*) FROM attempts) + (SELECT count(*) FROM deliveries WHERE a1_at IS NOT NULL)`

func countAttempts(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow(attemptsCount).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPruneThroughClockSteps: retention walks events by seq below a bound it finds by bisection, trusting
// received_at to grow with seq. Clock steps may delay an event's removal but never remove one too young or
// still pending, and an event stamped in the future (the clock ran ahead, then was set back) must not hold
// back the old events after it: here it sits where the bisection looks first.
func TestPruneThroughClockSteps(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	var all []store.AppendResult
	appendAt := func(at time.Time, ids ...string) {
		t.Helper()
		c.n.Store(at.UnixNano())
		for _, id := range ids {
			all = append(all, mustAppend(t, s, []store.NewEvent{{Event: newEvent(id), Destinations: []string{"d"}}})...)
		}
	}
	appendAt(t0, "a1", "a2", "a3", "a4", "a5", "a6", "held")
	appendAt(t0.Add(365*24*time.Hour), "future")
	appendAt(t0.Add(time.Minute), "b1", "b2", "b3", "b4")
	appendAt(t0.Add(2*time.Hour), "y1", "y2")
	appendAt(t0.Add(-time.Hour), "dip")
	var outs []store.Outcome
	var held int64
	for _, r := range all {
		if r.ID == "held" {
			held = r.Deliveries[0].ID
			continue
		}
		outs = append(outs, store.Outcome{DeliveryID: r.Deliveries[0].ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}})
	}
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	var first, last, future int64
	if err := s.rdb.QueryRow(`SELECT min(seq), max(seq), (SELECT seq FROM events WHERE id = 'future') FROM events`).Scan(&first, &last, &future); err != nil {
		t.Fatal(err)
	}
	if mid := first + (last+1-first)/2; future != mid {
		t.Fatalf("the future event is at seq %d, not where the bisection looks first (%d)", future, mid)
	}
	left := func() []string {
		t.Helper()
		rows, err := s.rdb.Query(`SELECT id FROM events ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}

	// An hour's retention, three hours on: the a and b events go; held is pending, y young, future ahead;
	// dip, old but stamped after the young ones, may wait.
	c.n.Store(t0.Add(3 * time.Hour).UnixNano())
	if n, err := s.Prune(ctx, t0.Add(time.Hour), 0); err != nil || n != 10 {
		t.Fatalf("Prune = %d %v, want the 10 a and b events; left %v", n, err, left())
	}
	if got, want := left(), []string{"held", "future", "y1", "y2", "dip"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("left after the first Prune: %v, want %v", got, want)
	}
	// Once the young ones are old, they go and so does dip; held stays pending, future stays ahead.
	c.n.Store(t0.Add(6 * time.Hour).UnixNano())
	if n, err := s.Prune(ctx, t0.Add(5*time.Hour), 0); err != nil || n != 3 {
		t.Fatalf("Prune = %d %v, want y1, y2 and dip; left %v", n, err, left())
	}
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: held, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, t0.Add(5*time.Hour), 0); err != nil || n != 1 {
		t.Fatalf("Prune = %d %v, want held now that it ended; left %v", n, err, left())
	}
	if got, want := left(), []string{"future"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("left: %v, want %v", got, want)
	}
}
