package sinks

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Attempt is the context of one attempt: what context.WithDeadline(WithReport(parent, rep), deadline) gives,
// except that the timer and the Done channel are made only when something asks for Done. A sink that bounds
// its own I/O by the deadline and learns of cancellation from AttemptParent (the webhook sink's plain-http
// connections) never pays for them: on the dispatcher's hottest path the timer, the channel, and the two
// registrations with a parent (the deadline's, and the sink's watch of its cancellation) cost more CPU than the
// rest of an attempt's bookkeeping together.
//
// parent must be long-lived (the dispatcher's context for all attempts): AttemptParent hands it to sinks, which
// may watch it for as long as they live. Release must be called once the attempt has ended.
type Attempt struct {
	parent   context.Context
	values   context.Context // parent, with the report
	rep      *Report         // the report, filled by Note directly
	deadline time.Time

	released atomic.Bool

	mu     sync.Mutex
	real   atomic.Pointer[context.Context] // made by Done: WithDeadline(values, deadline), cancelled once released
	cancel context.CancelFunc
}

// NewAttempt returns the context of an attempt that must end by deadline, whose sink's Note calls fill rep
// (when not nil).
func NewAttempt(parent context.Context, rep *Report, deadline time.Time) *Attempt {
	a := &Attempt{parent: parent, values: parent, rep: rep, deadline: deadline}
	if rep != nil {
		a.values = WithReport(parent, rep)
	}
	return a
}

// Release ends the attempt: the context counts as cancelled afterwards, as after a CancelFunc, and the
// timer Done made (if any) is stopped.
func (a *Attempt) Release() {
	a.released.Store(true)
	a.mu.Lock()
	if a.cancel != nil {
		a.cancel()
	}
	a.mu.Unlock()
}

// made returns the context Done made, or nil.
func (a *Attempt) made() context.Context {
	if p := a.real.Load(); p != nil {
		return *p
	}
	return nil
}

// Deadline is the attempt's, or the parent's when that comes first.
func (a *Attempt) Deadline() (time.Time, bool) {
	if d, ok := a.parent.Deadline(); ok && d.Before(a.deadline) {
		return d, true
	}
	return a.deadline, true
}

// Done makes the attempt's timer and channel on the first call.
func (a *Attempt) Done() <-chan struct{} {
	if c := a.made(); c != nil {
		return c.Done()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.made(); c != nil {
		return c.Done()
	}
	ctx, cancel := context.WithDeadline(a.values, a.deadline)
	if a.released.Load() {
		cancel()
	}
	a.real.Store(&ctx)
	a.cancel = cancel
	return ctx.Done()
}

// Err is the parent's error, or DeadlineExceeded once the deadline has passed.
func (a *Attempt) Err() error {
	if c := a.made(); c != nil {
		if err := c.Err(); err != nil {
			return err
		}
		// The parent's cancellation reaches c a moment after the parent's watchers may have run (a sink's
		// interruption of its connections): it is the attempt's error already.
		return a.parent.Err()
	}
	if err := a.parent.Err(); err != nil {
		return err
	}
	if a.released.Load() {
		return context.Canceled
	}
	if !time.Now().Before(a.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value looks key up in the parent and the report. Once the attempt has ended (its deadline passed, or
// released) it answers from the context Done makes, so that context.Cause agrees with Err.
func (a *Attempt) Value(key any) any {
	if c := a.made(); c != nil {
		return c.Value(key)
	}
	if a.parent.Err() == nil && (a.released.Load() || !time.Now().Before(a.deadline)) {
		a.Done()
		return a.made().Value(key)
	}
	return a.values.Value(key)
}

// AttemptParent returns the long-lived context an attempt's context was made from (NewAttempt), which cancels
// the attempt before its deadline; ok is false for any other context. A sink that enforces ctx's deadline
// itself can watch this parent once, instead of each attempt's context (which would make its timer and
// channel, see Attempt).
func AttemptParent(ctx context.Context) (parent context.Context, ok bool) {
	if a, ok := ctx.(*Attempt); ok {
		return a.parent, true
	}
	return nil, false
}
