package dispatch

import (
	"math/rand/v2"
	"time"
)

// Policy is how one destination is delivered to.
type Policy struct {
	Timeout     time.Duration
	Concurrency int
	// Schedule holds the delay before each retry; len(Schedule) retries follow the first attempt.
	Schedule []time.Duration
	Jitter   float64
	// RatePerSecond and Burst limit sends (0 = unlimited).
	RatePerSecond float64
	Burst         int
	// Breaker is when the lane's circuit breaker opens and how it probes (the zero value never opens).
	Breaker BreakerPolicy
	// AutoDisableAfter disables the destination after that many consecutive deliveries ended failed (a
	// permanent error, or every retry used; 0 = never): its lane stops sending, its pending deliveries end as
	// skipped, and Options.OnDisabled is called. A delivered delivery resets the count; a failed attempt that
	// will be retried leaves it alone, so an outage shorter than the retry schedule never disables.
	AutoDisableAfter int
}

// delay returns how long to wait after attempt n (1-based) failed, and false when attempts are exhausted.
// retryAfter, when the far side sent one, is honoured but clamped to the schedule's next two steps, so a
// receiver can neither hurry Sluice past the schedule nor park a delivery indefinitely.
func (p Policy) delay(n int, retryAfter time.Duration) (time.Duration, bool) {
	if n > len(p.Schedule) {
		return 0, false
	}
	step := p.Schedule[n-1]
	d := step
	if p.Jitter > 0 {
		d = time.Duration(float64(step) * (1 + p.Jitter*(2*rand.Float64()-1)))
	}
	if retryAfter > 0 {
		ceiling := 2 * step
		if n < len(p.Schedule) {
			ceiling = step + p.Schedule[n]
		}
		d = min(max(retryAfter, d), ceiling)
	}
	return max(d, 0), true
}
