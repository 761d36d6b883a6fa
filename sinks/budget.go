package sinks

import (
	"context"
	"sync"
	"sync/atomic"
)

// DefaultInFlightBytes bounds the bytes all in-flight attempts hold together (see InFlight).
const DefaultInFlightBytes = 256 << 20

// InFlight is the process-wide budget of bytes held by attempts in flight, whatever their sink: the dispatcher
// acquires the size of a batch's events before handing it to the sink and releases it when the attempt has
// ended (the sink's answer read). Without it, memory would grow with destinations × concurrency × event size;
// with it, attempts past the budget wait (their context still cancels them) instead. Set it before the
// dispatcher starts (delivery.max_inflight_bytes).
var InFlight = NewBudget(DefaultInFlightBytes)

// Budget is a counting semaphore of bytes. Safe for concurrent use. Acquiring within the limit is one atomic
// compare-and-swap, under no lock; only an acquirer that must wait takes the lock.
type Budget struct {
	limit   int64
	used    atomic.Int64
	peak    atomic.Int64 // the highest used has been
	waiting atomic.Int64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by a Release while someone waits
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: max(limit, 1), changed: make(chan struct{})}
}

// Limit returns the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// take takes n bytes if they fit.
func (b *Budget) take(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			for p := b.peak.Load(); u+n > p && !b.peak.CompareAndSwap(p, u+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

// Acquire takes n bytes, waiting while the budget is spent; it returns ctx's error if ctx ends first. A
// request larger than the whole budget takes all of it (it runs alone rather than never). Release the value
// Acquire returned.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 1), b.limit)
	if b.take(n) {
		return n, nil
	}
	for {
		// Registered as waiting before looking again: a Release either sees the waiter and wakes it, or
		// happened before the look, which then sees the bytes it returned.
		b.mu.Lock()
		b.waiting.Add(1)
		ch := b.changed
		b.mu.Unlock()
		ok := b.take(n)
		if !ok {
			select {
			case <-ch:
			case <-ctx.Done():
			}
		}
		b.waiting.Add(-1)
		if ok {
			return n, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// Release returns n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	b.used.Add(-n)
	if b.waiting.Load() > 0 {
		b.mu.Lock()
		close(b.changed)
		b.changed = make(chan struct{})
		b.mu.Unlock()
	}
}

// Used returns the bytes held now, and how many acquirers wait (for tests and metrics).
func (b *Budget) Used() (bytes int64, waiting int) {
	return b.used.Load(), int(b.waiting.Load())
}

// Peak returns the most bytes held at once since the budget was made (for tests and metrics).
func (b *Budget) Peak() int64 { return b.peak.Load() }
