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
	var held int64
	evs := []event.Event{ev}
	if err == nil {
		held, err = d.hold(ctx, evs)
	}
	if err == nil {
		sctx, cancel := context.WithTimeout(sinks.WithReport(ctx, &rep), l.dest.Policy.Timeout)
		err = l.dest.Sink.Send(sctx, evs)
		cancel()
		d.inFlight().Release(held)
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

// Every attempt holds its bytes against one process-wide budget (DESIGN §9: all in-flight attempts together
// have a memory bound), whatever its sink: acquired here, before the batch is handed to the sink, and
// released when Send returns. Sinks do not count again.
const (
	// envelopeBytes allows for what a sink adds around each event's payload (id, topic, time, metadata,
	// encoding).
	envelopeBytes = 512
	// answerBytes allows for the answer an attempt reads (a webhook reads at most a 4 KiB excerpt).
	answerBytes = 4 << 10
)

// attemptBytes is what an attempt of evs holds: each event's payload (the transformed body when there is
// one) and envelope, and the answer.
func attemptBytes(evs []event.Event) int64 {
	n := int64(answerBytes)
	for i := range evs {
		p := len(evs[i].Body)
		if p == 0 {
			p = len(evs[i].Data)
		}
		n += int64(p + envelopeBytes)
	}
	return n
}

func (d *Dispatcher) inFlight() *sinks.Budget {
	if d.opts.InFlight != nil {
		return d.opts.InFlight
	}
	return sinks.InFlight
}

// hold takes evs' bytes from the in-flight budget, waiting while it is spent (an attempt of more than the
// whole budget waits until it is alone); the error is ctx's. Release what it returns with
// d.inFlight().Release once the attempt has ended. Within the budget it costs one atomic operation.
func (d *Dispatcher) hold(ctx context.Context, evs []event.Event) (int64, error) {
	return d.inFlight().Acquire(ctx, attemptBytes(evs))
}
