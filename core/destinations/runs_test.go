package destinations_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// publishJSON takes one JSON event the way every transport does: decode, admit (which hands its
// subscriptions to the manager), publish.
func publishJSON(s *stack, body string) (intake.Result, error) {
	ctx := context.Background()
	it, err := intake.DecodeEvent(ctx, []byte(body))
	if err == nil {
		err = s.in.Admit(ctx, &it, "")
	}
	if err != nil {
		return intake.Result{}, err
	}
	res, err := s.in.Publish(ctx, []event.Event{it.Event})
	if err != nil {
		return intake.Result{}, err
	}
	return res[0], res[0].Err
}

func fieldOf(err error) string {
	var e *intake.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// ids are the event ids a receiver got, in order.
func (r *receiver) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, h := range r.got {
		out = append(out, h.Get("webhook-id"))
	}
	return out
}

// distinct is the set of ids (at least once: a delivery may arrive twice).
func distinct(ids []string) map[string]bool {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return set
}

const runsOn = "intake: {inline_subscriptions: {enabled: true, ttl: 1h, max_per_correlation: 2}}\n"

// TestRunSubscriptions: per-run subscriptions are destinations of the manager, built like every other: an
// event registers them for its run, later events of the run reach them, a restart restores them, and past
// their TTL they end (lane stopped, row gone, OnRemoved told).
func TestRunSubscriptions(t *testing.T) {
	dir := t.TempDir()
	all, run, other := newReceiver(t, 204), newReceiver(t, 204), newReceiver(t, 204)
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	cfg := parse(t, dir, runsOn+fmt.Sprintf(base, testKey, "1h", 0, "1h", yamlDest("all", all.URL, "*")))
	s := startAt(t, dir, cfg, now)
	ctx := context.Background()

	sub := fmt.Sprintf(`"subscriptions":[{"url":%q,"topics":["case.*"]}]`, run.URL+"/run")
	name := destinations.SubscriptionName("run-1", "", run.URL+"/run", []string{"case.*"})
	res, err := publishJSON(s, `{"id":"s1","topic":"case.created","correlation_id":"run-1","data":{},`+sub+`}`)
	if err != nil || res.Deliveries != 2 { // all, the subscription
		t.Fatalf("register: %+v %v", res, err)
	}
	// Later events of the run reach it without carrying it; other runs, topics and tenants do not.
	for _, body := range []string{
		`{"id":"s2","topic":"case.updated","correlation_id":"run-1","data":{}}`,
		`{"id":"s3","topic":"user.created","correlation_id":"run-1","data":{}}`,
		`{"id":"s4","topic":"case.updated","correlation_id":"run-2","data":{}}`,
		`{"id":"s5","topic":"case.updated","correlation_id":"run-1","tenant":"acme","data":{}}`,
		`{"id":"s6","topic":"case.updated","data":{}}`,
	} {
		if _, err := publishJSON(s, body); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	}
	waitFor(t, "every event at the YAML destination", func() bool { return all.count("") == 6 })
	// The two go through one lane with no ordering key: either may arrive first.
	waitFor(t, "the subscription's lane delivers s1 and s2", func() bool {
		got := distinct(run.ids())
		return len(got) == 2 && got["s1"] && got["s2"]
	})

	// Sending the same subscription again is the same destination; the cap counts distinct ones.
	if _, err := publishJSON(s, `{"topic":"case.x","correlation_id":"run-1","data":{},`+sub+`}`); err != nil {
		t.Fatalf("re-send: %v", err)
	}
	second := fmt.Sprintf(`"subscriptions":[{"url":%q,"topics":["*"]}]`, other.URL+"/2")
	if _, err := publishJSON(s, `{"topic":"case.x","correlation_id":"run-1","data":{},`+second+`}`); err != nil {
		t.Fatalf("second: %v", err)
	}
	third := fmt.Sprintf(`"subscriptions":[{"url":%q,"topics":["*"]}]`, other.URL+"/3")
	_, err = publishJSON(s, `{"topic":"case.x","correlation_id":"run-1","data":{},`+third+`}`)
	if !errors.Is(err, intake.ErrLimit) || fieldOf(err) != "subscriptions[0]" {
		t.Fatalf("cap: %v", err)
	}
	if subs, _ := s.st.Subscriptions(ctx); len(subs) != 2 {
		t.Fatalf("stored %d subscriptions, want 2", len(subs))
	}
	// The SSRF guard refuses an address it would refuse for any destination, at registration.
	if _, err := publishJSON(s, `{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"http://10.1.2.3/hook","topics":["*"]}]}`); !errors.Is(err, intake.ErrInvalid) || fieldOf(err) != "subscriptions[0]" {
		t.Fatalf("guarded url: %v", err)
	}

	// A restart restores the subscriptions from the store.
	s.close()
	g := startAt(t, dir, cfg, now)
	if res, err := publishJSON(g, `{"id":"s7","topic":"case.updated","correlation_id":"run-1","data":{}}`); err != nil || res.Deliveries != 3 {
		t.Fatalf("after restart: %+v %v", res, err)
	}
	// The subscription had s1, s2 and the two case.x events that re-sent or added subscriptions.
	// (The two case.x events may still be on their way when s7 is: the order is not asserted.)
	waitFor(t, "the restored subscription delivers s7", func() bool { got := distinct(run.ids()); return len(got) == 5 && got["s7"] })

	// Past the TTL the subscription ends: no more routing, its row is gone, its lane stopped.
	clock.Add(int64(2 * time.Hour))
	if res, err := publishJSON(g, `{"id":"s8","topic":"case.updated","correlation_id":"run-1","data":{}}`); err != nil || res.Deliveries != 1 {
		t.Fatalf("expired subscription still routed: %+v %v", res, err)
	}
	g.mgr.ExpireRuns(ctx)
	if subs, _ := g.st.Subscriptions(ctx); len(subs) != 0 {
		t.Fatalf("expired subscriptions still stored: %+v", subs)
	}
	if g.disp.Accepting(name) {
		t.Fatal("the expired subscription's lane still runs")
	}
	g.mu.Lock()
	removed := slices.Clone(g.removed)
	g.mu.Unlock()
	if !slices.Contains(removed, name) {
		t.Fatalf("OnRemoved heard of %v, not of the expired %s", removed, name)
	}

	// With the feature off, subscriptions are refused.
	offDir := t.TempDir()
	h := start(t, offDir, conf(t, offDir, "1h", 0, "1h"))
	if _, err := publishJSON(h, `{"topic":"a","correlation_id":"r","data":{},`+sub+`}`); !errors.Is(err, intake.ErrInvalid) || !strings.Contains(err.Error(), "inline_subscriptions.enabled") {
		t.Fatalf("off: %v", err)
	}
}

// TestRunSecretSealedAtRest: a per-run subscription's signing secret is stored sealed under
// store.encryption_key, and after a restart its lane signs with the original secret.
func TestRunSecretSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	run := newReceiver(t, 204)
	cfg := parse(t, dir, runsOn+fmt.Sprintf(base, testKey, "1h", 0, "1h", ""))
	key := []byte(strings.Repeat("\x09", 32))
	s := start(t, dir, cfg, key)
	ctx := context.Background()
	if _, err := publishJSON(s, `{"topic":"case.created","correlation_id":"run-1","data":{},`+
		fmt.Sprintf(`"subscriptions":[{"url":%q,"topics":["case.*"],"secret":%q}]}`, run.URL+"/cb?token=qtoken-secret", secretA)); err != nil {
		t.Fatalf("register: %v", err)
	}
	subs, err := s.st.Subscriptions(ctx)
	if err != nil || len(subs) != 1 {
		t.Fatalf("stored subscriptions: %v %v", subs, err)
	}
	if !seal.IsSealed(subs[0].Secret) || strings.Contains(subs[0].Secret, strings.TrimPrefix(secretA, "whsec_")) {
		t.Fatalf("the stored secret is not sealed: %q", subs[0].Secret)
	}
	// A URL with a query value is a secret too (userinfo and query values are, wherever a URL is).
	if !seal.IsSealed(subs[0].URL) || strings.Contains(subs[0].URL, "qtoken-secret") {
		t.Fatalf("the stored url is not sealed: %q", subs[0].URL)
	}
	waitFor(t, "the first delivery", func() bool { return run.count("") == 1 })
	s.close()

	g := start(t, dir, cfg, key)
	if _, err := publishJSON(g, `{"topic":"case.updated","correlation_id":"run-1","data":{}}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a delivery after restart", func() bool { return run.count("") == 2 })
	h, body := run.last()
	if err := webhook.VerifyStandard([]string{secretA}, h, body, time.Minute); err != nil {
		t.Fatalf("after restart the subscription does not sign with its secret: %v", err)
	}
}

// TestIdleRunSubscriptionsAreCheap: thousands of per-run subscriptions, each registered by an event it then
// received, cost no goroutines once idle, and about a kilobyte or two of heap each (lane, sink, registry).
func TestIdleRunSubscriptionsAreCheap(t *testing.T) {
	if testing.Short() {
		t.Skip("registers thousands of subscriptions")
	}
	n := 2000
	if raceEnabled {
		n = 200
	}
	dir := t.TempDir()
	// A receiver that only counts: what it would keep of each request is not the subscriptions' cost.
	var got atomic.Int64
	run := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(run.Close)
	st, err := embedded.Open(filepath.Join(dir, "data"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rested := make(chan string, 4*n)
	disp := dispatch.New(st, dispatch.Options{Poll: 50 * time.Millisecond, IdleAfter: 20 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), OnIdle: func(name string) { rested <- name }})
	mgr := destinations.New(destinations.Options{Store: st, Dispatcher: disp, Lanes: lanes(), Logger: slog.New(slog.DiscardHandler)})
	in := intake.New(st, disp, nil, intake.Options{DedupeWindow: time.Hour, Subscriptions: mgr.Subscriptions()})
	cfg := parse(t, dir, "intake: {inline_subscriptions: {enabled: true, ttl: 1h}}\n"+fmt.Sprintf(base, testKey, "1h", 0, "1h", ""))
	if err := mgr.Start(context.Background(), cfg, in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); mgr.Close(); _ = disp.Shutdown(context.Background()); _ = st.Close() })
	s := &stack{in: in}

	// The runtime keeps ended goroutines' descriptors for reuse, never freeing them: run as many as the lanes
	// will at once first, so that cache is not counted against the subscriptions.
	warm := make(chan struct{})
	var ended sync.WaitGroup
	for range n * 20 {
		ended.Add(1)
		go func() { <-warm; ended.Done() }()
	}
	close(warm)
	ended.Wait()
	goroutines, heap := runtime.NumGoroutine(), heapInUse()
	for i := range n {
		body := fmt.Sprintf(`{"id":"e%d","topic":"case.created","correlation_id":"run-%d","data":{},"subscriptions":[{"url":%q,"topics":["*"]}]}`,
			i, i, fmt.Sprintf("%s/run/%d", run.URL, i))
		if _, err := publishJSON(s, body); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every event delivered", func() bool { return got.Load() == int64(n) })
	left := n
	for left > 0 {
		select {
		case <-rested:
			left--
		case <-time.After(time.Minute):
			t.Fatalf("%d subscriptions never went idle", left)
		}
	}
	// The last goroutine of each lane reports its rest as it ends, and the connections each sink dropped as
	// its lane went to rest end theirs (and the receiver's) as the close reaches them: eventually, none is left.
	waitFor(t, "idle subscriptions to keep no goroutines", func() bool { return runtime.NumGoroutine() <= goroutines+50 })
	per := (int64(heapInUse()) - int64(heap)) / int64(n)
	t.Logf("heap per idle subscription: %d bytes (lane, webhook sink, registry, the store's growth)", per)
	// The lane and registry take about 1.5 KB; the rest is the store holding 2,000 more events and rows.
	if per > 4096 && !raceEnabled {
		t.Fatalf("an idle subscription costs %d bytes of heap", per)
	}
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
