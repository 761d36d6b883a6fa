package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newEvent(id string) event.Event {
	return event.Event{ID: id, Topic: "case.created", Time: time.Now().UTC(), Tenant: "acme",
		Metadata: map[string]string{"m": "1"}, Data: json.RawMessage(`{"case":{"id":"c-1"}}`)}
}

var opts = store.AppendOptions{DedupeWindow: time.Hour, Lease: time.Hour}

func TestAppendDedupeAndRead(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	res, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("e1"), Destinations: []string{"a", "b"}, Leased: []bool{true, false}}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Duplicate || len(res[0].Deliveries) != 2 {
		t.Fatalf("first append: %+v", res[0])
	}
	again, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("e1"), Destinations: []string{"a"}}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !again[0].Duplicate || len(again[0].Deliveries) != 2 {
		t.Fatalf("second append must be a duplicate answering the original's deliveries: %+v", again[0])
	}
	rec, err := s.Event(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Event.Topic != "case.created" || rec.Event.Metadata["m"] != "1" || string(rec.Event.Data) != `{"case":{"id":"c-1"}}` || len(rec.Deliveries) != 2 {
		t.Fatalf("read back %+v", rec)
	}
	if _, err := s.Event(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestIDReusedOutsideWindow(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	s, err := Open(t.TempDir(), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("old")}}, opts); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	res, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("old")}, {Event: newEvent("new")}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, store.ErrIDReused) || res[0].Duplicate {
		t.Fatalf("reuse outside window: %+v", res[0])
	}
	if res[1].Err != nil || res[1].Duplicate {
		t.Fatalf("the other event of the call must be stored: %+v", res[1])
	}
}

func TestClaimLeaseCompleteRelease(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	var evs []store.NewEvent
	for i := range 5 {
		evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprint("e", i)), Destinations: []string{"d"}, Leased: []bool{i == 0}})
	}
	if _, err := s.Append(ctx, evs, opts); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	jobs, err := s.Claim(ctx, "d", now, time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 4 {
		t.Fatalf("claimed %d, want 4 (the leased-at-birth one is not claimable)", len(jobs))
	}
	if jobs[0].Event.ID == "" || string(jobs[0].Event.Data) == "" || jobs[0].Event.Metadata["m"] != "1" {
		t.Fatalf("claimed job lacks its event: %+v", jobs[0])
	}
	if more, _ := s.Claim(ctx, "d", now, time.Minute, 10); len(more) != 0 {
		t.Fatalf("claimed %d already-leased deliveries", len(more))
	}
	// One delivered, one retried in the future, one failed; the fourth stays leased.
	retryAt := now.Add(30 * time.Second)
	err = s.Complete(ctx, []store.Outcome{
		{DeliveryID: jobs[0].Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: now, StatusCode: 204}},
		{DeliveryID: jobs[1].Delivery.ID, Status: store.Pending, NextAt: retryAt, Attempt: store.Attempt{N: 1, At: now, StatusCode: 503, Error: "http 503", Response: []byte("busy")}},
		{DeliveryID: jobs[2].Delivery.ID, Status: store.Failed, Attempt: store.Attempt{N: 1, At: now, StatusCode: 400, Error: "http 400"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	next, ok, err := s.NextDue(ctx, "d")
	if err != nil || !ok || !next.Equal(retryAt.Truncate(0).UTC()) && next.UnixNano() != retryAt.UnixNano() {
		t.Fatalf("next due = %v %v %v, want %v", next, ok, err, retryAt)
	}
	if got, _ := s.Claim(ctx, "d", retryAt, time.Minute, 10); len(got) != 1 || got[0].Delivery.Attempts != 1 {
		t.Fatalf("retry claim: %+v", got)
	}
	// After a crash every lease is released.
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Claim(ctx, "d", time.Now(), time.Minute, 10)
	if len(got) != 3 {
		t.Fatalf("after release claimed %d, want 3 (birth-leased, un-completed, retried)", len(got))
	}
	rec, _ := s.Event(ctx, jobs[1].Event.ID)
	if a := rec.Deliveries[0].AttemptLog; len(a) != 1 || a[0].StatusCode != 503 || string(a[0].Response) != "busy" {
		t.Fatalf("attempt log %+v", a)
	}
	// Completing a delivery that is no longer pending changes nothing.
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: jobs[0].Delivery.ID, Status: store.Failed, Attempt: store.Attempt{N: 2}}}); err != nil {
		t.Fatal(err)
	}
	rec, _ = s.Event(ctx, jobs[0].Event.ID)
	if d := rec.Deliveries[0]; d.Status != store.Delivered || len(d.AttemptLog) != 1 {
		t.Fatalf("a delivered delivery was changed: %+v", d)
	}
	n, err := s.SkipPending(ctx, "d", "disabled")
	if err != nil || n != 3 {
		t.Fatalf("skip pending = %d %v", n, err)
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	const publishers, each = 32, 50
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ev := newEvent(fmt.Sprintf("p%d-%d", p, i))
				if _, err := s.Append(ctx, []store.NewEvent{{Event: ev, Destinations: []string{"a"}}}, opts); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	commits, ops := s.Stats()
	if ops != publishers*each {
		t.Fatalf("ops = %d, want %d", ops, publishers*each)
	}
	// With 32 concurrent publishers, commits must be shared; one commit per event would mean no group commit.
	if commits >= ops/2 {
		t.Fatalf("%d commits for %d appends: concurrent appends are not sharing commits", commits, ops)
	}
	t.Logf("%d appends in %d commits (%.1f per fsync)", ops, commits, float64(ops)/float64(commits))
}

func TestDurableAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("keep"), Destinations: []string{"d"}, Leased: []bool{true}}}, opts); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Claim(ctx, "d", time.Now(), time.Minute, 10)
	if err != nil || len(jobs) != 1 || jobs[0].Event.ID != "keep" {
		t.Fatalf("after reopen: %+v %v", jobs, err)
	}
}

func BenchmarkAppendParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var n sync.Mutex
	i := 0
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Lock()
			i++
			id := fmt.Sprint("b", i)
			n.Unlock()
			if _, err := s.Append(ctx, []store.NewEvent{{Event: newEvent(id), Destinations: []string{"a"}, Leased: []bool{true}}}, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	commits, ops := s.Stats()
	b.ReportMetric(float64(ops)/float64(max(commits, 1)), "events/fsync")
}

// TestFailingOperationSparesItsGroup runs a failing write among concurrent appends: only it fails, and what it
// wrote before failing is not kept.
func TestFailingOperationSparesItsGroup(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 20 {
				errs[i] = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO events (id, topic, time, received_at, data) VALUES ('poison','t',0,0,x'00')`); err != nil {
						return err
					}
					return errors.New("boom")
				})
				return
			}
			_, errs[i] = s.Append(ctx, []store.NewEvent{{Event: newEvent(fmt.Sprint("g", i))}}, opts)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i == 20) != (err != nil) {
			t.Fatalf("op %d: err = %v", i, err)
		}
	}
	if _, err := s.Event(ctx, "poison"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the failed operation's write was kept: %v", err)
	}
	for i := range errs {
		if i != 20 {
			if _, err := s.Event(ctx, fmt.Sprint("g", i)); err != nil {
				t.Fatalf("event g%d lost: %v", i, err)
			}
		}
	}
}
