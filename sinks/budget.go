package sinks

import (
	"context"
	"sync"
)

// DefaultInFlightBytes bounds the request bytes all in-flight attempts hold together (see InFlight).
const DefaultInFlightBytes = 256 << 20

// InFlight is the process-wide budget of bytes held by attempts in flight: a sink acquires an attempt's
// request size before sending and releases it when the answer has been read. Without it, memory would grow
// with destinations × concurrency × event size; with it, attempts past the budget wait (their context still
// cancels them) instead.
var InFlight = NewBudget(DefaultInFlightBytes)

// Budget is a counting semaphore of bytes. Safe for concurrent use.
type Budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	waiting int
	changed chan struct{} // closed and replaced on every Release
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: limit, changed: make(chan struct{})}
}

// Acquire takes n bytes, waiting while the budget is spent; it returns ctx's error if ctx ends first. A
// request larger than the whole budget takes all of it (it runs alone rather than never). Release the value
// Acquire returned.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 1), b.limit)
	for {
		b.mu.Lock()
		if b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return n, nil
		}
		ch := b.changed
		b.waiting++
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		b.mu.Lock()
		b.waiting--
		b.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// Release returns n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// Used returns the bytes held now, and how many acquirers wait (for tests and metrics).
func (b *Budget) Used() (bytes int64, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.waiting
}
