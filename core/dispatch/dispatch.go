package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// Destination is one lane's configuration.
type Destination struct {
	Name   string
	Sink   sinks.Sink
	Policy Policy
	// Prepare, when set, readies each event for this destination before it is sent (a transform sets
	// Event.Body). An error fails that delivery permanently with the error as its reason.
	Prepare func(ev *event.Event) error
	// Ordered says deliveries carry ordering keys: the store releases one per key at a time, so every
	// completion may free the next one and wakes the lane's scanner.
	Ordered bool
	// OnRest, when set, is called each time the lane goes to rest (nothing in hand, no attempt in flight):
	// the place to let go of what an idle destination need not hold, such as idle connections.
	OnRest func()
}

// Options tune the dispatcher; zero values take defaults.
type Options struct {
	// FreshQueue is how many first attempts a lane holds in memory before new ones wait in the store.
	FreshQueue int
	// Poll is the longest a lane's scanner sleeps before looking at the store again.
	Poll   time.Duration
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
	// OnDisabled is called once when a lane disables itself (the destination answered 410 Gone, or
	// Policy.AutoDisableAfter consecutive deliveries failed), after the outcome that disabled it is recorded and
	// the lane's pending deliveries are skipped. It runs on its own goroutine, so it may call Remove.
	OnDisabled func(name, reason string)
	// OnFailed is called once for each delivery that ends as failed (permanent error or attempts exhausted),
	// after its outcome is written. It runs on its own goroutine, never on a worker or the completer.
	OnFailed func(job store.Job, attempt store.Attempt)
	// Observer, when set, hears every delivery outcome (metrics).
	Observer Observer
	// InFlight bounds the bytes of all attempts in flight together, every sink's (nil = sinks.InFlight, read
	// at each attempt, so serve may size it after New).
	InFlight *sinks.Budget
	// IdleAfter is how long a lane with nothing to do keeps its goroutines before they end (default 30s;
	// negative: never). A resting lane costs no goroutine; work wakes it (see rest.go).
	IdleAfter time.Duration
	// OnIdle, when set, is called when a lane's goroutines have gone to rest, by the last of them as it ends
	// (tests, metrics). It must be quick.
	OnIdle func(destination string)
	// CompleteLinger, when positive, is how long outcomes that nothing waits on (see completion.awaited) may
	// wait for company before they are written, so they share one store write: every commit costs (the
	// embedded store's a WAL write and an fsync, PostgreSQL's also a round trip and a transaction on a server
	// other nodes share). An outcome someone waits on is written at once, with whatever lingered before it.
	// The cost is only that a delivery shows as pending (its lease held) that much longer, and that a crash
	// in that time sends it again, which at-least-once allows. 0 (the default) takes the store's
	// (store.Lingerer: 5 ms embedded, 20 ms PostgreSQL), or writes each batch as soon as the previous one is
	// written when the store names none. Negative: never linger.
	CompleteLinger time.Duration
}

// Observer hears delivery outcomes. Observe is called once per outcome, on the goroutine that produced it, so
// it must be quick and safe for concurrent use.
type Observer interface {
	// Observe notes one outcome of a delivery to destination: "delivered", "retry" (a failed attempt that will
	// be retried), "failed" or "skipped". took is the attempt's duration (0 for skipped).
	Observe(destination, outcome string, took time.Duration)
}

// Outcome names passed to Observer.Observe.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeFailed    = "failed"
	OutcomeSkipped   = "skipped"
)

// ErrNoLane is returned for a destination that has no running lane.
var ErrNoLane = errors.New("no such destination lane")

// Dispatcher runs the lanes.
type Dispatcher struct {
	store store.Store
	opts  Options
	log   *slog.Logger

	mu    sync.RWMutex
	lanes map[string]*lane
	wg    sync.WaitGroup
	// attemptCtx is cancelled only when draining runs out of time; attempts in flight finish otherwise.
	attemptCtx    context.Context
	cancelAttempt context.CancelFunc
	stopping      chan struct{}
	stopOnce      sync.Once

	// Outcomes are written by one completer goroutine in batches, so a worker moves on to its next delivery
	// without waiting for a commit. Until written, a delivery stays leased: no scan resends it, and a crash
	// only means it is sent again (at least once).
	outcomes  chan completion
	outMu     sync.RWMutex // guards outClosed against sends racing the close of outcomes
	outClosed bool
	completed chan struct{}

	idle     *idler        // the resting lanes
	idleDone chan struct{} // closed when the idle watch has returned (after Shutdown began)
}

// completion is one lane's batch of outcomes for the completer.
type completion struct {
	lane  *lane
	outs  []store.Outcome
	jobs  []store.Job // same index as outs when the outcomes come from attempts (for OnFailed); else nil
	retry bool
	// skips says the outcomes skip deliveries of a disabled lane.
	skips bool
	// disable says this batch disabled the lane: once written, its pending deliveries are skipped and
	// OnDisabled is called.
	disable bool
	// done, when set, is closed once the batch is written (or failed to be): a barrier for Remove.
	done chan struct{}
}

// New returns a dispatcher over st. Call Start to run lanes.
func New(st store.Store, opts Options) *Dispatcher {
	if opts.FreshQueue <= 0 {
		opts.FreshQueue = 1024
	}
	if opts.Poll <= 0 {
		opts.Poll = 5 * time.Second
	}
	if l, ok := st.(store.Lingerer); ok && opts.CompleteLinger == 0 {
		opts.CompleteLinger = l.CompleteLinger()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IdleAfter == 0 {
		opts.IdleAfter = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		store: st, opts: opts, log: opts.Logger, lanes: map[string]*lane{},
		attemptCtx: ctx, cancelAttempt: cancel, stopping: make(chan struct{}),
		outcomes: make(chan completion, 4096), completed: make(chan struct{}), idle: newIdler(), idleDone: make(chan struct{}),
	}
	go d.completer()
	go func() {
		defer close(d.idleDone)
		d.watchIdle()
	}()
	return d
}

// complete queues outcomes for the completer. Once the completer has stopped (after Shutdown), it writes them
// itself, so a late Remove never sends on a closed channel.
func (d *Dispatcher) complete(c completion) {
	d.outMu.RLock()
	if !d.outClosed {
		d.outcomes <- c
		d.outMu.RUnlock()
		return
	}
	d.outMu.RUnlock()
	d.write([]completion{c}, c.outs)
}

// closeCompleter stops the completer once every queued outcome is written.
func (d *Dispatcher) closeCompleter() {
	d.outMu.Lock()
	if !d.outClosed {
		d.outClosed = true
		close(d.outcomes)
	}
	d.outMu.Unlock()
	<-d.completed
}

// completer writes outcomes in batches until the channel is closed by Shutdown, then flushes the rest.
func (d *Dispatcher) completer() {
	defer close(d.completed)
	var batch []completion
	var outs []store.Outcome
	var linger *time.Timer
	for c := range d.outcomes {
		batch, outs = append(batch[:0], c), append(outs[:0], c.outs...)
		wait := d.opts.CompleteLinger > 0 && !c.awaited()
		if wait {
			if linger == nil {
				linger = time.NewTimer(d.opts.CompleteLinger)
			} else {
				linger.Reset(d.opts.CompleteLinger)
			}
		}
		for len(outs) < maxCompleteBatch {
			var more <-chan time.Time // nil unless lingering: receive then does not wait
			if wait && len(outs) < lingerBatch {
				more = linger.C
			}
			c, got, open := d.receive(more)
			if !got {
				if !open || more == nil {
					break
				}
				wait = false // the linger is over: take what is queued, then write
				continue
			}
			batch, outs = append(batch, c), append(outs, c.outs...)
			wait = wait && !c.awaited()
		}
		if linger != nil {
			linger.Stop()
		}
		d.write(batch, outs)
		clear(batch) // the buffer is kept: it must not keep lanes' jobs (their events) alive
	}
}

// receive takes the next queued completion: at once if one is queued, else, with more non-nil, whichever comes
// first of a completion and more. got says one was taken; open is false once Shutdown closed the queue.
func (d *Dispatcher) receive(more <-chan time.Time) (c completion, got, open bool) {
	select {
	case c, ok := <-d.outcomes:
		return c, ok, ok
	default:
	}
	if more == nil {
		return completion{}, false, true
	}
	select {
	case c, ok := <-d.outcomes:
		return c, ok, ok
	case <-more:
		return completion{}, false, true
	}
}

const (
	// maxCompleteBatch bounds the outcomes of one store write.
	maxCompleteBatch = 1024
	// lingerBatch ends Options.CompleteLinger's wait: a batch this full is written at once.
	lingerBatch = 256
)

// awaited says something waits on the completion being written: a barrier (Remove), a lane that stops
// (disable, skips), a retry the scanner must schedule, or an ordered destination whose next delivery of a key
// is held until this one is recorded. Only completions nobody waits on may linger (Options.CompleteLinger).
func (c completion) awaited() bool {
	return c.done != nil || c.disable || c.skips || c.retry || c.lane.dest.Ordered
}

// write records a batch of completions in one store call, then does what follows from them.
func (d *Dispatcher) write(batch []completion, outs []store.Outcome) {
	var err error
	if len(outs) > 0 { // a Remove barrier may carry none
		err = d.store.Complete(context.Background(), outs)
	}
	if err != nil {
		// The deliveries stay leased and pending; the next start sends them again.
		d.log.Error("record delivery outcomes", "deliveries", len(outs), "err", err)
	}
	var failed []store.Outcome
	var failedJobs []store.Job
	for _, c := range batch {
		if err == nil {
			if c.retry || c.lane.dest.Ordered {
				c.lane.poke()
			}
			if c.skips && !c.lane.skipped.Load() {
				// Once skipPending has run (it runs here too, after the batch's writes, so the order is certain)
				// it has counted every delivery that was pending, these included; before that, this write
				// skipped them.
				for range c.outs {
					d.observe(c.lane.dest.Name, OutcomeSkipped, 0)
				}
			}
			if d.opts.OnFailed != nil && c.jobs != nil {
				for i, o := range c.outs {
					if o.Status == store.Failed && o.Attempt.N > 0 {
						failed, failedJobs = append(failed, o), append(failedJobs, c.jobs[i])
					}
				}
			}
		}
	}
	// After the loop above: this batch's skips were all written before any skipPending below runs.
	for _, c := range batch {
		if c.disable {
			// Even when the write failed: the lane has stopped sending, and the operator must hear of it.
			c.lane.skipPending()
		}
		if c.done != nil {
			close(c.done)
		}
	}
	if len(failed) > 0 {
		// On its own goroutine: the callback may publish an operator event, which must not hold up outcomes.
		go func() {
			for i, o := range failed {
				d.opts.OnFailed(failedJobs[i], o.Attempt)
			}
		}()
	}
}

// observe tells the Observer, if any, of one outcome.
func (d *Dispatcher) observe(destination, outcome string, took time.Duration) {
	if d.opts.Observer != nil {
		d.opts.Observer.Observe(destination, outcome, took)
	}
}

// handBack returns outcomes that put untried deliveries back in the store, pending and due at now, without
// recording an attempt (N == 0), so any lane — a replacement, or another node — can claim them at once.
func handBack(jobs []store.Job, now time.Time) []store.Outcome {
	outs := make([]store.Outcome, len(jobs))
	for i, j := range jobs {
		// The delivery's last error is written back as it was: handing back says nothing new about it.
		outs[i] = store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Pending, NextAt: now,
			Attempt: store.Attempt{Error: j.Delivery.LastError}}
	}
	return outs
}

// Start runs one lane per destination.
func (d *Dispatcher) Start(dests []Destination) {
	for _, dest := range dests {
		d.Add(dest)
	}
}

// Add starts a lane for a destination (one created at runtime, or by a reload). A lane of the same name must
// have been removed first (or use Replace).
func (d *Dispatcher) Add(dest Destination) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := newLane(d, dest)
	d.lanes[dest.Name] = l
	l.start()
}

// Remove stops a destination's lane: it takes no new work, attempts in flight finish, and its sink is closed.
// Every delivery the lane held without attempting it (queued in memory, or collected into a batch it did not
// send) is back in the store, pending and due now, when Remove returns. Deliveries still pending stay in the
// store (skip them with store.SkipPending if the destination is gone).
func (d *Dispatcher) Remove(ctx context.Context, name string) error {
	d.mu.Lock()
	l := d.lanes[name]
	delete(d.lanes, name)
	d.mu.Unlock()
	if l == nil {
		return nil
	}
	d.retire(l)
	return l.dest.Sink.Close(ctx)
}

// Replace swaps a destination's lane for a new one (a changed configuration), or adds it if there was none.
// The new lane takes over the name before the old one stops, so intake never sees the destination missing;
// the old lane then stops as in Remove, and what it held is handed back for the new lane to claim.
func (d *Dispatcher) Replace(ctx context.Context, dest Destination) error {
	d.mu.Lock()
	old := d.lanes[dest.Name]
	l := newLane(d, dest)
	d.lanes[dest.Name] = l
	l.start()
	d.mu.Unlock()
	if old == nil {
		return nil
	}
	d.retire(old)
	l.poke() // what the old lane handed back is due now
	if err := old.dest.Sink.Close(ctx); err != nil {
		return fmt.Errorf("close the replaced sink of %s: %w", dest.Name, err)
	}
	return nil
}

// retire stops a lane that is no longer in d.lanes and waits until what it held is back in the store.
func (d *Dispatcher) retire(l *lane) {
	l.stop()
	jobs := l.close()
	// The barrier also waits for every outcome the lane's workers queued before they stopped: the completer
	// writes in order.
	done := make(chan struct{})
	d.complete(completion{lane: l, outs: handBack(jobs, d.opts.Now()), done: done})
	<-done
}

// Lanes returns the names of the running lanes, sorted.
func (d *Dispatcher) Lanes() []string {
	d.mu.RLock()
	names := make([]string, 0, len(d.lanes))
	for name := range d.lanes {
		names = append(names, name)
	}
	d.mu.RUnlock()
	slices.Sort(names)
	return names
}

// Enabled reports whether a destination has a lane that has not disabled itself (410 Gone or auto-disable).
func (d *Dispatcher) Enabled(name string) bool { return d.Accepting(name) }

// Accepting reports whether a destination takes new deliveries (it exists and has not been disabled).
func (d *Dispatcher) Accepting(destination string) bool {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	return l != nil && !l.disabled.Load()
}

// Disabled reports whether a destination's lane has disabled itself (410 Gone or auto-disable) and the
// routing table does not say so yet. A destination without a lane (one a change is still starting) is not
// disabled: its deliveries wait in the store for the lane.
func (d *Dispatcher) Disabled(destination string) bool {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	return l != nil && l.disabled.Load()
}

// BreakerOpen reports whether a destination's circuit breaker is open: it keeps failing, and its lane sends
// one probe at a time until the destination answers again.
func (d *Dispatcher) BreakerOpen(destination string) bool {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	return l != nil && l.ctl.isOpen()
}

// Ticket is a reserved place in one lane's in-memory queue, from Reserve. It stays bound to that lane even if
// the destination's lane is removed or replaced meanwhile, and must be used exactly once: by Enqueue, or by
// Release. The zero Ticket reserves nothing.
type Ticket struct{ l *lane }

// Reserved reports whether the ticket holds a place: the delivery is then leased at birth and must be handed
// to Enqueue once durable.
func (t Ticket) Reserved() bool { return t.l != nil }

// Reserve asks for room for one first attempt in a destination's lane. It returns the zero Ticket when the
// lane is full, stopping or unknown, or its breaker is open; the delivery then waits in the store and the
// lane's scanner fetches it.
func (d *Dispatcher) Reserve(destination string) Ticket {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	if l == nil || l.ctl.isOpen() || l.stopping() {
		return Ticket{}
	}
	select {
	case l.slots <- struct{}{}:
		return Ticket{l: l}
	default:
		l.poke()
		return Ticket{}
	}
}

// Poke makes a destination's scanner look at the store soon (work was added there directly).
func (d *Dispatcher) Poke(destination string) {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	if l != nil {
		l.poke()
	}
}

// Release returns a reservation that will not be used (the append failed, or the event was a duplicate).
func (d *Dispatcher) Release(t Ticket) {
	if t.l != nil {
		<-t.l.slots
	}
}

// Enqueue hands a durable delivery, leased at birth under ticket t, to the lane t reserved in. If that lane
// has stopped meanwhile (removed or replaced), the delivery goes back to the store, pending and due now, for
// whichever lane runs the destination next. A zero ticket does nothing: such a delivery was not leased.
func (d *Dispatcher) Enqueue(t Ticket, dl store.Delivery, ev event.Event) {
	if t.l == nil {
		return
	}
	job := store.Job{Delivery: dl, Event: ev}
	if t.l.offer(job) {
		return
	}
	// Written here rather than through the completer, which may have stopped already (after Shutdown).
	if err := d.store.Complete(context.Background(), handBack([]store.Job{job}, d.opts.Now())); err != nil {
		// It stays leased until the lease runs out (or the next start releases it).
		d.log.Error("hand back a delivery of a stopped lane", "destination", dl.Destination, "delivery_id", dl.ID, "err", err)
		return
	}
	d.Poke(dl.Destination)
}

// Shutdown stops taking work and waits for attempts in flight. When ctx ends first, attempts are cancelled
// (they stay pending and resume after restart) and Shutdown returns ctx's error once lanes have stopped.
func (d *Dispatcher) Shutdown(ctx context.Context) error {
	d.stopOnce.Do(func() {
		close(d.stopping)
		d.mu.RLock()
		for _, l := range d.lanes {
			l.signalStop()
		}
		d.mu.RUnlock()
	})
	done := make(chan struct{})
	go func() {
		<-d.idleDone // it wakes no lane once stopping, and asks the store nothing more
		d.wg.Wait()
		// Workers have stopped: hand back what waits in the lanes' queues, then flush the outcomes they left.
		d.mu.RLock()
		for _, l := range d.lanes {
			if jobs := l.close(); len(jobs) > 0 {
				d.complete(completion{lane: l, outs: handBack(jobs, d.opts.Now())})
			}
		}
		d.mu.RUnlock()
		d.closeCompleter()
		close(done)
	}()
	select {
	case <-done:
		d.cancelAttempt()
		return d.closeSinks(ctx)
	case <-ctx.Done():
		d.cancelAttempt()
		<-done
		_ = d.closeSinks(context.Background())
		return ctx.Err()
	}
}

func (d *Dispatcher) closeSinks(ctx context.Context) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var errs []error
	for _, l := range d.lanes {
		if err := l.dest.Sink.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lease is how long a claimed delivery is reserved to this process. Single-node stores release all leases at
// startup, so a long lease costs nothing after a crash; it only has to outlast a wait in a lane's queue.
func (d *Dispatcher) lease(p Policy) time.Duration {
	return max(FreshLease, 10*p.Timeout)
}

// FreshLease is the lease intake asks for deliveries it hands to a lane at birth.
const FreshLease = time.Hour
