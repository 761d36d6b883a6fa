package main

import (
	"math"
	"sync/atomic"
	"time"
)

// pacer hands publishers their send times. At rate 0 a publisher sends whenever it is free (closed loop) and
// its send time is simply now. With a rate, every request has a slot on one schedule shared by all publishers
// — slot i is due at start + i·batch/rate — so the offered load is fixed in advance (open loop): a publisher
// that comes back late sends the overdue slot at once, and latency is measured from the slot's scheduled time,
// not from when the request finally went out. A stall in Sluice therefore shows up as latency for every event
// that should have been sent during it, instead of silently lowering the send rate (coordinated omission).
//
// A shared schedule is used rather than golang.org/x/time/rate: a token bucket only remembers `burst` missed
// tokens, so once publishers fall behind it turns back into a closed loop and forgets the sends it owed.
type pacer struct {
	start, deadline, hardStop time.Time
	perSlot                   float64 // nanoseconds between slots; 0 = unpaced
	seq                       atomic.Int64
	late                      atomic.Int64 // slots not sent because the hard stop came first
}

// newPacer paces requests of batch events each at rate events/s (0 = as fast as possible) between start and
// start+d. A paced run that falls behind may overrun the deadline by grace to send its overdue slots.
func newPacer(rate float64, batch int, start time.Time, d, grace time.Duration) *pacer {
	p := &pacer{start: start, deadline: start.Add(d), hardStop: start.Add(d + grace)}
	if rate > 0 {
		p.perSlot = float64(batch) * 1e9 / rate
	}
	return p
}

// next blocks until the caller's next send is due and returns its scheduled time; false when the run is over.
func (p *pacer) next() (time.Time, bool) {
	if p.perSlot == 0 {
		now := time.Now()
		return now, now.Before(p.deadline)
	}
	i := p.seq.Add(1) - 1
	at := p.start.Add(time.Duration(float64(i) * p.perSlot))
	if !at.Before(p.deadline) {
		return at, false
	}
	if wait := time.Until(at); wait > 0 {
		time.Sleep(wait)
	} else if time.Now().After(p.hardStop) {
		p.late.Add(1)
		return at, false
	}
	return at, true
}

// missed is how many scheduled requests were never sent because the hard stop came first; call it once the
// publishers have all returned.
func (p *pacer) missed() int64 {
	if p.perSlot == 0 {
		return 0
	}
	slots := int64(math.Ceil(float64(p.deadline.Sub(p.start).Nanoseconds()) / p.perSlot))
	return p.late.Load() + max(0, slots-p.seq.Load())
}
