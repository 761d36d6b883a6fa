package dispatch

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// control is a lane's flow control: a rate limit, a pause the far side asked for (Retry-After on a 429 or
// 503), and a circuit breaker that turns a failing lane into one probe at a time.
type control struct {
	limiter *rate.Limiter // nil = unlimited

	mu          sync.Mutex
	pausedUntil time.Time
	threshold   int // consecutive failures that open the breaker; 0 = never
	failures    int
	open        bool
	probing     bool
	probeAt     time.Time
	probes      int // failed probes since the breaker opened, to walk the schedule
	probeID     int64
}

func (c *control) setProbe(id int64) {
	c.mu.Lock()
	c.probeID = id
	c.mu.Unlock()
}

func (c *control) isProbeID(id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.probing && c.probeID == id
}

// nextProbe is when the breaker next probes (now or later).
func (c *control) nextProbe() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.probeAt
}

func newControl(p Policy) *control {
	c := &control{threshold: p.BreakerFailures}
	if p.RatePerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(p.RatePerSecond), max(p.Burst, 1))
	}
	return c
}

// pause holds the whole lane until t (only ever extends).
func (c *control) pause(t time.Time) {
	c.mu.Lock()
	if t.After(c.pausedUntil) {
		c.pausedUntil = t
	}
	c.mu.Unlock()
}

// pausedFor reports how long sending must still wait.
func (c *control) pausedFor(now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pausedUntil.Sub(now)
}

// isOpen reports whether the breaker is open.
func (c *control) isOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// takeProbe reports whether the scanner may send one probe now; when not, it says when to look again.
func (c *control) takeProbe(now time.Time) (ok bool, retryAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.probing {
		return false, now.Add(time.Hour) // woken when the probe ends
	}
	if now.Before(c.probeAt) {
		return false, c.probeAt
	}
	c.probing = true
	return true, time.Time{}
}

// record notes the result of an attempt; it returns true when this result opened or closed the breaker.
// Only failures that speak of the destination's health count (retryable ones: timeouts, 5xx, refusals);
// a permanent failure is about one event.
func (c *control) record(success, healthFailure bool, now time.Time, schedule []time.Duration) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case success:
		c.failures = 0
		c.probing = false
		if c.open {
			c.open, c.probes = false, 0
			return true
		}
	case healthFailure:
		c.failures++
		if c.open {
			if c.probing {
				c.probing = false
				c.probes++
				c.probeAt = now.Add(step(schedule, c.probes))
			}
			return false
		}
		if c.threshold > 0 && c.failures >= c.threshold {
			c.open, c.probes = true, 0
			c.probeAt = now.Add(step(schedule, 0))
			return true
		}
	default:
		if c.probing {
			// A probe that failed for its own reasons (a bad event) says nothing of the destination: probe again.
			c.probing = false
		}
	}
	return false
}

// step is the n-th delay of the schedule, the last one repeating (1s without a schedule).
func step(schedule []time.Duration, n int) time.Duration {
	if len(schedule) == 0 {
		return time.Second
	}
	return schedule[min(n, len(schedule)-1)]
}
