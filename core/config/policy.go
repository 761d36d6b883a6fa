package config

import "time"

// Policy is a destination's effective delivery settings: its own where set, else the delivery defaults.
type Policy struct {
	Timeout     time.Duration
	Concurrency int
	// Schedule holds the delays before each retry; len(Schedule) retries follow the first attempt.
	Schedule []time.Duration
	Jitter   float64
	// RatePerSecond and Burst limit sends (0 = unlimited).
	RatePerSecond float64
	Burst         int
	// Breaker is when the lane's circuit breaker opens and how it probes.
	Breaker BreakerPolicy
	// AutoDisableAfter disables the destination after that many consecutive deliveries ended failed (0 = never).
	AutoDisableAfter int
}

// PolicyFor resolves d's policy against the delivery defaults.
func (c *Config) PolicyFor(d *Destination) Policy {
	p := Policy{Timeout: c.Delivery.Timeout.D(), Concurrency: c.Delivery.Concurrency,
		Breaker: c.Delivery.Breaker.resolve(d.Breaker), AutoDisableAfter: c.Delivery.AutoDisableAfter}
	if d.AutoDisableAfter != nil {
		p.AutoDisableAfter = *d.AutoDisableAfter
	}
	if d.RateLimit != nil {
		p.RatePerSecond, p.Burst = d.RateLimit.PerSecond, max(d.RateLimit.Burst, 1)
	}
	if d.Timeout > 0 {
		p.Timeout = d.Timeout.D()
	}
	if d.Concurrency > 0 {
		p.Concurrency = d.Concurrency
	}
	p.Schedule, p.Jitter = c.Delivery.Retry.resolve(0.2)
	if d.Retry != nil {
		if d.Retry.Exponential != nil || len(d.Retry.Schedule) > 0 {
			p.Schedule, _ = d.Retry.resolve(p.Jitter)
		}
		if d.Retry.Jitter != nil {
			p.Jitter = *d.Retry.Jitter
		}
	}
	return p
}

// resolve turns a retry block into a list of delays; exponential wins over a schedule.
func (r *Retry) resolve(defJitter float64) ([]time.Duration, float64) {
	jitter := defJitter
	if r.Jitter != nil {
		jitter = *r.Jitter
	}
	if e := r.Exponential; e != nil {
		out := make([]time.Duration, 0, e.Attempts)
		d := e.Base.D()
		for i := 0; i < e.Attempts; i++ {
			out = append(out, min(d, e.Max.D()))
			if d < e.Max.D() {
				d *= 2
			}
		}
		return out, jitter
	}
	out := make([]time.Duration, len(r.Schedule))
	for i, d := range r.Schedule {
		out[i] = d.D()
	}
	return out, jitter
}
