package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/api"
	"github.com/sluicehq/sluice/core/api/console"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/core/store/postgres"
	"github.com/sluicehq/sluice/core/telemetry"
	"github.com/sluicehq/sluice/plugins/host"
	"github.com/sluicehq/sluice/sinks"
)

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "sluice.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	tuneGC()
	reg := registry()
	// Plugin processes live as long as this command; the host restarts them and kills them on the way out.
	plugins := host.New(host.Options{Supervise: true})
	defer plugins.Close()
	cfg, err := config.LoadWithPlugins(*file, reg, plugins.Loader())
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintln(stderr, "sluice: refusing to start with an invalid config")
		return 1
	}
	log := newLogger(stderr, cfg.Telemetry.Log)
	slog.SetDefault(log)
	servePlugins = plugins
	// Plugins are launched once: a reload with the same plugins list reuses them; a changed list needs a
	// restart (its error says so) rather than a second set of processes.
	reload := func() (*config.Config, error) {
		return config.LoadWithPlugins(*file, reg, reusePlugins(cfg.Plugins, cfg.Registry, reg))
	}
	if err := serve(ctx, cfg, reload, log); err != nil {
		log.Error("sluice stopped", "err", err)
		return 1
	}
	return 0
}

// DefaultGCPercent is the garbage collector's target when GOGC is not set. Sluice's live heap is small (pending
// work lives in the store), so letting it grow to five times the live heap instead of two costs tens of MB and
// saves a sixth of the CPU at full load (docs/performance.md). GOGC and GOMEMLIMIT still rule when set.
const DefaultGCPercent = 400

func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(DefaultGCPercent)
	}
}

func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func openStore(c config.Store, log *slog.Logger) (store.Store, error) {
	switch c.Driver {
	case "embedded":
		return embedded.Open(c.Path, embedded.Options{Logger: log})
	case "postgres":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return postgres.Open(ctx, postgres.Options{DSN: c.DSN, MaxConns: c.MaxConns, Logger: log, Prewarm: true})
	}
	return nil, fmt.Errorf("store driver %q is not available", c.Driver)
}

// servePlugins is the plugin host of the running `sluice serve`, for /readyz.
var servePlugins *host.Host

// serve runs the gateway on cfg. reload, when set, re-reads the config file (SIGHUP, a changed file).
func serve(ctx context.Context, cfg *config.Config, reload func() (*config.Config, error), log *slog.Logger) error {
	if addr := os.Getenv("SLUICE_PPROF_ADDR"); addr != "" {
		// Profiling on a separate, opt-in listener: never on the API port.
		go func() { log.Warn("pprof listener stopped", "err", http.ListenAndServe(addr, pprofMux())) }()
	}
	if err := checkExposure(cfg); err != nil {
		return err
	}
	stopTracing, tracing, err := telemetry.SetupTracing(ctx, buildVersion())
	if err != nil {
		return err
	}
	if tracing {
		log.Info("tracing on: exporting spans over OTLP/HTTP")
	}
	// Deferred first so it runs last: the spans of draining deliveries are flushed too.
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(flush); err != nil {
			log.Warn("tracing: flushing spans failed", "err", err)
		}
	}()
	st, err := openStore(cfg.Store, log)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	if err := st.ReleaseLeases(ctx); err != nil {
		return fmt.Errorf("release leases left by the last run: %w", err)
	}

	allow, _ := netguard.ParseCIDRs(cfg.Delivery.Network.AllowCIDRs)
	guard := netguard.New(allow)
	box, err := openBox(cfg.Store)
	if err != nil {
		return err
	}
	// The manager and the dispatcher call each other (a lane that disables itself tells the manager, which
	// removes the lane); the callbacks close over mgr, set just below.
	var mgr *destinations.Manager
	var metrics *telemetry.Metrics
	activity := console.NewActivity() // the console's last hour and live tail
	// Every attempt, of every sink, holds its bytes against this budget (delivery.max_inflight_bytes).
	sinks.InFlight = sinks.NewBudget(cfg.Delivery.MaxInFlightBytes)
	disp := dispatch.New(st, dispatch.Options{Logger: log, InFlight: sinks.InFlight,
		OnDisabled: func(name, reason string) { mgr.OnDisabled(name, reason) },
		OnFailed:   func(j store.Job, a store.Attempt) { mgr.OnFailed(j, a) },
		Observer:   observer{m: &metrics, a: activity, label: func(id string) string { return mgr.MetricLabel(id) }},
	})
	lanes := destinations.NewLanes(guard, "Sluice/"+buildVersion())
	proxy, _ := netguard.ParseProxy(cfg.Delivery.Network.Proxy) // validated by the loader
	runsAllow, _ := netguard.ParseCIDRs(cfg.Intake.InlineSubscriptions.AllowCIDRs)
	lanes.SetNetwork(netguard.NewDialer(guard, proxy), netguard.NewDialer(netguard.New(runsAllow), proxy))
	mgr = destinations.New(destinations.Options{Store: st, Dispatcher: disp, Lanes: lanes, Box: box,
		OnRemoved: func(name string) {
			activity.Forget(name)
			// Per-run subscriptions share one series ("inline"): one ending does not end it.
			if !strings.HasPrefix(name, destinations.RunPrefix) {
				metrics.Forget(name)
			}
		}, Logger: log})
	pending := func(ctx context.Context) (map[string]int64, error) {
		// The store counts by destination id; the metrics label by name.
		byID, err := st.PendingCounts(ctx)
		out := make(map[string]int64, len(byID))
		for id, n := range byID {
			out[mgr.MetricLabel(id)] += n
		}
		return out, err
	}
	var commits func() (int64, int64)
	var commitTime func() time.Duration
	if cc, ok := st.(store.CommitCounter); ok {
		commits, commitTime = cc.Stats, cc.CommitTime
	}
	metrics = telemetry.New(telemetry.Options{Pending: pending, Destinations: mgr.Enabled, Store: commits, StoreTime: commitTime})

	in := intake.New(st, disp, nil, intake.Options{
		DedupeWindow: cfg.Intake.DedupeWindow.D(), MaxBodyBytes: cfg.Intake.HTTP.MaxBodyBytes,
		Topics: cfg.Topics, ValidateTopics: cfg.Intake.ValidateTopics, Logger: log,
		OnAccepted:    func(n int) { metrics.EventsAccepted(n); activity.Accepted(n) },
		Subscriptions: mgr.Subscriptions(),
	})
	if err := mgr.Start(ctx, cfg, in); err != nil {
		_ = disp.Shutdown(context.Background())
		return err
	}
	defer mgr.Close()
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	go store.RunRetention(bg, st, cfg.Store.Retention.D(), store.RetentionOptions{Logger: log})
	go mgr.Watch(bg) // a shared store: follow what other nodes change
	consumeCtx, stopConsumers := context.WithCancel(context.Background())
	defer stopConsumers()
	var consumers sync.WaitGroup
	for _, c := range cfg.Intake.AMQP {
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			in.ConsumeAMQP(consumeCtx, c)
		}()
	}
	srv := api.New(api.Options{Store: st, Intake: in, Keys: api.NewKeys(cfg.Auth.Keys), Destinations: mgr,
		Metrics: metrics.Handler(), Console: cfg.Console, Sinks: cfg.Registry, Activity: activity,
		PortalSecret: api.PortalKey(cfg.Store), Numbers: numbers(cfg.Store)})
	if servePlugins != nil {
		srv.AddCheck("plugins", servePlugins.Check)
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		_ = disp.Shutdown(context.Background())
		return fmt.Errorf("listen on server.listen %s: %w", cfg.Server.Listen, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: min(10*time.Second, cfg.Server.ReadTimeout.D()),
		ReadTimeout: cfg.Server.ReadTimeout.D(), WriteTimeout: cfg.Server.WriteTimeout.D(), IdleTimeout: cfg.Server.IdleTimeout.D(),
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	hs.RegisterOnShutdown(srv.CloseStreams) // the console's live tails would hold the drain to its deadline
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	srv.SetReady(true)
	log.Info("sluice serving", "addr", ln.Addr().String(), "version", buildVersion(), "config", cfg.File,
		"store", cfg.Store.Driver, "destinations", len(mgr.Names("")), "pid", os.Getpid())
	if reload != nil {
		go func() {
			err := watchConfig(bg, cfg.File, log, func(reason string) {
				next, err := reload()
				if err == nil {
					err = mgr.Apply(ctx, next)
				}
				if err != nil {
					log.Error("config reload refused; the running config stays", "trigger", reason, "file", cfg.File,
						"errors", strings.Split(err.Error(), "\n"))
					return
				}
				in.SetCatalog(next.Topics, next.Intake.ValidateTopics)
				srv.SetKeys(api.NewKeys(next.Auth.Keys))
				log.Info("config reloaded", "trigger", reason, "file", cfg.File, "destinations", len(mgr.Names("")))
			})
			if err != nil {
				log.Error("config watcher stopped; reload with a restart", "err", err)
			}
		}()
	}

	select {
	case err := <-served:
		stopConsumers()
		consumers.Wait()
		_ = disp.Shutdown(context.Background())
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}

	// Drain: refuse new events, finish requests in progress, then let attempts in flight finish (bounded).
	log.Info("shutting down: draining in-flight deliveries", "timeout", cfg.Server.ShutdownTimeout.String())
	srv.SetReady(false)
	// Intake closes at once, with readiness: from here every publish answers 503 (an AMQP message is requeued),
	// so nothing is acknowledged after shutdown began but what was already being stored. Then the AMQP
	// consumers stop: messages not yet stored stay unacknowledged and return to their queues.
	in.Close()
	stopConsumers()
	consumers.Wait()
	mgr.Close() // per-run subscriptions stop expiring: their lanes drain with the rest
	drain, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.D())
	defer cancel()
	if err := hs.Shutdown(drain); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := disp.Shutdown(drain); errors.Is(err, context.DeadlineExceeded) {
		log.Warn("drain timed out; unfinished deliveries resume at next start")
	} else if err != nil {
		log.Warn("closing sinks", "err", err)
	}
	log.Info("sluice stopped")
	return nil
}

// reusePlugins is the plugin loader of a reload: the running plugins' specs when the list is unchanged.
func reusePlugins(running []config.Plugin, loaded, builtin *sinks.Registry) config.PluginLoader {
	return func(ps []config.Plugin) ([]sinks.Spec, map[int]error) {
		if !reflect.DeepEqual(ps, running) {
			errs := map[int]error{}
			for i := range ps {
				errs[i] = errors.New("the plugins list changed; plugins load at startup, so restart sluice to apply it")
			}
			return nil, errs
		}
		var specs []sinks.Spec
		for _, t := range loaded.Types() {
			if _, ok := builtin.Lookup(t); ok {
				continue
			}
			s, _ := loaded.Lookup(t)
			specs = append(specs, s)
		}
		return specs, nil
	}
}

// openBox opens the key ring that seals API destinations' secrets.
func openBox(c config.Store) (*seal.Box, error) {
	keys, err := c.EncryptionKeys()
	if err != nil {
		return nil, fmt.Errorf("store.encryption_key: %w", err)
	}
	return seal.New(keys)
}

// numbers hides delivery ids and cursors under store.encryption_key (plain without one; the key was checked
// by openBox at start).
func numbers(c config.Store) *seal.Numbers {
	keys, _ := c.EncryptionKeys()
	return seal.NewNumbers(keys)
}

// observer forwards dispatcher outcomes to the metrics, which are built after the dispatcher, and to the
// console's activity counter. The dispatcher names destinations by id; label turns one into its metrics label.
type observer struct {
	m     **telemetry.Metrics
	a     *console.Activity
	label func(id string) string
}

func (o observer) Observe(destination, outcome string, took time.Duration) {
	if m := *o.m; m != nil {
		m.Observe(o.label(destination), outcome, took)
	}
	o.a.Observe(destination, outcome, took)
}

// MinKeyLength is the shortest API key serve accepts on a listener beyond loopback.
const MinKeyLength = 24

// checkExposure refuses to listen beyond loopback with a weak key: anyone who can reach the port could guess
// a short key or the example's dev-admin-key.
func checkExposure(cfg *config.Config) error {
	host, _, err := net.SplitHostPort(cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	if isLoopback(host) {
		return nil
	}
	for i, k := range cfg.Auth.Keys {
		if k.Key == "dev-admin-key" || len(k.Key) < MinKeyLength {
			return fmt.Errorf("auth.keys[%d].key (%s): refusing to listen on %s (beyond loopback) with a key shorter than %d characters or the example's dev-admin-key; "+
				"set a long random key, e.g. SLUICE_ADMIN_KEY=$(openssl rand -base64 32), or listen on 127.0.0.1", i, k.Name, cfg.Server.Listen, MinKeyLength)
		}
	}
	return nil
}

// isLoopback reports whether a listen host binds loopback only (an empty host or 0.0.0.0 binds every address).
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
