package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// probeSink records when each Send started and how many ran at once; answer decides each result.
type probeSink struct {
	mu       sync.Mutex
	starts   []time.Time
	inFlight int
	maxIn    int
	answer   func(id string, n int) error
	tries    map[string]int
	ok       map[string]bool
	hold     time.Duration
}

func newProbeSink(answer func(string, int) error) *probeSink {
	return &probeSink{answer: answer, tries: map[string]int{}, ok: map[string]bool{}}
}

func (p *probeSink) Send(ctx context.Context, batch []event.Event) error {
	p.mu.Lock()
	p.starts = append(p.starts, time.Now())
	p.inFlight++
	p.maxIn = max(p.maxIn, p.inFlight)
	id := batch[0].ID
	p.tries[id]++
	n := p.tries[id]
	p.mu.Unlock()
	time.Sleep(p.hold)
	err := p.answer(id, n)
	p.mu.Lock()
	p.inFlight--
	if err == nil {
		p.ok[id] = true
	}
	p.mu.Unlock()
	return err
}

func (p *probeSink) Close(context.Context) error { return nil }

func (p *probeSink) delivered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ok)
}

func TestRateLimit(t *testing.T) {
	sink := newProbeSink(func(string, int) error { return nil })
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink,
		Policy: Policy{Timeout: time.Second, Concurrency: 8, RatePerSecond: 50, Burst: 1}})
	r.publish("e", 20, "d")
	waitFor(t, "20 delivered", func() bool { return sink.delivered() == 20 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// 20 sends at 50/s with a burst of 1 cannot span less than 19 intervals of 20 ms.
	if span := sink.starts[len(sink.starts)-1].Sub(sink.starts[0]); span < 19*20*time.Millisecond-5*time.Millisecond {
		t.Fatalf("20 sends took %v; the 50/s limit allows no less than 380ms", span)
	}
}

// TestRetryAfterPausesLane: a 429 with Retry-After on one delivery holds back every delivery of the lane.
func TestRetryAfterPausesLane(t *testing.T) {
	var pausedAt time.Time
	var mu sync.Mutex
	sink := newProbeSink(func(id string, n int) error {
		if id == "e-0000" && n == 1 {
			mu.Lock()
			pausedAt = time.Now()
			mu.Unlock()
			return sinks.Retryable(errors.New("http 429"), 400*time.Millisecond)
		}
		return nil
	})
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Second, Concurrency: 1,
		Schedule: []time.Duration{time.Second, time.Second}}})
	r.publish("e", 1, "d")
	waitFor(t, "the 429", func() bool { mu.Lock(); defer mu.Unlock(); return !pausedAt.IsZero() })
	r.publish("f", 5, "d")
	waitFor(t, "all delivered", func() bool { return sink.delivered() == 6 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for _, s := range sink.starts[1:] {
		if s.Before(pausedAt.Add(400 * time.Millisecond)) {
			t.Fatalf("a send started %v after the 429; the lane must pause 400ms", s.Sub(pausedAt))
		}
	}
}

// TestBreaker: after a window in which 3 attempts all failed the lane sends one probe at a time; the first success closes it and
// the backlog flows again.
func TestBreaker(t *testing.T) {
	var mu sync.Mutex
	down := true
	sink := newProbeSink(func(string, int) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return sinks.Retryable(errors.New("connection refused"), 0)
		}
		return nil
	})
	sink.hold = 2 * time.Millisecond
	schedule := make([]time.Duration, 30)
	for i := range schedule {
		schedule[i] = 20 * time.Millisecond
	}
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Second, Concurrency: 8,
		Schedule: schedule, Breaker: quickBreaker(3)}})
	r.publish("e", 40, "d")
	l := r.disp.lanes["d"]
	waitFor(t, "the breaker to open", l.ctl.isOpen)
	// While open, sends come one at a time (once the attempts begun before it opened have ended).
	waitFor(t, "attempts begun before the breaker opened to end", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if sink.inFlight <= 1 {
			sink.maxIn = sink.inFlight
			return true
		}
		return false
	})
	time.Sleep(150 * time.Millisecond)
	sink.mu.Lock()
	probing := sink.maxIn
	sink.mu.Unlock()
	if probing > 1 {
		t.Fatalf("%d sends at once while the breaker was open; want one probe at a time", probing)
	}
	if !l.ctl.isOpen() {
		t.Fatal("the breaker closed without a success")
	}
	mu.Lock()
	down = false
	mu.Unlock()
	waitFor(t, "the backlog to drain after the breaker closed", func() bool { return sink.delivered() == 40 })
	if l.ctl.isOpen() {
		t.Fatal("the breaker is still open after successes")
	}
	for i := range 40 {
		rec := r.waitStatus(fmt.Sprintf("e-%04d", i), store.Delivered)
		if rec.Deliveries[0].Attempts > len(schedule)+1 {
			t.Fatalf("attempts %d", rec.Deliveries[0].Attempts)
		}
	}
}

// TestDeadBacklogDoesNotSlowHealthy: a destination that is down with a large backlog in the store (breaker
// open, retries pending) does not keep a healthy destination from receiving everything.
func TestDeadBacklogDoesNotSlowHealthy(t *testing.T) {
	dead := newProbeSink(func(string, int) error { return sinks.Retryable(errors.New("connection refused"), 0) })
	healthy := newProbeSink(func(string, int) error { return nil })
	r := newRig(t, t.TempDir(),
		Destination{Name: "dead", Sink: dead, Policy: Policy{Timeout: time.Second, Concurrency: 16,
			Schedule: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, time.Hour}, Breaker: quickBreaker(5)}},
		Destination{Name: "healthy", Sink: healthy, Policy: policy()})
	// 10,000 deliveries waiting for the dead destination, appended straight to the store.
	var batch []store.NewEvent
	for i := range 10000 {
		batch = append(batch, store.NewEvent{Event: event.Event{ID: fmt.Sprintf("b-%05d", i), Topic: "t", Data: []byte(`{}`)},
			Destinations: []string{"dead"}})
	}
	if _, err := r.st.Append(context.Background(), batch, store.AppendOptions{DedupeWindow: time.Hour}); err != nil {
		t.Fatal(err)
	}
	r.disp.lanes["dead"].poke()
	r.publish("e", 500, "dead", "healthy")
	waitFor(t, "the healthy destination to receive all 500", func() bool { return healthy.delivered() == 500 })
	if n := dead.delivered(); n != 0 {
		t.Fatalf("dead destination delivered %d", n)
	}
}

// TestBreakerProbeWithBatchingSink: with a batching, lingering sink the probe still goes alone and the lane
// recovers once the destination answers.
func TestBreakerProbeWithBatchingSink(t *testing.T) {
	var mu sync.Mutex
	down := true
	sink := &batchSink{got: map[string]int{}, tried: map[string]int{}, linger: 30 * time.Millisecond}
	gate := &gatedBatch{batchSink: sink, down: func() bool { mu.Lock(); defer mu.Unlock(); return down }}
	// Retries enough to outlast the window the breaker watches before it opens, at any speed (-race).
	schedule := make([]time.Duration, 30)
	for i := range schedule {
		schedule[i] = 20 * time.Millisecond
	}
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: gate, Policy: Policy{Timeout: time.Second, Concurrency: 4,
		Schedule: schedule, Breaker: quickBreaker(2)}})
	r.publish("e", 30, "d")
	waitFor(t, "the breaker to open", func() bool { return r.disp.BreakerOpen("d") })
	r.publish("f", 30, "d")
	mu.Lock()
	down = false
	mu.Unlock()
	waitFor(t, "all 60 delivered", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.got) == 60 })
	if r.disp.BreakerOpen("d") {
		t.Fatal("the breaker is still open after the destination answered")
	}
	if r.disp.BreakerOpen("unknown") {
		t.Fatal("an unknown destination reports an open breaker")
	}
}

type gatedBatch struct {
	*batchSink
	down func() bool
}

func (g *gatedBatch) Send(ctx context.Context, batch []event.Event) error {
	if g.down() {
		return sinks.Retryable(errors.New("connection refused"), 0)
	}
	return g.batchSink.Send(ctx, batch)
}

func TestShutdownTwice(t *testing.T) {
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: newFake(nil), Policy: policy()})
	if err := r.disp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.disp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// quickBreaker opens after a 100ms window in which at least n attempts all failed, and probes every 10ms.
func quickBreaker(n int) BreakerPolicy {
	return BreakerPolicy{Window: 100 * time.Millisecond, MinAttempts: n, FailureRatio: 1, ProbeInterval: 10 * time.Millisecond,
		MaxProbeInterval: 20 * time.Millisecond}
}
