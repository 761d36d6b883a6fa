package intake

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
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

type fixture struct {
	in    *Intake
	st    *embedded.Store
	disp  *dispatch.Dispatcher
	clock atomic.Int64 // unix nanos
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

// newFixture builds an intake over cfgYAML; tweak adjusts its options.
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
	f.opts = Options{DedupeWindow: time.Hour, MaxBodyBytes: 1 << 20, Now: now, Topics: cfg.Topics, ValidateTopics: cfg.Intake.ValidateTopics}
	if tweak != nil {
		tweak(&f.opts)
	}
	f.in = New(st, f.disp, routerFor(cfg.Destinations), f.opts)
	t.Cleanup(f.stop)
	return f
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

func (s *recSink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.got {
		out = append(out, e.ID)
	}
	return out
}
