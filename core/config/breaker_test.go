package config_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
)

const breakerDest = `destinations:
  - name: a
    type: webhook
    topics: ["*"]
    config: {url: "https://example.com/x", signing: none}
`

func TestBreakerResolve(t *testing.T) {
	def := config.BreakerPolicy{Window: 30 * time.Second, MinAttempts: 20, FailureRatio: 0.8, ProbeInterval: 5 * time.Second,
		MaxProbeInterval: 30 * time.Second}
	cases := []struct {
		name, src string
		want      config.BreakerPolicy
	}{
		{"defaults", base + breakerDest, def},
		{"delivery block", base + "delivery: {breaker: {window: 1m, min_attempts: 5, failure_ratio: 0.5, probe_interval: 1s, max_probe_interval: 8s}}\n" + breakerDest,
			config.BreakerPolicy{Window: time.Minute, MinAttempts: 5, FailureRatio: 0.5, ProbeInterval: time.Second, MaxProbeInterval: 8 * time.Second}},
		{"destination fields override, the rest inherits", base + breakerDest + "    breaker: {failure_ratio: 0.5, max_probe_interval: 1m}\n",
			config.BreakerPolicy{Window: 30 * time.Second, MinAttempts: 20, FailureRatio: 0.5, ProbeInterval: 5 * time.Second, MaxProbeInterval: time.Minute}},
		{"deprecated failures", base + "delivery: {breaker: {failures: 7}}\n" + breakerDest,
			config.BreakerPolicy{Window: 30 * time.Second, MinAttempts: 7, FailureRatio: 1, ProbeInterval: 5 * time.Second, MaxProbeInterval: 30 * time.Second}},
		{"deprecated failures 0 turns it off", base + breakerDest + "    breaker: {failures: 0}\n",
			config.BreakerPolicy{Window: 30 * time.Second, MinAttempts: 0, FailureRatio: 1, ProbeInterval: 5 * time.Second, MaxProbeInterval: 30 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse("f.yaml", []byte(c.src), noEnv, reg())
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Delivery.Breaker.Resolve(cfg.Destinations[0].Breaker); got != c.want {
				t.Fatalf("breaker %+v; want %+v", got, c.want)
			}
		})
	}
}

func TestBreakerErrors(t *testing.T) {
	cases := []struct {
		name, src string
		paths     []string
	}{
		{"ratio above 1", base + "delivery: {breaker: {failure_ratio: 1.5}}\n", []string{"delivery.breaker.failure_ratio"}},
		{"ratio 0 in the defaults", base + "delivery: {breaker: {failure_ratio: 0}}\n", []string{"delivery.breaker.failure_ratio"}},
		{"negative window", base + "delivery: {breaker: {window: -1s}}\n", []string{"delivery.breaker.window"}},
		{"zeros in the defaults", base + "delivery: {breaker: {window: 0s, min_attempts: 0, probe_interval: 0s}}\n",
			[]string{"delivery.breaker.window", "delivery.breaker.min_attempts", "delivery.breaker.probe_interval"}},
		{"max below probe", base + "delivery: {breaker: {probe_interval: 10s, max_probe_interval: 5s}}\n",
			[]string{"delivery.breaker.max_probe_interval"}},
		{"destination", base + breakerDest + "    breaker: {failure_ratio: -0.1, min_attempts: -1, failures: -2}\n",
			[]string{"destinations[0].breaker.min_attempts", "destinations[0].breaker.failure_ratio", "destinations[0].breaker.failures"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("f.yaml", []byte(c.src), noEnv, reg())
			var es config.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v is not config.Errors", err)
			}
			var paths []string
			for _, e := range es {
				paths = append(paths, e.Path)
			}
			for _, p := range c.paths {
				if !slices.Contains(paths, p) {
					t.Fatalf("no error at %s in:\n%v", p, err)
				}
			}
		})
	}
}
