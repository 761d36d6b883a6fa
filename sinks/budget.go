package sinks

import (
	"context"
	"slices"
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

// Budget is a counting semaphore of bytes, first come first served: once an acquirer waits, later ones queue
// behind it even when their bytes would fit, so a large attempt is never starved by a stream of small ones.
// Safe for concurrent use. Acquiring within the limit while nobody waits is one atomic compare-and-swap, under
// no lock; only an acquirer that must wait, and a release while someone waits, take the lock.
type Budget struct {
	limit   int64
	used    atomic.Int64
	peak    atomic.Int64 // the highest used has been
	waiting atomic.Int64 // acquirers queued, or about to look under mu

	mu    sync.Mutex
	queue []*budgetWaiter // oldest first
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when the bytes are taken for it
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: max(limit, 1)}
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

// Acquire takes n bytes, waiting while the budget is spent or others wait before it; it returns ctx's error
// if ctx ends first, having taken nothing. A request larger than the whole budget takes all of it (it runs
// alone rather than never). Release the value Acquire returned.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 1), b.limit)
	if b.waiting.Load() == 0 && b.take(n) {
		return n, nil
	}
	b.mu.Lock()
	// Counted before looking: a Release that frees bytes after this look either sees the count and grants
	// under mu (which waits for this acquirer to be queued), or came before the count and so before the look.
	b.waiting.Add(1)
	if len(b.queue) == 0 && b.take(n) {
		b.waiting.Add(-1)
		b.mu.Unlock()
		return n, nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.queue = append(b.queue, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-w.ready:
		// Granted as the context ended: the bytes go back, to whoever waits next.
		b.mu.Unlock()
		b.Release(n)
		return 0, ctx.Err()
	default:
	}
	i := slices.Index(b.queue, w)
	b.queue = slices.Delete(b.queue, i, i+1)
	b.waiting.Add(-1)
	if i == 0 {
		// The ones behind it may fit now.
		b.grant()
	}
	b.mu.Unlock()
	return 0, ctx.Err()
}

// Release returns n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	b.used.Add(-n)
	if b.waiting.Load() > 0 {
		b.mu.Lock()
		b.grant()
		b.mu.Unlock()
	}
}

// grant takes the bytes of queued acquirers, oldest first, for as long as the oldest fits. b.mu is held.
func (b *Budget) grant() {
	for len(b.queue) > 0 && b.take(b.queue[0].n) {
		w := b.queue[0]
		b.queue[0] = nil
		b.queue = b.queue[1:]
		b.waiting.Add(-1)
		close(w.ready)
	}
	if len(b.queue) == 0 {
		b.queue = nil // let the backing array go
	}
}

// Used returns the bytes held now, and how many acquirers wait (for tests and metrics).
func (b *Budget) Used() (bytes int64, waiting int) {
	return b.used.Load(), int(b.waiting.Load())
}

// Peak returns the most bytes held at once since the budget was made (for tests and metrics).
func (b *Budget) Peak() int64 { return b.peak.Load() }
