package config

import "time"

// Delays turns a retry block into the delays before each retry, and its jitter (defJitter when the block
// sets none). An exponential block wins over a schedule. core/destinations builds a destination's delivery
// policy from these (destinations.PolicyFor); config itself knows nothing of the dispatcher.
func (r *Retry) Delays(defJitter float64) ([]time.Duration, float64) {
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
