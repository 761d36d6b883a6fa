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
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/api"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/plugins/host"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
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
	if err := serve(ctx, cfg, cfg.Registry, log); err != nil {
		log.Error("sluice stopped", "err", err)
		return 1
	}
	return 0
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
	}
	return nil, fmt.Errorf("store driver %q is not available", c.Driver)
}

// servePlugins is the plugin host of the running `sluice serve`, for /readyz.
var servePlugins *host.Host

func serve(ctx context.Context, cfg *config.Config, reg *sinks.Registry, log *slog.Logger) error {
	if addr := os.Getenv("SLUICE_PPROF_ADDR"); addr != "" {
		// Profiling on a separate, opt-in listener: never on the API port.
		go func() { log.Warn("pprof listener stopped", "err", http.ListenAndServe(addr, pprofMux())) }()
	}
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
	disp := dispatch.New(st, dispatch.Options{Logger: log})
	var dests []dispatch.Destination
	for i := range cfg.Destinations {
		d := &cfg.Destinations[i]
		spec, _ := reg.Lookup(d.Type)
		pol := cfg.PolicyFor(d)
		sink, err := spec.New(ctx, d.SinkConfig, sinks.Env{
			Destination: d.Name, Dial: guard.DialContext, UserAgent: "Sluice/" + buildVersion(), Timeout: pol.Timeout,
		})
		if err != nil {
			return fmt.Errorf("destination %s: %w", d.Name, err)
		}
		dests = append(dests, dispatch.Destination{Name: d.Name, Sink: sink, Policy: dispatch.Policy{
			Timeout: pol.Timeout, Concurrency: pol.Concurrency, Schedule: pol.Schedule, Jitter: pol.Jitter,
			RatePerSecond: pol.RatePerSecond, Burst: pol.Burst, BreakerFailures: pol.BreakerFailures,
		}, Prepare: prepareFor(d), Ordered: d.OrderingKey != ""})
	}
	disp.Start(dests)

	defPol := cfg.PolicyFor(&config.Destination{})
	inl := cfg.Intake.InlineSubscriptions
	in := intake.New(st, disp, intake.NewRouter(cfg.Destinations), intake.Options{
		DedupeWindow: cfg.Intake.DedupeWindow.D(), MaxBodyBytes: cfg.Intake.HTTP.MaxBodyBytes,
		Topics: cfg.Topics, ValidateTopics: cfg.Intake.ValidateTopics, Logger: log,
		Inline: intake.InlineOptions{
			Enabled: inl.Enabled, TTL: inl.TTL.D(), MaxPerCorrelation: inl.MaxPerCorrelation,
			NewSink: inlineSink(ctx, guard, defPol.Timeout),
			Policy: dispatch.Policy{Timeout: defPol.Timeout, Concurrency: defPol.Concurrency,
				Schedule: defPol.Schedule, Jitter: defPol.Jitter, RatePerSecond: defPol.RatePerSecond,
				Burst: defPol.Burst, BreakerFailures: defPol.BreakerFailures},
		},
	})
	if err := in.StartInline(ctx); err != nil {
		_ = disp.Shutdown(context.Background())
		return fmt.Errorf("restore inline subscriptions: %w", err)
	}
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
	srv := api.New(st, in, api.NewKeys(cfg.Auth.Keys))
	if servePlugins != nil {
		srv.AddCheck("plugins", servePlugins.Check)
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		_ = disp.Shutdown(context.Background())
		return fmt.Errorf("listen on server.listen %s: %w", cfg.Server.Listen, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	srv.SetReady(true)
	log.Info("sluice serving", "addr", ln.Addr().String(), "version", buildVersion(), "config", cfg.File,
		"store", cfg.Store.Driver, "destinations", len(dests), "pid", os.Getpid())

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
	// AMQP consumers stop first: messages not yet stored stay unacknowledged and return to their queues.
	stopConsumers()
	consumers.Wait()
	in.Close()
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

// prepareFor returns the dispatcher hook that applies a destination's transform (nil without one). The result
// replaces what the destination receives (event.Body); an error fails the delivery permanently with the reason.
func prepareFor(d *config.Destination) func(*event.Event) error {
	tr := d.TransformExpr
	if tr == nil {
		return nil
	}
	return func(ev *event.Event) error {
		doc, err := ev.Doc()
		if err != nil {
			return fmt.Errorf("transform: event data is not JSON: %v", err)
		}
		body, err := tr.Apply(doc)
		if err != nil {
			return err
		}
		ev.Body = body
		return nil
	}
}

// inlineSink builds the webhook sink of a per-run subscription: signed with its secret when it has one, and
// always dialling through the SSRF guard. An IP-literal URL the guard refuses is refused at registration.
func inlineSink(ctx context.Context, guard *netguard.Guard, timeout time.Duration) func(store.Subscription) (sinks.Sink, error) {
	return func(sub store.Subscription) (sinks.Sink, error) {
		wc := webhook.NewConfig()
		wc.URL = sub.URL
		if sub.Secret != "" {
			wc.Secrets = []string{sub.Secret}
		} else {
			wc.Signing = webhook.SigningNone
		}
		if err := wc.Validate(); err != nil {
			return nil, errors.New(strings.ReplaceAll(err.Error(), "secrets[0]", "secret"))
		}
		if u, err := url.Parse(sub.URL); err == nil {
			if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
				if err := guard.Check(ip); err != nil {
					return nil, err
				}
			}
		}
		return webhook.New(ctx, wc, sinks.Env{Destination: sub.Name, Dial: guard.DialContext,
			UserAgent: "Sluice/" + buildVersion(), Timeout: timeout})
	}
}
