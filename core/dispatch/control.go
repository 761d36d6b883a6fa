package dispatch

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// BreakerPolicy is when a lane's circuit breaker opens and how it probes while open. The zero value never
// opens.
type BreakerPolicy struct {
	// Window is how far back attempts are judged; a breaker that has not yet watched a whole window of
	// attempts (a new lane, one idle for a window, or one that just closed) does not open, so a burst of
	// first-attempt failures whose retries are not due yet is not mistaken for an outage.
	Window time.Duration
	// MinAttempts is the fewest attempts within Window that can open the breaker (0 = never opens).
	MinAttempts int
	// FailureRatio opens the breaker when at least this share of those attempts failed for the destination's
	// health (retryable failures: timeouts, refusals, 5xx); failures caused by the event itself never count.
	FailureRatio float64
	// ProbeInterval is the wait before the first probe; it doubles after each failed probe up to
	// MaxProbeInterval.
	ProbeInterval    time.Duration
	MaxProbeInterval time.Duration
}

func (b BreakerPolicy) enabled() bool { return b.MinAttempts > 0 && b.FailureRatio > 0 }

// windowSlots divides the window into buckets: the ratio is judged over the last window to within one bucket,
// at a fixed cost however many attempts a lane makes.
const windowSlots = 10

// control is a lane's flow control: a rate limit, a pause the far side asked for (Retry-After on a 429 or
// 503), and a circuit breaker that, while the destination keeps failing, holds the backlog in the store and
// sends one probe every probe interval.
type control struct {
	limiter *rate.Limiter // nil = unlimited
	bp      BreakerPolicy
	slot    time.Duration // one bucket's span

	mu          sync.Mutex
	pausedUntil time.Time
	// The attempt window: buckets of (attempts, failures), the newest at head, which began at headAt.
	tries, fails [windowSlots]int
	head         int
	headAt       time.Time
	watchedSince time.Time // when the current window of observation began (lane start or last close)

	open     bool
	probing  bool
	probeAt  time.Time     // when the next probe may go
	interval time.Duration // the wait after the next failed probe
	probeID  int64
	opened   int // times the breaker opened (tests, logs)
}

func newControl(p Policy) *control {
	c := &control{bp: p.Breaker}
	if c.bp.Window <= 0 {
		c.bp.Window = 30 * time.Second
	}
	if c.bp.ProbeInterval <= 0 {
		c.bp.ProbeInterval = 5 * time.Second
	}
	if c.bp.MaxProbeInterval < c.bp.ProbeInterval {
		c.bp.MaxProbeInterval = max(c.bp.ProbeInterval, 30*time.Second)
	}
	c.slot = max(c.bp.Window/windowSlots, time.Millisecond)
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

// dropProbe gives the probe up without a result (nothing was due to probe with, or it was not sent): the
// scanner may take another at once.
func (c *control) dropProbe() {
	c.mu.Lock()
	c.probing = false
	c.mu.Unlock()
}

// advance moves the window to now, emptying the buckets that fell out of it. Call with mu held.
func (c *control) advance(now time.Time) {
	if c.headAt.IsZero() {
		c.headAt = now
		return
	}
	steps := int(now.Sub(c.headAt) / c.slot)
	if steps <= 0 {
		return
	}
	for i := 0; i < min(steps, windowSlots); i++ {
		c.head = (c.head + 1) % windowSlots
		c.tries[c.head], c.fails[c.head] = 0, 0
	}
	c.headAt = c.headAt.Add(time.Duration(steps) * c.slot)
}

// record notes the results of one send: ok deliveries succeeded and failed ones failed for the destination's
// health (the caller leaves out failures caused by the event itself). probe says the send was the breaker's
// probe. It returns true when this result opened or closed the breaker.
func (c *control) record(probe bool, ok, failed int, now time.Time) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.bp.enabled() {
		return false
	}
	c.advance(now)
	if c.attempts() == 0 {
		// Nothing in the window (a new lane, or one idle for a window): watching starts again, so a burst after
		// a quiet spell is judged only once a whole window of it has been seen.
		c.watchedSince = now
	}
	c.tries[c.head] += ok + failed
	c.fails[c.head] += failed
	switch {
	case ok > 0:
		if probe {
			c.probing = false
		}
		if c.open {
			// Any success closes it: the destination answers. The window starts afresh, so the failures that
			// opened it cannot reopen it at the next failure.
			c.open, c.probing = false, false
			c.tries, c.fails = [windowSlots]int{}, [windowSlots]int{}
			c.watchedSince = now
			return true
		}
	case failed > 0:
		if c.open {
			if probe && c.probing {
				c.probing = false
				c.probeAt = now.Add(c.interval)
				c.interval = min(2*c.interval, c.bp.MaxProbeInterval)
			}
			return false
		}
		if c.shouldOpen(now) {
			c.open, c.probing = true, false
			c.opened++
			c.probeAt = now.Add(c.bp.ProbeInterval)
			c.interval = min(2*c.bp.ProbeInterval, c.bp.MaxProbeInterval)
			return true
		}
	default:
		if probe && c.probing {
			// A probe that failed for its own reasons (a bad event) says nothing of the destination: probe again.
			c.probing = false
		}
	}
	return false
}

// shouldOpen applies the policy to the window. Call with mu held.
func (c *control) shouldOpen(now time.Time) bool {
	if now.Sub(c.watchedSince) < c.bp.Window {
		return false
	}
	tries, fails := c.attempts(), 0
	for _, f := range c.fails {
		fails += f
	}
	return tries >= c.bp.MinAttempts && float64(fails) >= c.bp.FailureRatio*float64(tries)
}

// attempts is how many attempts the window holds. Call with mu held.
func (c *control) attempts() int {
	n := 0
	for _, t := range c.tries {
		n += t
	}
	return n
}

// timesOpened reports how often the breaker opened.
func (c *control) timesOpened() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened
}
