package destinations

import (
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
)

// defaultJitter applies when neither delivery.retry nor the destination sets a jitter.
const defaultJitter = 0.2

// PolicyFor is the one place a delivery policy is built from config: d's own settings where set, else the
// delivery defaults. A per-run subscription gets PolicyFor(cfg, &config.Destination{}) — the defaults.
func PolicyFor(cfg *config.Config, d *config.Destination) dispatch.Policy {
	p := dispatch.Policy{Timeout: cfg.Delivery.Timeout.D(), Concurrency: cfg.Delivery.Concurrency,
		Breaker:          dispatch.BreakerPolicy(cfg.Delivery.Breaker.Resolve(d.Breaker)),
		AutoDisableAfter: cfg.Delivery.AutoDisableAfter}
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
	p.Schedule, p.Jitter = cfg.Delivery.Retry.Delays(defaultJitter)
	if d.Retry != nil {
		if d.Retry.Exponential != nil || len(d.Retry.Schedule) > 0 {
			p.Schedule, _ = d.Retry.Delays(p.Jitter)
		}
		if d.Retry.Jitter != nil {
			p.Jitter = *d.Retry.Jitter
		}
	}
	return p
}
