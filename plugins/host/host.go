package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/plugins/sdk/wire"
	"github.com/sluicehq/sluice/sinks"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// Options tunes a Host. Zero values take the defaults.
type Options struct {
	// Logger receives the host's and the plugins' logs; nil follows slog.Default, also when it is set
	// after New (Sluice configures logging from the config the plugins help load): records logged before
	// then wait for it rather than go out as the standard library's plain text.
	Logger *slog.Logger
	// StartTimeout bounds how long a plugin may take to start and answer the handshake (default 10s).
	StartTimeout time.Duration
	// Supervise restarts plugins that exit or fail their health check. Commands that only describe and
	// validate (sluice validate, sluice sinks) leave it off.
	Supervise bool
	// HealthInterval is how often a running plugin is health-checked (default 2s); a check that does not
	// answer within HealthTimeout (default 2s) counts as a hang.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	// MinBackoff and MaxBackoff bound the delay before a restart; it doubles with each crash in a row
	// (defaults 100ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// UnhealthyAfter is how many crashes in a row mark a plugin's destinations unhealthy (default 3).
	UnhealthyAfter int
	// StableAfter is how long a restarted plugin must stay up for its crash count to reset (default 30s).
	StableAfter time.Duration
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.StartTimeout, 10*time.Second)
	def(&o.HealthInterval, 2*time.Second)
	def(&o.HealthTimeout, 2*time.Second)
	def(&o.MinBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.StableAfter, 30*time.Second)
	if o.UnhealthyAfter <= 0 {
		o.UnhealthyAfter = 3
	}
}

// Host owns the plugin processes of one config.
type Host struct {
	opts  Options
	log   *slog.Logger
	early *early // records waiting for logging to be configured; nil with Options.Logger

	mu      sync.Mutex
	plugins []*Plugin
	closed  bool
}

// New returns a Host; it starts nothing until Load.
func New(opts Options) *Host {
	var e *early
	if opts.Logger == nil {
		dh := newDefaultHandler()
		e, opts.Logger = dh.early, slog.New(dh)
	}
	opts.defaults()
	return &Host{opts: opts, log: opts.Logger, early: e}
}

// Loader returns the hook config.LoadWithPlugins calls to launch the plugins a config declares.
func (h *Host) Loader() config.PluginLoader { return h.Load }

// Load launches every plugin, asks each to describe itself and returns a sink spec per plugin. errs maps a
// plugin's index to why it could not be launched; its destinations then report only that.
func (h *Host) Load(plugins []config.Plugin) (specs []sinks.Spec, errs map[int]error) {
	errs = map[int]error{}
	loaded := make([]*Plugin, len(plugins))
	var wg sync.WaitGroup
	for i, c := range plugins {
		p := &Plugin{host: h, name: c.Name, path: c.Path, env: c.Env, log: h.log.With("plugin", c.Name),
			dests: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
		if c.SHA256 != "" {
			p.pin = strings.ToLower(c.SHA256)
		}
		loaded[i] = p
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.pin == "" {
				p.log.Warn("plugin is not pinned (allow_unpinned: true): any binary at its path will be run; pin it with sha256 in production",
					"path", p.path)
			}
			pr, err := p.launch()
			if err != nil {
				p.loadErr = err
				return
			}
			p.cur = pr
		}()
	}
	wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, p := range loaded {
		if h.closed {
			p.kill()
			continue
		}
		h.plugins = append(h.plugins, p)
		if p.loadErr != nil {
			errs[i] = p.loadErr
			close(p.done)
		} else {
			p.log.Info("plugin started", "path", p.path, "pid", p.cur.pid, "sdk", p.desc.SDKVersion,
				"protocol", wire.ProtocolVersion)
			if h.opts.Supervise {
				go p.supervise()
			} else {
				close(p.done)
			}
		}
		specs = append(specs, p.spec())
	}
	return specs, errs
}

// Plugins returns the loaded plugins in config order.
func (h *Host) Plugins() []*Plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.plugins)
}

// Check reports plugins that keep crashing, naming their destinations; nil when all are healthy. It is
// what /readyz asks.
func (h *Host) Check(context.Context) error {
	var errs []error
	for _, p := range h.Plugins() {
		if err := p.Health(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var cleanupOnce sync.Once

// Close stops supervision and kills every plugin process (go-plugin asks each to exit first).
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	ps := slices.Clone(h.plugins)
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.close()
		}()
	}
	wg.Wait()
	cleanupOnce.Do(plugin.CleanupClients)
	h.flushLog(true)
}

// flushLog hands records logged before logging was configured to the configured handler once there is one
// (force: to whatever handler there is).
func (h *Host) flushLog(force bool) {
	if h.early != nil {
		h.early.flush(force)
	}
}

// Plugin is one supervised plugin executable.
type Plugin struct {
	host *Host
	name string
	path string
	env  []string // names of the host's variables the plugin may see (plugins[].env)
	pin  string   // lower-case hex sha256, or "" when allow_unpinned
	log  *slog.Logger

	desc    wire.Description // from the first launch
	loadErr error

	mu       sync.Mutex
	cur      *proc // nil while restarting
	gen      uint64
	crashes  int   // in a row
	lastErr  error // why it last died
	dests    map[string]bool
	changed  chan struct{} // closed when cur is replaced
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// proc is one running process of a plugin.
type proc struct {
	client  *plugin.Client
	rpc     wire.Client
	health  grpc_health_v1.HealthClient
	gen     uint64
	pid     int
	started time.Time
}

// Name is the plugin's sink type.
func (p *Plugin) Name() string { return p.name }

// PID is the running process's id, 0 while it is down.
func (p *Plugin) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return 0
	}
	return p.cur.pid
}

// Fields is the plugin's config description.
func (p *Plugin) Fields() []sinks.Field { return p.desc.Fields }

// Health is nil unless the plugin keeps crashing (or never started).
func (p *Plugin) Health() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loadErr != nil {
		return fmt.Errorf("plugin %s: %w", p.name, p.loadErr)
	}
	if p.crashes < p.host.opts.UnhealthyAfter {
		return nil
	}
	dests := make([]string, 0, len(p.dests))
	for d := range p.dests {
		dests = append(dests, d)
	}
	sort.Strings(dests)
	return fmt.Errorf("plugin %s keeps crashing (%d times in a row; last: %v); destinations not delivering: %s",
		p.name, p.crashes, p.lastErr, strings.Join(dests, ", "))
}

// current returns the running process, or nil while the plugin is restarting.
func (p *Plugin) current() *proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

func (p *Plugin) addDestination(name string) {
	p.mu.Lock()
	p.dests[name] = true
	p.mu.Unlock()
}

// verify checks the executable against its pin and returns its digest.
func (p *Plugin) verify() ([]byte, error) {
	f, err := os.Open(p.path)
	if err != nil {
		return nil, fmt.Errorf("cannot open the executable %s: %w", p.path, err)
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return nil, fmt.Errorf("cannot read the executable %s: %w", p.path, err)
	}
	sum := hs.Sum(nil)
	if p.pin != "" && hex.EncodeToString(sum) != p.pin {
		return nil, fmt.Errorf("sha256 mismatch for %s: expected %s (the config's sha256), actual %s; "+
			"refusing to run it: if this binary is the one you mean to run, set sha256: %s",
			p.path, p.pin, hex.EncodeToString(sum), hex.EncodeToString(sum))
	}
	return sum, nil
}

var serverVersion = regexp.MustCompile(`Plugin version: (\d+)`)

// launch starts a process of the plugin and asks it to describe itself.
func (p *Plugin) launch() (*proc, error) {
	sum, err := p.verify()
	if err != nil {
		return nil, err
	}
	opts := p.host.opts
	cmd := exec.Command(p.path)
	cmd.Env = childEnv(p.env, os.LookupEnv)
	setPdeathsig(cmd)
	cc := &plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		VersionedPlugins: wire.Plugins(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		// The child never inherits Sluice's environment (admin keys, the encryption key, cloud credentials):
		// it gets cmd.Env, plus what go-plugin itself needs for the handshake.
		SkipHostEnv:  true,
		Managed:      true,
		StartTimeout: opts.StartTimeout,
		Logger:       newSlogger(p.log),
		// What the plugin writes to its stdout and stderr once it serves (go-plugin carries it over gRPC)
		// becomes records of Sluice's log, never plain text among JSON lines.
		SyncStdout: newLineWriter(newSlogger(p.log), "stdout"),
		SyncStderr: newLineWriter(newSlogger(p.log), "stderr"),
	}
	if p.pin != "" {
		// go-plugin checks again right before exec; a fresh hash each launch (SecureConfig reuses its Hash).
		cc.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := plugin.NewClient(cc)
	var rpc plugin.ClientProtocol
	onLauncherThread(func() { rpc, err = client.Client() })
	if err != nil {
		client.Kill()
		return nil, p.launchError(err)
	}
	raw, err := rpc.Dispense(wire.PluginKey)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: %w", p.path, err)
	}
	c, err := wire.NewClient(raw, p.name)
	if err != nil {
		client.Kill()
		return nil, err
	}
	pr := &proc{client: client, rpc: c, started: time.Now()}
	if g, ok := rpc.(*plugin.GRPCClient); ok {
		pr.health = grpc_health_v1.NewHealthClient(g.Conn)
	}
	if rc := client.ReattachConfig(); rc != nil {
		pr.pid = rc.Pid
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	d, err := pr.rpc.Describe(ctx)
	if err != nil {
		pr.kill(false)
		return nil, fmt.Errorf("plugin %s did not describe itself: %w", p.path, err)
	}
	if p.desc.Name == "" {
		p.desc = d
		if d.Name != p.name {
			p.log.Info("plugin calls itself by another name; destinations use the config's name", "plugin_says", d.Name)
		}
	}
	return pr, nil
}

func (p *Plugin) launchError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("sha256 mismatch for %s: the file changed while it was being launched; check what replaces it", p.path)
	case strings.Contains(msg, "incompatible API version"):
		theirs := "another"
		if m := serverVersion.FindStringSubmatch(msg); m != nil {
			theirs = m[1]
		}
		return fmt.Errorf("plugin %s speaks plugin protocol version %s, but this Sluice speaks version %d: "+
			"rebuild the plugin with a plugins/sdk that speaks version %d, or run a Sluice that speaks version %s",
			p.path, theirs, wire.ProtocolVersion, wire.ProtocolVersion, theirs)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("plugin %s did not start within %s: is it built with plugins/sdk (sdk.Serve)?", p.path,
			p.host.opts.StartTimeout)
	case strings.Contains(msg, "plugin exited before we could connect"), strings.Contains(msg, "Unrecognized remote plugin message"):
		return fmt.Errorf("plugin %s exited before the handshake: is it built with plugins/sdk (sdk.Serve)? (%v)", p.path, err)
	}
	return fmt.Errorf("launch plugin %s: %w", p.path, err)
}

// supervise restarts the plugin when its process exits or stops answering health checks.
func (p *Plugin) supervise() {
	defer close(p.done)
	opts := p.host.opts
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastPing := time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.host.flushLog(false) // logging may have been configured since the plugin started
		pr := p.current()
		var why error
		switch {
		case pr.client.Exited():
			why = errors.New("the plugin process exited")
		case time.Since(lastPing) >= opts.HealthInterval:
			lastPing = time.Now()
			if err := pr.ping(opts.HealthTimeout); err != nil {
				why = fmt.Errorf("health check failed: %v", err)
			} else {
				p.mu.Lock()
				if p.crashes > 0 && time.Since(pr.started) >= opts.StableAfter {
					p.log.Info("plugin is stable again", "after_crashes", p.crashes)
					p.crashes, p.lastErr = 0, nil
				}
				p.mu.Unlock()
			}
		}
		if why == nil {
			continue
		}
		if !p.restart(pr, why) {
			return
		}
		lastPing = time.Now()
	}
}

func (pr *proc) ping(timeout time.Duration) error {
	if pr.health == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := pr.health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
	return err
}

// restart replaces a dead process, backing off while launches fail. It returns false when the host is
// closing.
func (p *Plugin) restart(dead *proc, why error) bool {
	opts := p.host.opts
	p.mu.Lock()
	p.cur = nil
	p.crashes++
	p.lastErr = why
	p.mu.Unlock()
	// Killing closes the connection: sends in flight fail retryably and are tried again by the dispatcher.
	dead.kill(false)
	for {
		p.mu.Lock()
		n := p.crashes
		p.mu.Unlock()
		wait := opts.MinBackoff << min(n-1, 20)
		if wait > opts.MaxBackoff || wait <= 0 {
			wait = opts.MaxBackoff
		}
		if n >= opts.UnhealthyAfter {
			p.log.Error("plugin keeps crashing; its destinations are unhealthy until it stays up",
				"crashes_in_a_row", n, "reason", why.Error(), "restart_in", wait.String())
		} else {
			p.log.Warn("plugin died; restarting it", "reason", why.Error(), "restart_in", wait.String())
		}
		select {
		case <-p.stop:
			return false
		case <-time.After(wait):
		}
		pr, err := p.launch()
		if err != nil {
			why = err
			p.mu.Lock()
			p.crashes++
			p.lastErr = err
			p.mu.Unlock()
			continue
		}
		p.mu.Lock()
		p.gen++
		pr.gen = p.gen
		p.cur = pr
		p.mu.Unlock()
		p.log.Info("plugin restarted", "pid", pr.pid)
		return true
	}
}

func (p *Plugin) kill() {
	if pr := p.current(); pr != nil {
		pr.kill(true)
	}
}

// kill ends the process. Graceful asks it to exit first (go-plugin's Kill), which a hung process never
// answers, so that ask is bounded; a dead or hung process is SIGKILLed at once.
func (pr *proc) kill(graceful bool) {
	if graceful {
		done := make(chan struct{})
		go func() { defer close(done); pr.client.Kill() }()
		select {
		case <-done:
			return
		case <-time.After(5 * time.Second):
		}
	}
	if pr.pid > 0 && !pr.client.Exited() {
		if proc, err := os.FindProcess(pr.pid); err == nil {
			_ = proc.Kill()
		}
	}
	pr.client.Kill()
}

func (p *Plugin) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.kill()
}

// childEnv is a plugin's environment: the variables plugins[].env names, with the host's values, and nothing
// else — not even PATH or HOME (list them when the plugin needs them). A listed name the host does not have
// is left out rather than set empty. SLUICE_* names are refused by config validation; skipping them here too
// keeps a hand-built config from leaking keys.
func childEnv(names []string, lookup func(string) (string, bool)) []string {
	env := []string{}
	for _, n := range names {
		if strings.HasPrefix(strings.ToUpper(n), "SLUICE_") || strings.ContainsAny(n, "=\x00") {
			continue
		}
		if v, ok := lookup(n); ok {
			env = append(env, n+"="+v)
		}
	}
	return env
}
