package destinations

import (
	"context"
	"sync"

	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/sinks"
)

// laneOp is a change to the dispatcher, decided under a lock and carried out after it is released: stopping
// or replacing a lane waits for its attempts in flight, and closing a sink may wait on the network, so no
// lock of the Manager is held across either.
type laneOp struct {
	name    string                // the destination's id: the key of its lane and deliveries
	label   string                // its name, for Options.OnRemoved
	start   *dispatch.Destination // a lane to start (Add), or to swap in (Replace) when replace
	replace bool
	stop    bool   // stop the running lane (Remove)
	skip    string // then end the destination's pending deliveries as skipped, for this reason
	then    func(ctx context.Context)
	forget  bool       // then tell Options.OnRemoved (metrics)
	discard sinks.Sink // a built sink that is not used after all

	prev, done chan struct{}
}

// laneQueue orders laneOps: the ops on one name run in the order they were decided, whoever runs them.
type laneQueue struct {
	m     *Manager
	mu    sync.Mutex // held only to link ops, never across one
	tails map[string]chan struct{}
}

// decide links op behind the ops already decided for its name. Call it under the lock that decided op, so
// that the order of decisions is the order of execution; then run it once that lock is released.
func (q *laneQueue) decide(op *laneOp) *laneOp {
	q.mu.Lock()
	defer q.mu.Unlock()
	op.prev, op.done = q.tails[op.name], make(chan struct{})
	q.tails[op.name] = op.done
	return op
}

// run carries out ops, each after those decided before it for the same name. Call it with no lock held.
func (q *laneQueue) run(ctx context.Context, ops []*laneOp) {
	if len(ops) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx) // a lane half stopped because a client went away would help nobody
	m := q.m
	for _, op := range ops {
		if op.prev != nil {
			<-op.prev
		}
		d := m.opts.Dispatcher
		switch {
		case op.stop:
			if err := d.Remove(ctx, op.name); err != nil {
				m.log.Warn("close sink", "destination", op.name, "err", err)
			}
		case op.start != nil && op.replace:
			if err := d.Replace(ctx, *op.start); err != nil {
				m.log.Warn("replace lane", "destination", op.name, "err", err)
			}
		case op.start != nil:
			d.Add(*op.start)
		}
		if op.skip != "" {
			// A publish that routed before the destination left the table may still be appending a pending
			// row for it: let those finish first, so no pending delivery outlives the destination.
			if m.pub != nil {
				m.pub.Settle()
			}
			if n, err := m.opts.Store.SkipPending(ctx, op.name, op.skip); err != nil {
				m.log.Error("skip pending deliveries", "destination", op.name, "err", err)
			} else if n > 0 {
				m.log.Info("skipped pending deliveries", "destination", op.name, "skipped", n, "reason", op.skip)
			}
		}
		if op.then != nil {
			op.then(ctx)
		}
		if op.forget && m.opts.OnRemoved != nil {
			m.opts.OnRemoved(op.label)
		}
		if op.discard != nil {
			_ = op.discard.Close(ctx)
		}
		if op.done != nil {
			close(op.done)
			q.mu.Lock()
			if q.tails[op.name] == op.done {
				delete(q.tails, op.name)
			}
			q.mu.Unlock()
		}
	}
}
