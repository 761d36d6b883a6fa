package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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

// clock is a settable store clock, so tests choose the received_at and created_at of what they append.
type clock struct{ n atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.n.Store(t.UnixNano()); return c }

func (c *clock) Now() time.Time          { return time.Unix(0, c.n.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.n.Add(int64(d)) }

func openClock(t *testing.T, dir string, c *clock) *Store {
	t.Helper()
	s, err := Open(dir, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func mustAppend(t *testing.T, s *Store, evs []store.NewEvent) []store.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), evs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return res
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
