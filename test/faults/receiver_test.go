package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestReceiverOutage: the receiver goes away under load (connections refused) long enough for the breaker to
// open, then comes back; deliveries resume within max_probe_interval (plus slack for the attempt itself) and
// the backlog drains.
func TestReceiverOutage(t *testing.T) {
	outage := pick(10*time.Second, 60*time.Second)
	// Short form: a small window and probe interval so the breaker opens and probes within the 10s outage.
	breaker := pick("  breaker: {window: 2s, min_attempts: 20, failure_ratio: 0.8, probe_interval: 500ms, max_probe_interval: 2s}",
		"  breaker: {window: 30s, min_attempts: 20, failure_ratio: 0.8, probe_interval: 5s, max_probe_interval: 30s}")
	maxProbe := pick(2*time.Second, 30*time.Second)
	rc := newReceiver(t)
	rc.up(t)
	n := newNode(t, baseConfig(breaker, "", webhookDest("sink", rc)))
	n.start()
	ld := newLoad(n.addr, "outage")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ld.run(ctx, 4, 0) }()
	waitFor(t, "deliveries before the outage", 30*time.Second, func() bool { d, _ := rc.counts(); return d >= 500 })
	rc.down()
	t.Logf("receiver down at %d acknowledged", ld.nAcked.Load())
	time.Sleep(outage) // the fault's length, not a wait for a signal
	back := time.Now()
	rc.up(t)
	var first time.Time
	waitFor(t, "the first delivery after the receiver returned", maxProbe+30*time.Second, func() bool {
		first = rc.firstAfter(back)
		return !first.IsZero()
	})
	cancel()
	<-done
	ids := ld.ids()
	missing := awaitAll(ids, rc.has, 3*time.Minute)
	drained := time.Since(back)
	d, total := rc.counts()
	resumed := first.Sub(back)
	record(t, row{Case: fmt.Sprintf("receiver down %s under load", outage), Acked: len(ids), Delivered: d, Lost: len(missing),
		Duplicates: total - d, Recovery: fmt.Sprintf("first delivery %s after return, backlog drained %s after", ms(resumed), ms(drained))})
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged events never arrived, e.g. %s", len(missing), missing[0])
	}
	if limit := maxProbe + 5*time.Second; resumed > limit {
		t.Fatalf("deliveries resumed %v after the receiver returned; the breaker must probe within max_probe_interval + 5s (%v)", resumed, limit)
	}
}

// TestFirstAttemptFailures: a receiver that answers 503 to the first attempt of every event and 2xx to its
// retry is delivered to at least half as fast as a healthy one (both measured here, under the same offered
// load of 600 events/s, below what either can take on this box, so the rate shows whether the breaker holds
// the lane back — as one that opened on every run of failures and probed at the retry schedule's pace did —
// rather than how much more CPU a retry costs).
func TestFirstAttemptFailures(t *testing.T) {
	const perSecond = 600
	events := pick(8*perSecond, 60*perSecond)
	// A window shorter than the run, so the breaker does judge the failure rate (half the attempts fail).
	delivery := "  breaker: {window: 2s, min_attempts: 20, failure_ratio: 0.8, probe_interval: 1s, max_probe_interval: 5s}"
	rate := func(failFirst bool) (float64, row) {
		rc := newReceiver(t)
		rc.failFirst = failFirst
		rc.up(t)
		n := newNode(t, baseConfig(delivery, "", webhookDest("sink", rc)))
		n.start()
		ld := newLoad(n.addr, "rate")
		ld.pace = rate.NewLimiter(perSecond, 20)
		start := time.Now()
		ld.run(context.Background(), 16, events)
		ids := ld.ids()
		missing := awaitAll(ids, rc.has, 3*time.Minute)
		took := time.Since(start)
		d, total := rc.counts()
		n.kill()
		r := float64(d) / took.Seconds()
		name := "healthy receiver"
		if failFirst {
			name = "receiver: 503 to each first attempt"
		}
		if len(missing) > 0 {
			t.Fatalf("%s: %d acknowledged events never arrived", name, len(missing))
		}
		return r, row{Case: name, Acked: len(ids), Delivered: d, Lost: len(missing), Duplicates: total - d,
			Recovery: fmt.Sprintf("%.0f delivered/s (publish to last delivery %s)", r, ms(took))}
	}
	healthy, hr := rate(false)
	flaky, fr := rate(true)
	fr.Recovery += fmt.Sprintf("; %.2fx the healthy rate", flaky/healthy)
	record(t, hr)
	record(t, fr)
	if flaky < healthy/2 {
		t.Fatalf("%.0f delivered/s to a receiver failing first attempts, %.0f/s to a healthy one: want within 2x", flaky, healthy)
	}
}
