// Package telemetry exposes Sluice's Prometheus metrics.
//
// Metrics keeps its own registry (never the global one), so several servers in one process — tests — do not
// clash, and /metrics shows exactly what Sluice registered plus the Go and process collectors.
//
// May import: nothing of Sluice's.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options tell Metrics where to read the gauges computed at scrape time.
type Options struct {
	// Pending returns the number of pending deliveries per destination (store.Store.PendingCounts). Its result
	// is cached for PendingTTL, so frequent scrapes do not load the store. Nil leaves the gauge out.
	Pending func(ctx context.Context) (map[string]int64, error)
	// Destinations returns the destinations the gateway runs, name → enabled. Each shows in
	// sluice_destination_enabled, and in sluice_pending_deliveries (0 when it has nothing pending).
	Destinations func() map[string]bool
	// Store returns how many transactions the store's group commit has made and how many operations (appends,
	// completions, …) they carried since it opened: sluice_store_commits_total and sluice_store_operations_total,
	// whose ratio is how many operations share a commit. Nil leaves them out.
	Store func() (commits, ops int64)
	// StoreTime returns the time the store's writers have spent on those commits, summed over writers:
	// sluice_store_commit_seconds_total, whose rate is how busy they are. Nil leaves it out.
	StoreTime func() time.Duration
	// PendingTTL is how long Pending's answer is reused (default 2s).
	PendingTTL time.Duration
	// Logger receives scrape errors (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Metrics holds Sluice's Prometheus metrics. Its methods are safe for concurrent use. It implements
// dispatch.Observer (by signature; this package does not import dispatch).
type Metrics struct {
	reg      *prometheus.Registry
	accepted prometheus.Counter
	outcomes *prometheus.CounterVec
	duration *prometheus.HistogramVec
	log      *slog.Logger
	handler  http.Handler
	// series caches each destination's children of outcomes and duration (destination → *destSeries), so an
	// outcome costs a map load instead of hashing and looking up its label values in both vectors.
	series sync.Map
}

// destSeries holds one destination's series, each made on first use (an outcome never seen shows no series).
type destSeries struct {
	outcome  sync.Map     // outcome → prometheus.Counter
	duration atomic.Value // timer, once an attempt was timed (a skip is not)
}

type timer struct{ prometheus.Observer }

// DurationBuckets are the bounds of sluice_delivery_duration_seconds: 1ms (a loopback receiver) to 30s (past
// the default 15s timeout, so timeouts land in a bucket of their own).
var DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30}

// New registers Sluice's metrics, the Go runtime's and the process's on a new registry.
func New(opts Options) *Metrics {
	if opts.PendingTTL <= 0 {
		opts.PendingTTL = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: opts.Logger,
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_events_accepted_total",
			Help: "Events stored (duplicates excluded).",
		}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_deliveries_total",
			Help: "Delivery outcomes by destination: delivered, retry (a failed attempt that will be retried), failed, skipped.",
		}, []string{"destination", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_delivery_duration_seconds",
			Help:    "Duration of delivery attempts by destination.",
			Buckets: DurationBuckets,
		}, []string{"destination"}),
	}
	m.reg.MustRegister(m.accepted, m.outcomes, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{opts: opts})
	if st := opts.Store; st != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sluice_store_commits_total",
				Help: "Transactions the store's group commit made (embedded: every write, each an fsync of the WAL; PostgreSQL: the shared transactions of appends and completions).",
			}, func() float64 { c, _ := st(); return float64(c) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sluice_store_operations_total",
				Help: "Store operations (appends, completions, claims, ...) those commits carried; operations per commit is how well group commit shares them.",
			}, func() float64 { _, o := st(); return float64(o) }))
	}
	if st := opts.StoreTime; st != nil {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sluice_store_commit_seconds_total",
			Help: "Time the store's writers spent on their commits (running each group and committing it, the sync or round trip included), summed over writers; its rate is how busy they are, and the embedded store's one writer near 1 is its ceiling.",
		}, func() float64 { return st().Seconds() }))
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{m.log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg, // counts promhttp's own errors too
	})
	return m
}

// Registry returns the registry the metrics live in (to add more, or to gather in tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// EventsAccepted counts n stored events.
func (m *Metrics) EventsAccepted(n int) {
	if n > 0 {
		m.accepted.Add(float64(n))
	}
}

// Observe counts one delivery outcome and, for an attempt (not a skip), its duration.
func (m *Metrics) Observe(destination, outcome string, took time.Duration) {
	ds := m.seriesOf(destination)
	c, ok := ds.outcome.Load(outcome)
	if !ok {
		c, _ = ds.outcome.LoadOrStore(outcome, m.outcomes.WithLabelValues(destination, outcome))
	}
	c.(prometheus.Counter).Inc()
	if outcome != "skipped" {
		d, ok := ds.duration.Load().(timer)
		if !ok {
			d = timer{m.duration.WithLabelValues(destination)}
			ds.duration.Store(d) // one concrete type, as atomic.Value requires
		}
		d.Observe(took.Seconds())
	}
}

func (m *Metrics) seriesOf(destination string) *destSeries {
	if ds, ok := m.series.Load(destination); ok {
		return ds.(*destSeries)
	}
	ds, _ := m.series.LoadOrStore(destination, &destSeries{})
	return ds.(*destSeries)
}

// Forget drops a deleted destination's series, so per-destination metrics do not pile up as destinations come
// and go (per-run subscriptions in particular). An outcome observed after Forget makes the series again.
func (m *Metrics) Forget(destination string) {
	m.series.Delete(destination)
	m.outcomes.DeletePartialMatch(prometheus.Labels{"destination": destination})
	m.duration.DeleteLabelValues(destination)
}

// Handler serves the registry in the Prometheus exposition format. A gauge that cannot be read (the store is
// down) is left out and logged; the rest is still served.
func (m *Metrics) Handler() http.Handler { return m.handler }

// slogPrinter adapts a slog.Logger to promhttp's Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("serve metrics", "err", fmt.Sprint(v...))
}

var (
	pendingDesc = prometheus.NewDesc("sluice_pending_deliveries",
		"Deliveries waiting to be delivered (or retried), by destination.", []string{"destination"}, nil)
	enabledDesc = prometheus.NewDesc("sluice_destination_enabled",
		"1 when the destination is enabled, 0 when it was disabled (by hand, auto-disable or 410 Gone).", []string{"destination"}, nil)
)

// stateCollector computes the destination gauges at scrape time.
type stateCollector struct {
	opts Options

	mu      sync.Mutex
	at      time.Time
	pending map[string]int64
	err     error
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- enabledDesc
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var dests map[string]bool
	if c.opts.Destinations != nil {
		dests = c.opts.Destinations()
	}
	for name, on := range dests {
		v := 0.0
		if on {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(enabledDesc, prometheus.GaugeValue, v, name)
	}
	if c.opts.Pending == nil {
		return
	}
	pending, err := c.pendingCounts()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(pendingDesc, err)
		return
	}
	for name, n := range pending {
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(n), name)
	}
	for name := range dests {
		if _, ok := pending[name]; !ok {
			ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, 0, name)
		}
	}
}

// pendingCounts returns the cached counts, asking the store again once they are older than PendingTTL. An
// error is cached as long, so a failing store is not asked at every scrape either.
func (c *stateCollector) pendingCounts() (map[string]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if !c.at.IsZero() && now.Sub(c.at) < c.opts.PendingTTL {
		return c.pending, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.pending, c.err = c.opts.Pending(ctx)
	c.at = now
	return c.pending, c.err
}
