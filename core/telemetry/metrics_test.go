package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scrape fetches the handler's text output.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape answered %d: %s", rec.Code, rec.Body)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func mustContain(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("scrape lacks %q", l)
		}
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCountersAndHistogram(t *testing.T) {
	m := New(Options{})
	m.EventsAccepted(3)
	m.EventsAccepted(0)
	m.EventsAccepted(2)
	m.Observe("a", "delivered", 20*time.Millisecond)
	m.Observe("a", "delivered", 2*time.Second)
	m.Observe("a", "retry", 40*time.Second)
	m.Observe("b", "skipped", 0)
	out := scrape(t, m)
	mustContain(t, out,
		"sluice_events_accepted_total 5",
		`sluice_deliveries_total{destination="a",outcome="delivered"} 2`,
		`sluice_deliveries_total{destination="a",outcome="retry"} 1`,
		`sluice_deliveries_total{destination="b",outcome="skipped"} 1`,
		`sluice_delivery_duration_seconds_bucket{destination="a",le="0.001"} 0`,
		`sluice_delivery_duration_seconds_bucket{destination="a",le="0.025"} 1`,
		`sluice_delivery_duration_seconds_bucket{destination="a",le="2.5"} 2`,
		`sluice_delivery_duration_seconds_bucket{destination="a",le="30"} 2`,
		`sluice_delivery_duration_seconds_bucket{destination="a",le="+Inf"} 3`,
		`sluice_delivery_duration_seconds_count{destination="a"} 3`,
	)
	if strings.Contains(out, `sluice_delivery_duration_seconds_count{destination="b"}`) {
		t.Error("a skip has no attempt: it must not be timed")
	}
	// The Go and process collectors are registered too.
	if !strings.Contains(out, "\ngo_goroutines ") {
		t.Error("scrape lacks the Go collector")
	}
	if problems, err := testutil.GatherAndLint(m.Registry(), "sluice_events_accepted_total", "sluice_deliveries_total",
		"sluice_delivery_duration_seconds"); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}

	m.Forget("a")
	if out := scrape(t, m); strings.Contains(out, `destination="a"`) {
		t.Error("a forgotten destination still has series")
	}
}

func TestDestinationGauges(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	var mu sync.Mutex
	calls := 0
	pending := map[string]int64{"a": 7, "gone": 2}
	m := New(Options{
		Now: clock.now,
		Pending: func(context.Context) (map[string]int64, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			out := map[string]int64{}
			for k, v := range pending {
				out[k] = v
			}
			return out, nil
		},
		Destinations: func() map[string]bool { return map[string]bool{"a": true, "b": false} },
	})
	out := scrape(t, m)
	mustContain(t, out,
		`sluice_pending_deliveries{destination="a"} 7`,
		`sluice_pending_deliveries{destination="b"} 0`,    // known, nothing pending
		`sluice_pending_deliveries{destination="gone"} 2`, // no longer configured, still has work
		`sluice_destination_enabled{destination="a"} 1`,
		`sluice_destination_enabled{destination="b"} 0`,
	)

	// Within the cache period the store is not asked again.
	mu.Lock()
	pending["a"] = 1
	mu.Unlock()
	clock.advance(time.Second)
	mustContain(t, scrape(t, m), `sluice_pending_deliveries{destination="a"} 7`)
	if calls != 1 {
		t.Fatalf("store asked %d times within the cache period, want 1", calls)
	}
	clock.advance(2 * time.Second)
	mustContain(t, scrape(t, m), `sluice_pending_deliveries{destination="a"} 1`)
	if calls != 2 {
		t.Fatalf("store asked %d times, want 2 after the cache expired", calls)
	}
	if problems, err := testutil.GatherAndLint(m.Registry(), "sluice_pending_deliveries", "sluice_destination_enabled"); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestPendingErrorKeepsTheRest(t *testing.T) {
	m := New(Options{
		Logger:       slog.New(slog.DiscardHandler),
		Pending:      func(context.Context) (map[string]int64, error) { return nil, errors.New("store is down") },
		Destinations: func() map[string]bool { return map[string]bool{"a": true} },
	})
	m.EventsAccepted(1)
	out := scrape(t, m)
	mustContain(t, out, "sluice_events_accepted_total 1", `sluice_destination_enabled{destination="a"} 1`)
	if strings.Contains(out, "sluice_pending_deliveries{") {
		t.Error("pending counts shown although the store failed")
	}
}

// TestStoreCommits: the store's commits, the operations they carried and the time its writers spent on them
// are read at each scrape; without a store to read they are left out.
func TestStoreCommits(t *testing.T) {
	var commits, ops, busy atomic.Int64
	m := New(Options{Store: func() (int64, int64) { return commits.Load(), ops.Load() },
		StoreTime: func() time.Duration { return time.Duration(busy.Load()) }})
	mustContain(t, scrape(t, m), "sluice_store_commits_total 0", "sluice_store_operations_total 0",
		"sluice_store_commit_seconds_total 0")
	commits.Add(3)
	ops.Add(40)
	busy.Add(int64(1500 * time.Millisecond))
	mustContain(t, scrape(t, m), "sluice_store_commits_total 3", "sluice_store_operations_total 40",
		"sluice_store_commit_seconds_total 1.5")
	if problems, err := testutil.GatherAndLint(m.Registry(), "sluice_store_commits_total", "sluice_store_operations_total",
		"sluice_store_commit_seconds_total"); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	if out := scrape(t, New(Options{})); strings.Contains(out, "sluice_store_") {
		t.Error("store metrics shown without a store to read")
	}
}
