package console

import (
	"sync"
	"time"
)

// Minutes is how far back Activity remembers: the overview's last hour.
const Minutes = 60

// Activity counts delivery outcomes per destination and minute over the last hour, in process (a ring of 60
// minute buckets per destination), and wakes live tails when events are accepted. It is a dispatch.Observer
// (by signature) and its Accepted fits intake.Options.OnAccepted. Counts start at zero when the process
// starts; they are for looking at, not for accounting.
type Activity struct {
	mu    sync.Mutex
	now   func() time.Time
	dests map[string]*ring
	wake  chan struct{}
}

type ring struct {
	minute    [Minutes]int64 // the unix minute a bucket holds, to tell a stale bucket from a current one
	delivered [Minutes]int
	failed    [Minutes]int // attempts that failed: retried or final
	// streak counts attempts that failed in a row since the last delivered one.
	streak int
}

// NewActivity returns an empty counter.
func NewActivity() *Activity {
	return &Activity{now: time.Now, dests: map[string]*ring{}, wake: make(chan struct{})}
}

// Observe notes one outcome ("delivered", "retry", "failed" or "skipped") of a delivery to destination.
func (a *Activity) Observe(destination, outcome string, _ time.Duration) {
	if outcome == "skipped" {
		return
	}
	m := a.now().Unix() / 60
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.dests[destination]
	if r == nil {
		r = &ring{}
		a.dests[destination] = r
	}
	i := int(m % Minutes)
	if r.minute[i] != m {
		r.minute[i], r.delivered[i], r.failed[i] = m, 0, 0
	}
	if outcome == "delivered" {
		r.delivered[i]++
		r.streak = 0
	} else {
		r.failed[i]++
		r.streak++
	}
}

// Accepted wakes every live tail waiting on Wait (n events were stored).
func (a *Activity) Accepted(n int) {
	if n <= 0 {
		return
	}
	a.mu.Lock()
	close(a.wake)
	a.wake = make(chan struct{})
	a.mu.Unlock()
}

// Wait returns a channel closed when events are next accepted.
func (a *Activity) Wait() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wake
}

// Forget drops a destination's counts (it was removed).
func (a *Activity) Forget(destination string) {
	a.mu.Lock()
	delete(a.dests, destination)
	a.mu.Unlock()
}

// Series is one destination's last hour, oldest minute first.
type Series struct {
	Delivered [Minutes]int
	Failed    [Minutes]int
	// Streak is the number of attempts that failed in a row, up to now.
	Streak int
}

// TotalDelivered and TotalFailed sum the hour.
func (s Series) TotalDelivered() int { return sum(s.Delivered[:]) }
func (s Series) TotalFailed() int    { return sum(s.Failed[:]) }

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// Hour returns destination's counts for the 60 minutes up to now.
func (a *Activity) Hour(destination string) Series {
	now := a.now().Unix() / 60
	a.mu.Lock()
	defer a.mu.Unlock()
	var s Series
	r := a.dests[destination]
	if r == nil {
		return s
	}
	s.Streak = r.streak
	for k := 0; k < Minutes; k++ {
		m := now - int64(Minutes-1-k)
		i := int(m % Minutes)
		if r.minute[i] == m {
			s.Delivered[k], s.Failed[k] = r.delivered[i], r.failed[i]
		}
	}
	return s
}
