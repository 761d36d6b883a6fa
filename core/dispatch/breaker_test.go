package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
)

// defaultBreaker is the documented default: 30s window, 20 attempts, 80% failing, probes 5s doubling to 30s.
var defaultBreaker = BreakerPolicy{Window: 30 * time.Second, MinAttempts: 20, FailureRatio: 0.8,
	ProbeInterval: 5 * time.Second, MaxProbeInterval: 30 * time.Second}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// watched returns a control that has watched its destination for a whole window, and a time when the window
// holds exactly one attempt, a success.
func watched(b BreakerPolicy) (*control, time.Time) {
	c := newControl(Policy{Breaker: b})
	c.record(false, 1, 0, t0)
	c.record(false, 1, 0, t0.Add(b.Window-time.Millisecond))
	return c, t0.Add(b.Window + time.Second)
}

func TestBreakerOpensAtRatioOverWindow(t *testing.T) {
	c, now := watched(defaultBreaker)
	c.record(false, 3, 0, now)
	// 4 successes then failures: the 16th makes 16 of 20 (0.8) and opens it, not the 15th (15 of 19).
	for k := 1; k <= 16; k++ {
		changed := c.record(false, 0, 1, now.Add(time.Duration(k)*time.Millisecond))
		if k < 16 && (changed || c.isOpen()) {
			t.Fatalf("open after %d failures and 4 successes; want open at 16 of 20 (0.8)", k)
		}
		if k == 16 && (!changed || !c.isOpen()) {
			t.Fatal("not open at 16 failures of 20 attempts (ratio 0.8)")
		}
	}
}

func TestBreakerOldAttemptsLeaveTheWindow(t *testing.T) {
	c, now := watched(defaultBreaker)
	// 100 successes, then 25s later 30 failures: 30 of 130 is far below 0.8 while the successes are in the window.
	c.record(false, 100, 0, now)
	c.record(false, 0, 30, now.Add(25*time.Second))
	if c.isOpen() {
		t.Fatal("open at 30 failures of 130 attempts")
	}
	// Once the successes are older than the window, the next failure sees only failures.
	c.record(false, 0, 1, now.Add(31*time.Second))
	if !c.isOpen() {
		t.Fatal("not open when every attempt in the last 30s failed")
	}
}

func TestBreakerNeedsMinAttempts(t *testing.T) {
	c, now := watched(defaultBreaker)
	for k := range 18 {
		c.record(false, 0, 1, now.Add(time.Duration(k)*time.Second))
	}
	if c.isOpen() {
		t.Fatal("open after 19 attempts (18 failed); min_attempts is 20")
	}
	c.record(false, 0, 1, now.Add(18*time.Second))
	if !c.isOpen() {
		t.Fatal("not open after 20 failed attempts in the window")
	}
}

func TestBreakerWaitsAfterQuiet(t *testing.T) {
	// A lane idle for longer than a window watches again: a burst of failures after the quiet spell is judged
	// only once a whole window of it has been seen.
	c, now := watched(defaultBreaker)
	now = now.Add(time.Hour)
	c.record(false, 0, 50, now)
	if c.isOpen() {
		t.Fatal("opened on a burst right after an hour without attempts")
	}
	for k := 1; k <= 30; k++ {
		c.record(false, 0, 1, now.Add(time.Duration(k)*time.Second))
		if open := c.isOpen(); open != (k == 30) {
			t.Fatalf("%ds after the burst: open %v; want it to open once a whole window (30s) was watched", k, open)
		}
	}
}

func TestBreakerWaitsForOneWholeWindow(t *testing.T) {
	// A new lane whose first 100 attempts fail within its first window does not open yet: their retries are
	// not due; one window after it began watching, failures still at 0.8 open it.
	c := newControl(Policy{Breaker: defaultBreaker})
	for k := range 100 {
		c.record(false, 0, 1, t0.Add(time.Duration(k)*100*time.Millisecond))
	}
	if c.isOpen() {
		t.Fatal("opened within the lane's first window")
	}
	c.record(false, 0, 1, t0.Add(defaultBreaker.Window))
	if !c.isOpen() {
		t.Fatal("not open after a whole window of failures")
	}
}

// TestBreakerFirstAttemptFailures: a receiver that answers 503 to each event's first attempt and 2xx to its
// retry (5s later), at 100 events a second for 10 minutes, never opens the breaker: half the attempts fail.
func TestBreakerFirstAttemptFailures(t *testing.T) {
	c := newControl(Policy{Breaker: defaultBreaker})
	const perTick, tick, retry = 1, 10 * time.Millisecond, 5 * time.Second
	for now := t0; now.Before(t0.Add(10 * time.Minute)); now = now.Add(tick) {
		c.record(false, 0, perTick, now) // first attempts of this tick's events
		if now.Sub(t0) >= retry {
			c.record(false, perTick, 0, now) // retries of those from 5s ago
		}
		if c.isOpen() {
			t.Fatalf("opened at %v: half the attempts succeed", now.Sub(t0))
		}
	}
}

func TestBreakerProbeIntervalDoublesToMax(t *testing.T) {
	c, now := watched(defaultBreaker)
	c.record(false, 0, 20, now)
	if !c.isOpen() {
		t.Fatal("not open")
	}
	// Probes 5s after opening, then 10s, 20s and 30s (the max) after each failed probe, then 30s again.
	at := now
	for i, wait := range []time.Duration{5, 10, 20, 30, 30} {
		wait *= time.Second
		if ok, retryAt := c.takeProbe(at.Add(wait - time.Millisecond)); ok || !retryAt.Equal(at.Add(wait)) {
			t.Fatalf("probe %d: allowed %v early or next at %v; want at %v", i+1, ok, retryAt.Sub(at), wait)
		}
		at = at.Add(wait)
		ok, _ := c.takeProbe(at)
		if !ok {
			t.Fatalf("probe %d not allowed %v after the last", i+1, wait)
		}
		if ok, _ := c.takeProbe(at); ok {
			t.Fatalf("probe %d: a second probe while one is in flight", i+1)
		}
		if c.record(true, 0, 1, at) {
			t.Fatal("a failed probe changed the breaker")
		}
	}
	if !c.isOpen() {
		t.Fatal("closed without a success")
	}
}

func TestBreakerFirstSuccessCloses(t *testing.T) {
	c, now := watched(defaultBreaker)
	c.record(false, 0, 20, now)
	now = now.Add(5 * time.Second)
	if ok, _ := c.takeProbe(now); !ok {
		t.Fatal("no probe 5s after opening")
	}
	// A probe that failed for its own event (left out of the counts) lets another probe go at once.
	c.record(true, 0, 0, now)
	if ok, _ := c.takeProbe(now); !ok || !c.isOpen() {
		t.Fatal("an event-caused probe failure held the next probe back or closed the breaker")
	}
	if !c.record(true, 1, 0, now) || c.isOpen() {
		t.Fatal("the first successful probe did not close the breaker")
	}
	// The window starts afresh: the failures that opened it do not reopen it at the next failure.
	c.record(false, 0, 1, now.Add(time.Second))
	if c.isOpen() {
		t.Fatal("reopened at one failure after closing")
	}
}

func TestBreakerDisabled(t *testing.T) {
	c := newControl(Policy{})
	for k := range 1000 {
		c.record(false, 0, 1, t0.Add(time.Duration(k)*time.Second))
	}
	if c.isOpen() {
		t.Fatal("the zero BreakerPolicy opened")
	}
}

func TestPickProbe(t *testing.T) {
	jobs := []store.Job{{Delivery: store.Delivery{ID: 1}}, {Delivery: store.Delivery{ID: 2}},
		{Delivery: store.Delivery{ID: 3, Attempts: 2}}, {Delivery: store.Delivery{ID: 4, Attempts: 1}}}
	if got := jobs[pickProbe(jobs)].Delivery.ID; got != 3 {
		t.Fatalf("probe %d; want 3, the oldest due delivery attempted before", got)
	}
	if got := jobs[pickProbe(jobs[:2])].Delivery.ID; got != 1 {
		t.Fatalf("probe %d; want 1, the oldest, when none was attempted", got)
	}
}

// clock is real time plus an offset a test moves forward, so a lane can be made to have watched its
// destination for a whole breaker window without waiting for it.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time       { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) skip(d time.Duration) { c.off.Add(int64(d)) }
func clockRig(t *testing.T, c *clock, dests ...Destination) *rig {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	d := New(st, Options{Poll: 50 * time.Millisecond, Logger: quiet, Now: c.now})
	d.Start(dests)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
		st.Close()
	})
	return &rig{t: t, st: st, disp: d}
}

// TestBreakerIgnoresEventFailures: deliveries failed by their own event (a transform error, a value the sink
// cannot encode) never open the breaker, however many.
func TestBreakerIgnoresEventFailures(t *testing.T) {
	sink := newProbeSink(func(id string, _ int) error {
		switch {
		case strings.HasPrefix(id, "enc"):
			return sinks.Permanent(errors.New("value cannot be encoded"))
		case strings.HasPrefix(id, "down"):
			return sinks.Retryable(errors.New("http 503"), 0)
		}
		return nil
	})
	prepare := func(ev *event.Event) error {
		if strings.HasPrefix(ev.ID, "bad") {
			return errors.New("transform: not an object")
		}
		return nil
	}
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Prepare: prepare, Policy: Policy{Timeout: time.Second,
		Concurrency: 4, Schedule: []time.Duration{time.Hour}, Breaker: defaultBreaker}})
	c := r.disp.lanes["d"].ctl
	counted := func() (tries, fails int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i := range windowSlots {
			tries, fails = tries+c.tries[i], fails+c.fails[i]
		}
		return tries, fails
	}
	r.publish("ok", 1, "d")
	r.waitStatus("ok-0000", store.Delivered)
	r.publish("bad", 30, "d")
	r.publish("enc", 30, "d")
	for i := range 30 {
		r.waitStatus(fmt.Sprintf("bad-%04d", i), store.Failed)
		r.waitStatus(fmt.Sprintf("enc-%04d", i), store.Failed)
	}
	if tries, fails := counted(); tries != 1 || fails != 0 {
		t.Fatalf("the breaker counted %d attempts, %d failed; want only the one success: failures caused by the events do not count", tries, fails)
	}
	// Failures that speak of the destination's health do count.
	r.publish("down", 30, "d")
	waitFor(t, "30 failures counted", func() bool { _, f := counted(); return f == 30 })
}

// TestBreakerProbePrefersAttempted: with the breaker open and a backlog whose oldest due deliveries were never
// tried, the probe is a delivery that was attempted before.
func TestBreakerProbePrefersAttempted(t *testing.T) {
	var ck clock
	var mu sync.Mutex
	var first string
	sink := newProbeSink(func(id string, _ int) error {
		mu.Lock()
		defer mu.Unlock()
		if first == "" {
			first = id
		}
		return nil
	})
	r := clockRig(t, &ck, Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Second, Concurrency: 4,
		Schedule: []time.Duration{time.Second}, Breaker: defaultBreaker}})
	l := r.disp.lanes["d"]
	l.ctl.mu.Lock()
	l.ctl.open, l.ctl.probeAt = true, ck.now().Add(time.Hour) // open, no probe until the backlog is in place
	l.ctl.mu.Unlock()

	var batch []store.NewEvent
	for i := range 40 {
		batch = append(batch, store.NewEvent{Event: event.Event{ID: fmt.Sprintf("new-%04d", i), Topic: "t", Data: []byte(`{}`)},
			Destinations: []string{"d"}})
	}
	batch = append(batch, store.NewEvent{Event: event.Event{ID: "tried", Topic: "t", Data: []byte(`{}`)}, Destinations: []string{"d"}})
	res, err := r.st.Append(context.Background(), batch, store.AppendOptions{DedupeWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// "tried" failed once and its retry is due now: the newest due, behind 40 never tried.
	tried := res[40].Deliveries[0].ID
	if err := r.st.Complete(context.Background(), []store.Outcome{{DeliveryID: tried, Status: store.Pending, NextAt: ck.now(),
		Attempt: store.Attempt{DeliveryID: tried, N: 1, At: ck.now(), Error: "http 503"}}}); err != nil {
		t.Fatal(err)
	}
	l.ctl.mu.Lock()
	l.ctl.probeAt = time.Time{}
	l.ctl.mu.Unlock()
	l.poke()
	waitFor(t, "all 41 delivered", func() bool { return sink.delivered() == 41 })
	mu.Lock()
	defer mu.Unlock()
	if first != "tried" {
		t.Fatalf("the probe was %s; want the delivery attempted before (tried)", first)
	}
	if l.ctl.isOpen() {
		t.Fatal("the successful probe did not close the breaker")
	}
}
