package intake

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// recSink records what it was sent.
type recSink struct {
	mu  sync.Mutex
	got []event.Event
}

func (s *recSink) Send(_ context.Context, b []event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, b...)
	return nil
}
func (s *recSink) Close(context.Context) error { return nil }

func (s *recSink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.got {
		out = append(out, e.ID)
	}
	return out
}

type fixture struct {
	in    *Intake
	st    *embedded.Store
	disp  *dispatch.Dispatcher
	clock atomic.Int64 // unix nanos
	sinks sync.Map     // inline destination name → *recSink
	opts  Options
	once  sync.Once
}

// stop shuts the fixture down once (Dispatcher.Shutdown may not be called twice).
func (f *fixture) stop() {
	f.once.Do(func() {
		f.in.Close()
		_ = f.disp.Shutdown(context.Background())
		f.st.Close()
	})
}

// newFixture builds an intake over cfgYAML; tweak adjusts its options (inline subscriptions, catalog).
func newFixture(t *testing.T, dir, cfgYAML string, tweak func(*Options)) *fixture {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(cfgYAML), func(string) (string, bool) { return "", false }, sinks.NewRegistry(webhook.Spec))
	if err != nil {
		t.Fatal(err)
	}
	st, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st}
	f.clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, f.clock.Load()).UTC() }
	f.disp = dispatch.New(st, dispatch.Options{})
	var lanes []dispatch.Destination
	for _, d := range cfg.Destinations {
		lanes = append(lanes, dispatch.Destination{Name: d.Name, Sink: nopSink{}, Policy: dispatch.Policy{Timeout: time.Second}})
	}
	f.disp.Start(lanes)
	f.opts = Options{DedupeWindow: time.Hour, MaxBodyBytes: 1 << 20, Now: now, Topics: cfg.Topics, ValidateTopics: cfg.Intake.ValidateTopics,
		Inline: InlineOptions{TTL: time.Hour, MaxPerCorrelation: 2, Policy: dispatch.Policy{Timeout: time.Second},
			NewSink: func(sub store.Subscription) (sinks.Sink, error) {
				if strings.Contains(sub.URL, "bad") {
					return nil, errors.New("url: refused by the test")
				}
				s := &recSink{}
				f.sinks.Store(sub.Name, s)
				return s, nil
			}}}
	if tweak != nil {
		tweak(&f.opts)
	}
	f.in = New(st, f.disp, routerFor(cfg.Destinations), f.opts)
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) sink(name string) *recSink {
	s, _ := f.sinks.Load(name)
	r, _ := s.(*recSink)
	return r
}

func TestInlineSubscriptions(t *testing.T) {
	dir := t.TempDir()
	on := func(o *Options) { o.Inline.Enabled = true }
	f := newFixture(t, dir, testConfig, on)
	ctx := context.Background()
	if err := f.in.StartInline(ctx); err != nil {
		t.Fatal(err)
	}
	pub := func(body string) (Result, error) { return publishJSON(ctx, f.in, body) }
	sub := `"subscriptions":[{"url":"https://example.com/run","topics":["case.*"]}]`
	name := subscriptionName("run-1", "", "https://example.com/run", []string{"case.*"})

	res, err := pub(`{"id":"s1","topic":"case.created","correlation_id":"run-1","data":{},` + sub + `}`)
	if err != nil || res.Deliveries != 3 { // all, cases, the subscription
		t.Fatalf("register: %+v %v", res, err)
	}
	// Later events of the run reach it without carrying it; other runs, topics and tenants do not.
	for _, c := range []struct {
		body  string
		reach bool
	}{
		{`{"id":"s2","topic":"case.updated","correlation_id":"run-1","data":{}}`, true},
		{`{"id":"s3","topic":"user.created","correlation_id":"run-1","data":{}}`, false},
		{`{"id":"s4","topic":"case.updated","correlation_id":"run-2","data":{}}`, false},
		{`{"id":"s5","topic":"case.updated","correlation_id":"run-1","tenant":"acme","data":{}}`, false},
		{`{"id":"s6","topic":"case.updated","data":{}}`, false},
	} {
		if _, err := pub(c.body); err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
	}
	waitUntil(t, "the subscription's lane delivers s1 and s2", func() bool {
		s := f.sink(name)
		return s != nil && fmt.Sprint(s.ids()) == "[s1 s2]"
	})
	time.Sleep(50 * time.Millisecond)
	if got := fmt.Sprint(f.sink(name).ids()); got != "[s1 s2]" {
		t.Fatalf("subscription received %s", got)
	}

	// Sending the same subscription again is the same destination; the cap counts distinct ones.
	if _, err := pub(`{"topic":"case.x","correlation_id":"run-1","data":{},` + sub + `}`); err != nil {
		t.Fatalf("re-send: %v", err)
	}
	if _, err := pub(`{"topic":"case.x","correlation_id":"run-1","data":{},"subscriptions":[{"url":"https://example.com/2","topics":["*"]}]}`); err != nil {
		t.Fatalf("second: %v", err)
	}
	_, err = pub(`{"topic":"case.x","correlation_id":"run-1","data":{},"subscriptions":[{"url":"https://example.com/3","topics":["*"]}]}`)
	if !errors.Is(err, ErrLimit) || fieldOf(err) != "subscriptions[0]" {
		t.Fatalf("cap: %v", err)
	}
	subs, _ := f.st.Subscriptions(ctx)
	if len(subs) != 2 {
		t.Fatalf("stored %d subscriptions, want 2", len(subs))
	}

	for _, c := range []struct{ body, field string }{
		{`{"topic":"a","data":{},` + sub + `}`, "correlation_id"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://bad.example.com","topics":["*"]}]}`, "subscriptions[0]"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://x.example.com","topics":["a*"]}]}`, "subscriptions[0].topics"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"topics":["*"]}]}`, "subscriptions[0].url"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://x.example.com","topics":["*"],"colour":1}]}`, "subscriptions"},
	} {
		_, err := pub(c.body)
		if !errors.Is(err, ErrInvalid) || fieldOf(err) != c.field {
			t.Errorf("%s: %v, want invalid on %s", c.body, err, c.field)
		}
	}

	// A restart restores the subscriptions from the store.
	f.stop()
	var ended []string
	g := newFixture(t, dir, testConfig, func(o *Options) {
		on(o)
		o.Inline.OnEnded = func(name string) { ended = append(ended, name) }
	})
	g.clock.Store(f.clock.Load())
	if err := g.in.StartInline(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := publishJSON(ctx, g.in, `{"id":"s7","topic":"case.updated","correlation_id":"run-1","data":{}}`); err != nil || res.Deliveries != 4 {
		t.Fatalf("after restart: %+v %v", res, err)
	}
	waitUntil(t, "the restored subscription delivers s7", func() bool {
		s := g.sink(name)
		return s != nil && fmt.Sprint(s.ids()) == "[s7]"
	})

	// Past the TTL the subscription ends: no more routing, its row is gone.
	g.clock.Add(int64(2 * time.Hour))
	if res, err := publishJSON(ctx, g.in, `{"id":"s8","topic":"case.updated","correlation_id":"run-1","data":{}}`); err != nil || res.Deliveries != 2 {
		t.Fatalf("expired subscription still routed: %+v %v", res, err)
	}
	g.in.inline.expire(ctx)
	if subs, _ := g.st.Subscriptions(ctx); len(subs) != 0 {
		t.Fatalf("expired subscriptions still stored: %+v", subs)
	}
	if g.disp.Accepting(name) {
		t.Fatal("the expired subscription's lane still runs")
	}
	if !slices.Contains(ended, name) {
		t.Fatalf("OnEnded heard of %v, not of the expired %s", ended, name)
	}

	// With the feature off, subscriptions are refused.
	h := newFixture(t, t.TempDir(), testConfig, nil)
	if _, err := publishJSON(ctx, h.in, `{"topic":"a","correlation_id":"r","data":{},`+sub+`}`); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "inline_subscriptions.enabled") {
		t.Fatalf("off: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
