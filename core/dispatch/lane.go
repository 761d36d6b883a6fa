package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// lane delivers to one destination: workers take first attempts from fresh (filled by intake) and everything
// else from scanned (claimed from the store by the scanner), so retries never starve first attempts of a queue.
// The workers, the scanner and both queues belong to the lane's crew, which runs only while there is work
// (rest.go): a lane with nothing to do keeps no goroutines.
type lane struct {
	d     *Dispatcher
	dest  Destination
	log   *slog.Logger
	slots chan struct{} // one token per reserved place in fresh
	wake  chan struct{}
	quit  chan struct{} // closed when the lane or the whole dispatcher stops
	// stopCtx ends with quit: waits before a send (the rate limiter, room in the in-flight budget) give up on it.
	stopCtx  quitCtx
	quitOnce sync.Once
	wg       sync.WaitGroup
	// disabled is set when the destination answered 410 Gone or AutoDisableAfter deliveries failed in a row; its
	// deliveries end as skipped.
	disabled atomic.Bool
	skipped  atomic.Bool
	limits   sinks.Limits
	collect  sync.Mutex
	ctl      *control

	// enq guards closed against Enqueue (once closed, the lane stopped, nothing more enters fresh) and the
	// crew: c is the running crew, nil while the lane rests.
	enq     sync.Mutex
	closed  bool
	c       *crew
	resting atomic.Bool // c == nil; read without enq by poke and Reserve
	// taken and finished count jobs handed to workers and jobs they are done with: equal when none is in hand.
	taken, finished atomic.Int64
	alive           atomic.Int32 // the crew's goroutines still running

	mu     sync.Mutex
	streak int    // consecutive deliveries that ended failed
	reason string // why the lane disabled itself
}

func newLane(d *Dispatcher, dest Destination) *lane {
	if dest.Policy.Concurrency <= 0 {
		dest.Policy.Concurrency = 16
	}
	if dest.Policy.Timeout <= 0 {
		dest.Policy.Timeout = 15 * time.Second
	}
	var lim sinks.Limits
	if lm, ok := dest.Sink.(sinks.Limiter); ok {
		lim = lm.Limits()
	}
	quit := make(chan struct{})
	l := &lane{
		d: d, dest: dest, log: d.log.With("destination", dest.Name), limits: lim, ctl: newControl(dest.Policy),
		slots:   make(chan struct{}, d.opts.FreshQueue),
		wake:    make(chan struct{}, 1),
		quit:    quit,
		stopCtx: quitCtx{quit},
	}
	l.resting.Store(true) // until start or the first work wakes it
	return l
}

// signalStop tells the lane's goroutines to stop after what they are doing. Under enq: no crew starts after it.
func (l *lane) signalStop() {
	l.enq.Lock()
	defer l.enq.Unlock()
	l.quitOnce.Do(func() {
		close(l.quit)
	})
}

// stopping reports whether the lane was told to stop.
func (l *lane) stopping() bool {
	select {
	case <-l.quit:
		return true
	default:
		return false
	}
}

// offer puts a reserved job in fresh; false means the lane has closed and the job is the caller's to hand back.
// It never blocks: the reservation holds a place.
func (l *lane) offer(j store.Job) bool {
	l.enq.Lock()
	defer l.enq.Unlock()
	if l.closed {
		return false
	}
	c := l.rouse() // the lane may have rested between Reserve and Enqueue
	if c == nil {
		return false
	}
	c.fresh <- j
	return true
}

// close shuts fresh to Enqueue and returns what was still queued there. Call it once the workers have stopped.
func (l *lane) close() []store.Job {
	l.enq.Lock()
	l.closed = true
	c := l.c
	l.enq.Unlock()
	l.d.idle.drop(l)
	var jobs []store.Job
	if c == nil {
		return nil
	}
	for {
		select {
		case j := <-c.fresh:
			<-l.slots
			jobs = append(jobs, j)
		default:
			return jobs
		}
	}
}

// handBack puts jobs the lane took but will not attempt back in the store, due now.
func (l *lane) handBack(jobs []store.Job) {
	if len(jobs) > 0 {
		l.d.complete(completion{lane: l, outs: handBack(jobs, l.d.opts.Now())})
	}
}

// stop stops the lane and waits for its attempts in flight.
func (l *lane) stop() {
	l.signalStop()
	l.wg.Wait()
}

// poke makes the scanner look at the store now, starting the lane's crew if it rests.
func (l *lane) poke() {
	if !l.resting.Load() {
		select {
		case l.wake <- struct{}{}:
		default:
		}
		if !l.resting.Load() {
			return // the scanner sees the signal (a lane going to rest checks for one after resting is set)
		}
	}
	l.wakeUp()
}

func (l *lane) scan(c *crew) {
	defer l.done()
	limit := l.dest.Policy.Concurrency * max(l.limits.MaxBatch, 1)
	lease := l.d.lease(l.dest.Policy)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var quiet idleWatch
	for {
		select {
		case <-l.quit:
			return
		case <-timer.C:
		case <-l.wake:
		}
		probeWait := time.Duration(0)
		for !l.disabled.Load() {
			if l.ctl.isOpen() {
				// Breaker open: the backlog stays in the store; one probe every probe interval asks whether the
				// destination answers again.
				ok, at := l.ctl.takeProbe(l.d.opts.Now())
				if !ok {
					probeWait = max(at.Sub(l.d.opts.Now()), time.Millisecond)
					break
				}
				if !l.sendProbe(c, lease) {
					return
				}
				break
			}
			jobs, err := l.d.store.Claim(context.Background(), l.dest.Name, l.d.opts.Now(), lease, limit)
			if err != nil {
				l.log.Error("claim pending deliveries", "err", err)
				break
			}
			l.taken.Add(int64(len(jobs)))
			for k, j := range jobs {
				select {
				case c.scanned <- j:
				case <-l.quit:
					l.handBack(jobs[k:])
					return
				}
			}
			if len(jobs) < limit {
				break
			}
		}
		wait := l.d.opts.Poll
		dueNow := false // due work this round could not claim (an ordered lane waiting on earlier deliveries)
		var due time.Time
		if probeWait > 0 {
			// Open and waiting for the next probe (or for the one in flight, whose end wakes the scanner):
			// what is due in the store waits for the probe's answer.
			wait = min(wait, probeWait)
		} else if next, ok, err := l.d.store.NextDue(context.Background(), l.dest.Name); err != nil {
			l.log.Error("find next due delivery", "err", err)
		} else if ok {
			due = next
			if until := next.Sub(l.d.opts.Now()); until > 0 || !l.dest.Ordered {
				wait = min(wait, max(until, 5*time.Millisecond))
			}
			// An ordered lane with due work it could not claim is waiting on earlier deliveries of the same
			// keys; their completions wake it.
			dueNow = !next.After(l.d.opts.Now())
		}
		if rest, ok := quiet.check(l, probeWait > 0 || dueNow); !ok {
			wait = min(wait, rest)
		} else if l.rest(c, due) {
			if l.dest.OnRest != nil {
				l.dest.OnRest()
			}
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// probeCandidates is how many due deliveries the breaker looks through to find one already attempted.
const probeCandidates = 64

// sendProbe claims one delivery and hands it to a worker as the breaker's probe; false means the lane is
// stopping. A delivery that was attempted before is preferred: a receiver that fails only first attempts (and
// takes retries) is then probed with what it would accept, and one that is back is seen to be back.
func (l *lane) sendProbe(c *crew, lease time.Duration) bool {
	now := l.d.opts.Now()
	jobs, err := l.d.store.Claim(context.Background(), l.dest.Name, now, lease, probeCandidates)
	if err != nil {
		l.log.Error("claim a probe delivery", "err", err)
		l.ctl.dropProbe()
		return true
	}
	if len(jobs) == 0 {
		l.ctl.dropProbe() // nothing to probe with yet
		return true
	}
	pick := pickProbe(jobs)
	probe := jobs[pick]
	rest := append(jobs[:pick:pick], jobs[pick+1:]...)
	l.handBack(rest)
	l.ctl.setProbe(probe.Delivery.ID)
	l.taken.Add(1)
	select {
	case c.scanned <- probe:
		return true
	case <-l.quit:
		l.handBack([]store.Job{probe})
		return false
	}
}

// pickProbe returns the index of the oldest due delivery that was attempted before, else 0 (jobs come oldest
// due first).
func pickProbe(jobs []store.Job) int {
	for i, j := range jobs {
		if j.Delivery.Attempts > 0 {
			return i
		}
	}
	return 0
}

func (l *lane) work(c *crew) {
	defer l.done()
	for {
		batch := l.next(c)
		if batch == nil {
			return
		}
		l.deliver(batch)
		l.finished.Add(int64(len(batch)))
	}
}

// take returns the next job from either queue; with wait false it returns at once when none is ready, and
// with a non-nil expire it gives up when that fires. It returns false once shutdown began, or when the crew
// is sent to rest.
func (l *lane) take(c *crew, wait bool, expire <-chan time.Time) (store.Job, bool) {
	select {
	case <-l.quit:
		return store.Job{}, false
	default:
	}
	if !wait {
		select {
		case j := <-c.fresh:
			l.taken.Add(1) // before the slot is given back: the job is always counted in one or the other
			<-l.slots
			return j, true
		case j := <-c.scanned:
			return j, true
		default:
			return store.Job{}, false
		}
	}
	select {
	case <-l.quit:
		return store.Job{}, false
	case <-c.rest:
		return store.Job{}, false
	case <-expire:
		return store.Job{}, false
	case j := <-c.fresh:
		l.taken.Add(1)
		<-l.slots
		return j, true
	case j := <-c.scanned:
		return j, true
	}
}

// next collects one batch within the sink's limits: the first job waits for work, the rest are what is ready
// (or arrives within Linger). One worker collects at a time, so batches fill before the next one starts.
func (l *lane) next(c *crew) []store.Job {
	l.collect.Lock()
	defer l.collect.Unlock()
	first, ok := l.take(c, true, nil)
	if !ok {
		return nil
	}
	batch := []store.Job{first}
	lim := l.limits
	if lim.MaxBatch <= 1 || l.ctl.isProbeID(first.Delivery.ID) {
		// A breaker probe goes alone: it asks whether the destination answers at all.
		return batch
	}
	size := len(first.Event.Data)
	var expire <-chan time.Time
	if lim.Linger > 0 {
		t := time.NewTimer(lim.Linger)
		defer t.Stop()
		expire = t.C
	}
	for len(batch) < lim.MaxBatch {
		j, ok := l.take(c, expire != nil, expire)
		if !ok {
			break
		}
		batch = append(batch, j)
		size += len(j.Event.Data)
		if lim.MaxBatchBytes > 0 && size >= lim.MaxBatchBytes {
			break
		}
	}
	return batch
}

// deliver sends a batch and records each delivery's outcome in one store call.
func (l *lane) deliver(batch []store.Job) {
	if l.disabled.Load() {
		for _, j := range batch {
			l.skip(j)
		}
		return
	}
	p := l.dest.Policy
	probe := l.isProbe(batch)
	if l.ctl.isOpen() && !probe {
		l.hold(batch)
		return
	}
	if !l.wait() {
		l.handBack(batch) // stopping: another lane (a replacement, or the next start) sends them
		return
	}
	errs := make([]error, len(batch))
	send := make([]int, 0, len(batch)) // indexes of jobs that go to the sink
	evs := make([]event.Event, 0, len(batch))
	for i, j := range batch {
		ev, err := l.prepare(j)
		if err != nil {
			errs[i] = err
			continue
		}
		evs = append(evs, ev)
		send = append(send, i)
	}
	var rep sinks.Report
	start := l.d.opts.Now()
	if len(send) > 0 {
		if l.ctl.limiter != nil {
			for range evs {
				if l.ctl.limiter.Wait(l.stopCtx) != nil {
					l.handBack(batch) // stopping before anything was sent
					return
				}
			}
		}
		held, err := l.d.hold(l.stopCtx, evs)
		if err != nil {
			l.handBack(batch) // stopping while waiting for room in the in-flight budget: nothing was sent
			return
		}
		ctx := sinks.NewAttempt(l.d.attemptCtx, &rep, time.Now().Add(p.Timeout))
		err = l.dest.Sink.Send(ctx, evs)
		ctx.Release()
		l.d.inFlight().Release(held)
		if err != nil && l.d.attemptCtx.Err() != nil {
			// Shutdown cut the attempt short: not a failure. The leases are released at the next start.
			return
		}
		if err != nil {
			// Only here: the target of errors.As escapes, which would cost an allocation per successful batch.
			var be *sinks.BatchError
			perIndex := errors.As(err, &be) && len(be.Errs) == len(send)
			for k, i := range send {
				if perIndex {
					errs[i] = be.Errs[k]
				} else {
					errs[i] = err
				}
			}
		}
	}
	took := l.d.opts.Now().Sub(start)
	at := l.d.opts.Now()
	outs := make([]store.Outcome, len(batch))
	retry, gone := false, false
	// The breaker hears deliveries that succeeded and those that failed for the destination's health; a
	// permanent failure is about its event (a transform error, an unencodable value), and is left out.
	healthy, unhealthy := 0, 0
	var lastErr error
	// Asked once per batch: building the debug line's arguments costs allocations on the hottest path.
	debug := l.log.Enabled(context.Background(), slog.LevelDebug)
	failures := 0 // deliveries that ended failed after the last success in this batch
	succeeded := false
	for i, j := range batch {
		n := j.Delivery.Attempts + 1
		out := store.Outcome{
			DeliveryID: j.Delivery.ID,
			Attempt: store.Attempt{DeliveryID: j.Delivery.ID, N: n, At: start, Duration: took,
				StatusCode: rep.StatusCode, Response: rep.Response},
			Status: store.Delivered,
		}
		err := errs[i]
		if err == nil {
			if debug {
				l.log.Debug("delivered", "event_id", j.Event.ID, "delivery_id", j.Delivery.ID, "attempt", n)
			}
			l.d.observe(l.dest.Name, OutcomeDelivered, took)
			healthy++
			succeeded, failures = true, 0
			outs[i] = out
			continue
		}
		lastErr = err
		out.Attempt.Error = err.Error()
		class, after := sinks.Classify(err)
		out.Status = store.Failed
		if class == sinks.ClassRetryable {
			unhealthy++
			// The schedule counts from the last manual requeue, so a requeued delivery gets all of it again.
			d, ok := p.delay(max(n-j.Delivery.RetryBase, 1), after)
			if ok {
				out.Status, out.NextAt = store.Pending, at.Add(d)
				retry = true
			}
			if after > 0 {
				// The far side asked for quiet (429/503 with Retry-After): the whole lane waits, not only
				// this delivery — as long as asked, within the same clamp as the delivery's own retry.
				pd := min(after, time.Hour)
				if ok {
					pd = min(after, d)
				}
				l.ctl.pause(at.Add(pd))
			}
		}
		gone = gone || class == sinks.ClassGone
		log := l.log.With("event_id", j.Event.ID, "delivery_id", j.Delivery.ID, "attempt", n, "class", class.String())
		if out.Status == store.Failed {
			// A failure the event caused (poison) says nothing about the destination: it does not count
			// toward auto-disable.
			if !sinks.IsEventError(err) {
				failures++
			}
			log.Warn("delivery failed", "err", err)
			l.d.observe(l.dest.Name, OutcomeFailed, took)
		} else {
			log.Info("delivery attempt failed; will retry", "retry_at", out.NextAt, "err", err)
			l.d.observe(l.dest.Name, OutcomeRetry, took)
		}
		outs[i] = out
	}
	if changed := l.ctl.record(probe, healthy, unhealthy, at); changed {
		if l.ctl.isOpen() {
			b := p.Breaker
			l.log.Warn("breaker opened: the destination keeps failing; holding its backlog and probing",
				"window", b.Window, "failure_ratio", b.FailureRatio, "probe_interval", b.ProbeInterval)
		} else {
			l.log.Info("breaker closed: the destination answered again")
			l.poke()
		}
	}
	if probe {
		l.poke() // the probe's answer decides what the scanner does next
	}
	disable := false
	switch {
	case gone:
		disable = l.disable("the destination answered 410 Gone")
	default:
		if streak := l.countFailures(succeeded, failures); p.AutoDisableAfter > 0 && streak >= p.AutoDisableAfter {
			disable = l.disable(fmt.Sprintf("%d consecutive deliveries failed; last error: %v", streak, lastErr))
		}
	}
	// Stop sending at once (disabled is set); the completer skips what is pending once these outcomes are written.
	l.d.complete(completion{lane: l, outs: outs, jobs: batch, retry: retry, disable: disable})
}

// prepare readies one job's event for the sink; an error is permanent (it is about this event). A panic in the
// hook (a tenant's transform meeting an event nobody foresaw) fails this delivery, never the process.
func (l *lane) prepare(j store.Job) (ev event.Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			ev, err = event.Event{}, sinks.EventError(fmt.Errorf("preparing the event failed: %v", r))
		}
	}()
	if max := l.limits.MaxEventBytes; max > 0 && len(j.Event.Data) > max {
		return event.Event{}, sinks.EventError(fmt.Errorf("event data is %d bytes; this destination takes at most %d", len(j.Event.Data), max))
	}
	ev = j.Event
	if l.dest.Prepare != nil {
		if err := l.dest.Prepare(&ev); err != nil {
			return event.Event{}, sinks.EventError(err)
		}
	}
	return ev, nil
}

// countFailures updates the lane's run of consecutive failed deliveries (ended failed: a permanent error or
// attempts exhausted) with one batch's results — a success in the batch restarts the count at the failures
// after it — and returns the run's length. Attempts that will be retried do not count: an outage shorter than
// the retry schedule never disables a destination.
func (l *lane) countFailures(succeeded bool, failures int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if succeeded {
		l.streak = 0
	}
	l.streak += failures
	return l.streak
}

// disable stops the lane's sending for good, with a reason; it reports true only for the call that did it, so
// the destination is reported disabled once.
func (l *lane) disable(reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.disabled.Load() {
		return false
	}
	l.reason = reason
	l.disabled.Store(true)
	return true
}

// isProbe reports whether a batch is the breaker's probe (claimed by the scanner while open).
func (l *lane) isProbe(batch []store.Job) bool {
	return len(batch) == 1 && l.ctl.isProbeID(batch[0].Delivery.ID)
}

// hold puts deliveries back in the store untried, due when the breaker next probes.
func (l *lane) hold(batch []store.Job) {
	at := l.ctl.nextProbe()
	outs := make([]store.Outcome, len(batch))
	for i, j := range batch {
		if l.ctl.isProbeID(j.Delivery.ID) {
			l.ctl.dropProbe() // the probe was not sent: let the scanner take another
			defer l.poke()
		}
		outs[i] = store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Pending, NextAt: at,
			Attempt: store.Attempt{Error: "held: the destination's breaker is open"}}
	}
	l.d.complete(completion{lane: l, outs: outs, retry: true})
}

// wait blocks while the lane is paused; false means the lane is stopping.
func (l *lane) wait() bool {
	for {
		d := l.ctl.pausedFor(l.d.opts.Now())
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-l.quit:
			t.Stop()
			return false
		}
	}
}

// skip ends a delivery of a disabled destination without an attempt.
func (l *lane) skip(j store.Job) {
	l.d.complete(completion{lane: l, skips: true, outs: []store.Outcome{{DeliveryID: j.Delivery.ID, Status: store.Skipped,
		Attempt: store.Attempt{Error: "destination disabled"}}}})
}

// skipPending ends the pending deliveries of a destination that disabled itself, then reports it (once).
func (l *lane) skipPending() {
	if l.skipped.Swap(true) {
		return
	}
	l.mu.Lock()
	reason := l.reason
	l.mu.Unlock()
	n, err := l.d.store.SkipPending(context.Background(), l.dest.Name, "destination disabled: "+reason)
	l.log.Warn("destination disabled; skipped its pending deliveries", "reason", reason, "skipped", n, "err", err)
	for range n {
		l.d.observe(l.dest.Name, OutcomeSkipped, 0)
	}
	if f := l.d.opts.OnDisabled; f != nil {
		// On its own goroutine: the callback typically removes the lane, which waits for the completer.
		go f(l.dest.Name, reason)
	}
}

// quitCtx is a context that ends when its lane is told to stop. It is the lane's quit channel seen as a context,
// so every lane (thousands of resting per-run subscriptions among them) has one at no cost of its own.
type quitCtx struct{ quit <-chan struct{} }

func (c quitCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c quitCtx) Done() <-chan struct{}       { return c.quit }
func (c quitCtx) Value(any) any               { return nil }
func (c quitCtx) Err() error {
	select {
	case <-c.quit:
		return context.Canceled
	default:
		return nil
	}
}
