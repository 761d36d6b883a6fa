package dispatch

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// Attempt makes one synchronous attempt of job through the named destination's sink, with its Prepare hook and
// timeout, and writes the outcome to the store before it returns. It is for an operator's test send: there is
// no batching, no rate-limit wait and no breaker, and the outcome is final — delivered or failed, never a
// retry. It leaves the lane's own state alone (a failed test neither counts towards auto-disable nor disables
// the destination on 410), and OnFailed is not called for it. A failed send is reported in the outcome, not as
// an error; the error is ErrNoLane for an unknown destination, or the store's.
func (d *Dispatcher) Attempt(ctx context.Context, name string, job store.Job) (store.Outcome, error) {
	d.mu.RLock()
	l := d.lanes[name]
	d.mu.RUnlock()
	if l == nil {
		return store.Outcome{}, fmt.Errorf("%w: %s", ErrNoLane, name)
	}
	n := job.Delivery.Attempts + 1
	out := store.Outcome{DeliveryID: job.Delivery.ID, Status: store.Delivered,
		Attempt: store.Attempt{DeliveryID: job.Delivery.ID, N: n}}
	var rep sinks.Report
	start := d.opts.Now()
	ev, err := l.prepare(job)
	if err == nil {
		sctx, cancel := context.WithTimeout(sinks.WithReport(ctx, &rep), l.dest.Policy.Timeout)
		err = l.dest.Sink.Send(sctx, []event.Event{ev})
		cancel()
		var be *sinks.BatchError
		if errors.As(err, &be) && len(be.Errs) == 1 {
			err = be.Errs[0]
		}
	}
	out.Attempt.At, out.Attempt.Duration = start, d.opts.Now().Sub(start)
	out.Attempt.StatusCode, out.Attempt.Response = rep.StatusCode, rep.Response
	log := l.log.With("event_id", job.Event.ID, "delivery_id", job.Delivery.ID, "attempt", n)
	if err != nil {
		out.Status, out.Attempt.Error = store.Failed, err.Error()
		log.Info("test delivery failed", "err", err)
		d.observe(name, OutcomeFailed, out.Attempt.Duration)
	} else {
		log.Debug("test delivery delivered")
		d.observe(name, OutcomeDelivered, out.Attempt.Duration)
	}
	if err := d.store.Complete(context.WithoutCancel(ctx), []store.Outcome{out}); err != nil {
		return out, fmt.Errorf("record the test attempt: %w", err)
	}
	return out, nil
}
