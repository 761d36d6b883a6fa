package dispatch

import (
	"context"
	"errors"
	"log/slog"
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
}

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
	outcomes      chan completion
	closeOutcomes sync.Once
	completed     chan struct{}
}

type completion struct {
	lane        *lane
	outs        []store.Outcome
	retry, gone bool
}

// New returns a dispatcher over st. Call Start to run lanes.
func New(st store.Store, opts Options) *Dispatcher {
	if opts.FreshQueue <= 0 {
		opts.FreshQueue = 1024
	}
	if opts.Poll <= 0 {
		opts.Poll = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		store: st, opts: opts, log: opts.Logger, lanes: map[string]*lane{},
		attemptCtx: ctx, cancelAttempt: cancel, stopping: make(chan struct{}),
		outcomes: make(chan completion, 4096), completed: make(chan struct{}),
	}
	go d.completer()
	return d
}

// complete queues a lane's outcomes for the completer.
func (d *Dispatcher) complete(l *lane, outs []store.Outcome, retry, gone bool) {
	d.outcomes <- completion{lane: l, outs: outs, retry: retry, gone: gone}
}

// completer writes outcomes in batches until the channel is closed by Shutdown, then flushes the rest.
func (d *Dispatcher) completer() {
	defer close(d.completed)
	var batch []completion
	var outs []store.Outcome
	for c := range d.outcomes {
		batch, outs = append(batch[:0], c), append(outs[:0], c.outs...)
	fill:
		for len(outs) < 1024 {
			select {
			case c, ok := <-d.outcomes:
				if !ok {
					break fill
				}
				batch = append(batch, c)
				outs = append(outs, c.outs...)
			default:
				break fill
			}
		}
		if err := d.store.Complete(context.Background(), outs); err != nil {
			// The deliveries stay leased and pending; the next start sends them again.
			d.log.Error("record delivery outcomes", "deliveries", len(outs), "err", err)
			continue
		}
		for _, c := range batch {
			if c.retry || c.lane.dest.Ordered {
				c.lane.poke()
			}
			if c.gone {
				c.lane.skipPending()
			}
		}
	}
}

// Start runs one lane per destination.
func (d *Dispatcher) Start(dests []Destination) {
	for _, dest := range dests {
		d.Add(dest)
	}
}

// Add starts a lane for a destination (one created at runtime, or by a reload). A lane of the same name must
// have been removed first.
func (d *Dispatcher) Add(dest Destination) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := newLane(d, dest)
	d.lanes[dest.Name] = l
	l.start()
}

// Remove stops a destination's lane: it takes no new work, attempts in flight finish, and its sink is closed.
// Deliveries still pending stay in the store (skip them with store.SkipPending if the destination is gone).
func (d *Dispatcher) Remove(ctx context.Context, name string) error {
	d.mu.Lock()
	l := d.lanes[name]
	delete(d.lanes, name)
	d.mu.Unlock()
	if l == nil {
		return nil
	}
	l.stop()
	return l.dest.Sink.Close(ctx)
}

// Accepting reports whether a destination takes new deliveries (it exists and has not been disabled).
func (d *Dispatcher) Accepting(destination string) bool {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	return l != nil && !l.disabled.Load()
}

// Reserve asks for room for one first attempt in a destination's lane. It returns false when the lane is full
// (or unknown); the delivery then waits in the store and the lane's scanner fetches it.
func (d *Dispatcher) Reserve(destination string) bool {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	if l == nil || l.ctl.isOpen() {
		return false
	}
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		l.poke()
		return false
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

// Release returns a reservation that will not be used (the append failed).
func (d *Dispatcher) Release(destination string) {
	d.mu.RLock()
	l := d.lanes[destination]
	d.mu.RUnlock()
	if l != nil {
		<-l.slots
	}
}

// Enqueue hands a durable, reserved delivery to its lane.
func (d *Dispatcher) Enqueue(dl store.Delivery, ev event.Event) {
	d.mu.RLock()
	l := d.lanes[dl.Destination]
	d.mu.RUnlock()
	if l == nil {
		return
	}
	l.fresh <- store.Job{Delivery: dl, Event: ev}
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
		d.wg.Wait()
		// Workers have stopped: flush the outcomes they left.
		d.closeOutcomes.Do(func() { close(d.outcomes) })
		<-d.completed
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
