package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// newBudgetRig is newRig with the dispatcher's in-flight budget set.
func newBudgetRig(t *testing.T, budget *sinks.Budget, dests ...Destination) *rig {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := New(st, Options{Poll: 50 * time.Millisecond, Logger: quiet, InFlight: budget})
	d.Start(dests)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
		st.Close()
	})
	return &rig{t: t, st: st, disp: d}
}

// gateSink is a slow sink that is not a webhook: each Send waits until the test opens the gate, and notes
// the budget's bytes held while it is inside.
type gateSink struct {
	budget  *sinks.Budget
	gate    chan struct{}
	inside  atomic.Int32
	most    atomic.Int64 // the most bytes the budget held, seen from inside Send
	overrun atomic.Bool
}

func (g *gateSink) Send(ctx context.Context, batch []event.Event) error {
	g.inside.Add(1)
	defer g.inside.Add(-1)
	used, _ := g.budget.Used()
	if used > g.budget.Limit() {
		g.overrun.Store(true)
	}
	for m := g.most.Load(); used > m && !g.most.CompareAndSwap(m, used); m = g.most.Load() {
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (g *gateSink) Close(context.Context) error { return nil }

// TestInFlightBudgetCoversEverySink: with room for three attempts in the budget, three destinations of
// concurrency 4 behind a slow sink (not a webhook) have three attempts inside their sinks, the others wait
// for bytes; the bytes held never exceed the budget; once the sink answers, everything is delivered and every
// byte is returned.
func TestInFlightBudgetCoversEverySink(t *testing.T) {
	one := attemptBytes([]event.Event{{Data: json.RawMessage(`{}`)}})
	budget := sinks.NewBudget(3 * one)
	sink := &gateSink{budget: budget, gate: make(chan struct{})}
	var dests []Destination
	for _, n := range []string{"a", "b", "c"} {
		dests = append(dests, Destination{Name: n, Sink: sink, Policy: policy(time.Hour)})
	}
	r := newBudgetRig(t, budget, dests...)
	r.publish("e", 8, "a", "b", "c")
	waitFor(t, "three attempts inside the sink and others waiting for bytes", func() bool {
		_, waiting := budget.Used()
		return sink.inside.Load() == 3 && waiting > 0
	})
	if used, _ := budget.Used(); used != 3*one {
		t.Fatalf("%d bytes held by three attempts, want %d", used, 3*one)
	}
	close(sink.gate)
	for i := range 8 {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Delivered)
	}
	waitFor(t, "every byte returned", func() bool { used, _ := budget.Used(); return used == 0 })
	if sink.overrun.Load() || budget.Peak() > budget.Limit() || sink.most.Load() > budget.Limit() {
		t.Fatalf("held %d (peak %d) with a budget of %d", sink.most.Load(), budget.Peak(), budget.Limit())
	}
	if budget.Peak() != 3*one {
		t.Fatalf("peak %d, want the three attempts' %d", budget.Peak(), 3*one)
	}
}

// TestInFlightBudgetWebhook: the real webhook sink is held by the same budget, once (it no longer counts the
// bytes itself): with room for one attempt, a second destination's attempt waits, without reaching its
// receiver, until the first one's answer has been read.
func TestInFlightBudgetWebhook(t *testing.T) {
	var arrived atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	defer open()
	newHook := func(name string) sinks.Sink {
		c := webhook.NewConfig()
		c.URL, c.Signing = srv.URL, webhook.SigningNone
		s, err := webhook.New(context.Background(), c, sinks.Env{Destination: name})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	one := attemptBytes([]event.Event{{Data: json.RawMessage(`{}`)}})
	budget := sinks.NewBudget(one)
	r := newBudgetRig(t, budget,
		Destination{Name: "a", Sink: newHook("a"), Policy: policy(time.Hour)},
		Destination{Name: "b", Sink: newHook("b"), Policy: policy(time.Hour)})
	r.publish("e", 1, "a", "b")
	waitFor(t, "one request at the receiver and one attempt waiting for bytes", func() bool {
		_, waiting := budget.Used()
		return arrived.Load() == 1 && waiting == 1
	})
	if n := arrived.Load(); n != 1 {
		t.Fatalf("%d requests reached the receiver with room for one", n)
	}
	open()
	r.waitStatus("e-0000", store.Delivered)
	if n := arrived.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	waitFor(t, "every byte returned", func() bool { used, _ := budget.Used(); return used == 0 })
	if p := budget.Peak(); p != one {
		t.Fatalf("peak %d, want one attempt's %d", p, one)
	}
}

// TestInFlightBudgetWaitEndsWithTheLane: a lane stopped while its attempt waits for bytes hands the delivery
// back (nothing sent, nothing failed), and a later lane delivers it.
func TestInFlightBudgetWaitEndsWithTheLane(t *testing.T) {
	budget := sinks.NewBudget(1)
	held, err := budget.Acquire(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	sink := newFake(nil)
	r := newBudgetRig(t, budget, Destination{Name: "d", Sink: sink, Policy: policy(time.Hour)})
	r.publish("e", 1, "d")
	waitFor(t, "the attempt waiting for bytes", func() bool { _, w := budget.Used(); return w == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.disp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if sink.delivered() != 0 {
		t.Fatal("sent while the budget was spent")
	}
	rec, err := r.st.Event(context.Background(), "e-0000")
	if err != nil || rec.Deliveries[0].Status != store.Pending || len(rec.Deliveries[0].AttemptLog) != 0 {
		t.Fatalf("after a stop while waiting: %+v %v, want pending without attempts", rec, err)
	}
	budget.Release(held)
}
