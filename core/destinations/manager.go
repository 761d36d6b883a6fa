package destinations

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// Publisher is intake as the manager uses it: it publishes operator events and takes new routing tables.
type Publisher interface {
	Publish(ctx context.Context, evs []event.Event) ([]intake.Result, error)
	SetRouter(r *match.Router)
	// Settle waits for the publishes routing with a table since replaced (see intake.Intake.Settle).
	Settle()
}

// Options wire a Manager.
type Options struct {
	Store      store.Store
	Dispatcher *dispatch.Dispatcher
	// Lanes builds every destination's lane, and vets an API destination beyond its config's own validation
	// before it is created or changed (a webhook URL whose address the SSRF guard would refuse is refused).
	Lanes *Lanes
	// Box seals API destinations' secrets at rest; without a key such secrets are refused.
	Box *seal.Box
	// OnRemoved, when set, hears of each destination deleted over the API or removed by a reload, and of each
	// per-run subscription that expired (the server drops its metric series).
	OnRemoved func(name string)
	Logger    *slog.Logger
	Now       func() time.Time
}

// Manager owns the live destinations. Its methods are safe for concurrent use: changes are decided one at a
// time, and their lane changes carried out in the order decided, per destination name.
type Manager struct {
	opts Options
	log  *slog.Logger

	// change serializes the changes (create, patch, reload, ...): a change reads the state below under it alone,
	// and writes it under mu too. mu guards the state for readers (lookups, views) and is held only for
	// in-memory reads and writes, never across the store, a sink or the dispatcher. Neither is held across a
	// call that waits for attempts in flight: lane changes are decided under change and carried out by q after
	// it is released.
	change  sync.Mutex
	mu      sync.RWMutex
	cfg     *config.Config
	entries []*entry // YAML destinations in file order, then API ones oldest first
	pub     Publisher
	timer   *time.Timer

	q    *laneQueue
	runs *runs
	// labels maps every destination id to its name (rebuilt with the router).
	labels       atomic.Pointer[map[string]string]
	metricLabels atomic.Pointer[map[string]string]
	// built counts the API entries built from stored records (apiEntry).
	built atomic.Int64
	// syncGap, when set (tests), is what Watch waits on between two Syncs (see minSyncGap).
	syncGap func(took time.Duration) <-chan time.Time
}

type entry struct {
	id, name, tenant, typ, source string
	dest                          *config.Destination
	// spec is an API destination's JSON form with plaintext secrets (in memory only).
	spec     map[string]any
	retiring []store.RetiringSecret // plaintext
	created  time.Time
	updated  time.Time
	// cfgDisabled: `enabled: false` in the YAML file (only the file can change that).
	cfgDisabled bool
	enabled     bool
	reason      string
	fingerprint string
	running     bool
	// broken: a stored API destination that could not be loaded or started; it stays disabled (reason says
	// why) and can only be deleted.
	broken bool
	// from is the stored record (and the config) an API entry was built from by apiEntry. Sync compares the
	// record it reads with it and builds again only what changed: building parses, validates and fingerprints
	// the whole definition, which with thousands of destinations made every change on any node cost every
	// other node a fraction of a second. An entry changed in memory drops it.
	from *source
}

// source is what an API entry was built from.
type source struct {
	cfg *config.Config
	rec store.DestinationRecord
}

// same reports whether rec is the record e was built from, under cfg.
func (e *entry) same(cfg *config.Config, rec store.DestinationRecord) bool {
	f := e.from
	return f != nil && f.cfg == cfg && f.rec.ID == rec.ID && f.rec.Name == rec.Name && f.rec.Tenant == rec.Tenant &&
		f.rec.Type == rec.Type && f.rec.CreatedAt.Equal(rec.CreatedAt) && f.rec.UpdatedAt.Equal(rec.UpdatedAt) &&
		bytes.Equal(f.rec.Spec, rec.Spec) && slices.EqualFunc(f.rec.Retiring, rec.Retiring, func(a, b store.RetiringSecret) bool {
		return a.Secret == b.Secret && a.Until.Equal(b.Until)
	})
}

// keyError is a stored secret the configured keys cannot open: the operator's problem, not the destination's.
type keyError struct{ error }

func (e keyError) Unwrap() error { return e.error }

// brokenEntry stands for a stored API destination that cannot be loaded.
func brokenEntry(rec store.DestinationRecord, err error) *entry {
	return &entry{id: rec.ID, name: rec.Name, tenant: rec.Tenant, typ: rec.Type, source: SourceAPI,
		dest:    &config.Destination{Name: rec.Name, Type: rec.Type, Tenant: rec.Tenant},
		created: rec.CreatedAt, updated: rec.UpdatedAt, broken: true, reason: "cannot be loaded: " + err.Error()}
}

// New returns a Manager; call Start.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Manager{opts: opts, log: opts.Logger}
	m.q = &laneQueue{m: m, tails: map[string]chan struct{}{}}
	m.runs = newRuns(m)
	return m
}

// Subscriptions is the per-run source of destinations, for intake (Options.Subscriptions): the per-run
// subscriptions events carry become destinations here, with lanes built like every other's. It refuses them
// unless intake.inline_subscriptions.enabled.
func (m *Manager) Subscriptions() intake.Subscriptions { return m.runs }

// Close stops expiring per-run subscriptions (the server is shutting down; the dispatcher stops the lanes).
func (m *Manager) Close() { m.runs.close() }

// Start loads the API destinations, operational states and per-run subscriptions from the store, starts a lane
// for every enabled destination and hands pub the routing table. pub receives operator events from then on.
func (m *Manager) Start(ctx context.Context, cfg *config.Config, pub Publisher) error {
	if err := m.start(ctx, cfg, pub); err != nil {
		return err
	}
	return m.runs.start(ctx, cfg)
}

func (m *Manager) start(ctx context.Context, cfg *config.Config, pub Publisher) error {
	m.change.Lock()
	defer m.change.Unlock()
	// Nothing reads the state yet: Start holds mu throughout.
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pub, m.cfg = pub, cfg
	states, err := m.states(ctx)
	if err != nil {
		return err
	}
	entries, err := m.yamlEntries(cfg, states)
	if err != nil {
		return err
	}
	recs, err := m.opts.Store.Destinations(ctx)
	if err != nil {
		return fmt.Errorf("load API destinations: %w", err)
	}
	taken := map[string]string{}
	for _, e := range entries {
		taken[e.name] = cfg.File
	}
	for _, rec := range recs {
		e, stale, err := m.apiEntry(cfg, rec, states)
		if errors.As(err, new(keyError)) {
			// The operator's key cannot open the secrets: every API destination is affected, so say so now.
			return fmt.Errorf("API destination %s (%s): %w", rec.Name, rec.ID, err)
		}
		if err != nil {
			// One broken stored destination must not keep the server (and every other tenant) down: it loads
			// disabled, with the reason shown, until someone deletes it.
			m.log.Error("API destination cannot be loaded; it stays disabled", "destination", rec.Name, "id", rec.ID, "err", err)
			e, stale = brokenEntry(rec, err), false
		}
		if file, ok := taken[e.name]; ok {
			return fmt.Errorf("destination name %q is used both in %s and by API destination %s; rename one", e.name, file, e.id)
		}
		if stale {
			// Sealed under a previous store.encryption_key: re-seal under the current one.
			if err := m.persist(ctx, e); err != nil {
				return fmt.Errorf("re-seal API destination %s: %w", e.name, err)
			}
		}
		entries = append(entries, e)
	}
	for _, e := range entries {
		if e.enabled {
			dd, err := m.build(ctx, cfg, e)
			if err != nil && e.source == SourceAPI {
				m.log.Error("API destination cannot start; it stays disabled", "destination", e.name, "id", e.id, "err", err)
				e.enabled, e.broken, e.reason = false, true, "cannot start: "+err.Error()
				continue
			}
			if err != nil {
				m.stopAll(ctx, entries)
				return fmt.Errorf("destination %s: %w", e.name, err)
			}
			m.opts.Dispatcher.Add(dd)
			e.running = true
		}
	}
	m.entries = entries
	m.publishRouter()
	m.scheduleRetirement()
	return nil
}

// stopAll stops the lanes a failed Start had started; nothing else runs yet.
func (m *Manager) stopAll(ctx context.Context, entries []*entry) {
	for _, e := range entries {
		if e.running {
			_ = m.opts.Dispatcher.Remove(ctx, e.name)
			e.running = false
		}
	}
}

func (m *Manager) states(ctx context.Context) (map[string]store.DestinationState, error) {
	list, err := m.opts.Store.DestinationStates(ctx)
	if err != nil {
		return nil, fmt.Errorf("load destination states: %w", err)
	}
	out := make(map[string]store.DestinationState, len(list))
	for _, s := range list {
		out[s.Name] = s
	}
	return out, nil
}

// yamlEntries builds the entries of a config's destinations.
func (m *Manager) yamlEntries(cfg *config.Config, states map[string]store.DestinationState) ([]*entry, error) {
	var out []*entry
	for i := range cfg.Destinations {
		d := &cfg.Destinations[i]
		e := &entry{id: d.Name, name: d.Name, tenant: d.Tenant, typ: d.Type, source: SourceConfig, dest: d,
			cfgDisabled: !d.IsEnabled(), enabled: d.IsEnabled()}
		if e.cfgDisabled {
			e.reason = "enabled: false in " + cfg.File
		} else if st, ok := states[e.id]; ok && !st.Enabled {
			e.enabled, e.reason = false, st.Reason
		}
		e.fingerprint = fingerprint(cfg, d)
		out = append(out, e)
	}
	return out, nil
}

// apiEntry opens a stored API destination. stale reports secrets sealed under a previous key.
func (m *Manager) apiEntry(cfg *config.Config, rec store.DestinationRecord, states map[string]store.DestinationState) (*entry, bool, error) {
	m.built.Add(1)
	var spec map[string]any
	if err := json.Unmarshal(rec.Spec, &spec); err != nil {
		return nil, false, fmt.Errorf("stored spec is not JSON: %w", err)
	}
	e := &entry{id: rec.ID, name: rec.Name, tenant: rec.Tenant, typ: rec.Type, source: SourceAPI, spec: spec,
		created: rec.CreatedAt, updated: rec.UpdatedAt, enabled: true}
	stale := false
	for _, r := range rec.Retiring {
		pt, st, err := m.opts.Box.Open(r.Secret)
		if err != nil {
			return nil, false, keyError{err}
		}
		stale = stale || st
		e.retiring = append(e.retiring, store.RetiringSecret{Secret: pt, Until: r.Until})
	}
	if st, err := m.openSecrets(spec); err != nil {
		return nil, false, keyError{err}
	} else if st {
		stale = true
	}
	d, ferrs := m.parse(cfg, spec, e.retiring)
	if ferrs != nil {
		return nil, false, fmt.Errorf("no longer valid: %v", joinFieldErrors(ferrs))
	}
	e.dest = d
	if st, ok := states[rec.ID]; ok && !st.Enabled {
		e.enabled, e.reason = false, st.Reason
	}
	e.fingerprint = fingerprint(cfg, d)
	e.from = &source{cfg: cfg, rec: rec}
	return e, stale, nil
}

// parse validates an API spec (plaintext secrets) as `sluice validate` would; retiring secrets are appended to
// a webhook's secrets so that they sign too.
func (m *Manager) parse(cfg *config.Config, spec map[string]any, retiring []store.RetiringSecret) (*config.Destination, []*sinks.FieldError) {
	cp := deepCopy(spec).(map[string]any)
	if len(retiring) > 0 {
		if c, ok := cp["config"].(map[string]any); ok {
			list, _ := c["secrets"].([]any)
			for _, r := range retiring {
				list = append(list, r.Secret)
			}
			c["secrets"] = list
		}
	}
	raw, err := json.Marshal(cp)
	if err != nil {
		return nil, []*sinks.FieldError{{Msg: err.Error()}}
	}
	return config.ParseDestination(raw, cfg.Registry)
}

// openSecrets replaces the sealed secrets of spec by their plaintext.
func (m *Manager) openSecrets(spec map[string]any) (stale bool, err error) {
	walkSecrets(m.cfgRegistry(), spec, func(s string) string {
		if err != nil || !seal.IsSealed(s) {
			return s
		}
		pt, st, e := m.opts.Box.Open(s)
		if e != nil {
			err = e
			return s
		}
		stale = stale || st
		return pt
	})
	return stale, err
}

func (m *Manager) cfgRegistry() *sinks.Registry { return m.cfg.Registry }

// persist writes an API entry to the store with its secrets sealed.
func (m *Manager) persist(ctx context.Context, e *entry) error {
	sealed := deepCopy(e.spec).(map[string]any)
	var sealErr error
	walkSecrets(m.cfgRegistry(), sealed, func(s string) string {
		if s == "" || sealErr != nil {
			return s
		}
		out, err := m.opts.Box.Seal(s)
		if err != nil {
			sealErr = err
			return s
		}
		return out
	})
	if sealErr != nil {
		return sealErr
	}
	raw, err := json.Marshal(sealed)
	if err != nil {
		return err
	}
	rec := store.DestinationRecord{ID: e.id, Name: e.name, Tenant: e.tenant, Type: e.typ, Spec: raw,
		CreatedAt: e.created, UpdatedAt: e.updated}
	for _, r := range e.retiring {
		s, err := m.opts.Box.Seal(r.Secret)
		if err != nil {
			return err
		}
		rec.Retiring = append(rec.Retiring, store.RetiringSecret{Secret: s, Until: r.Until})
	}
	return m.opts.Store.PutDestination(ctx, rec)
}

// build makes the lane of an entry.
// The lane, like the delivery rows it works on, is keyed by the destination's immutable id, never its name.
func (m *Manager) build(ctx context.Context, cfg *config.Config, e *entry) (dispatch.Destination, error) {
	dd, err := m.opts.Lanes.Build(ctx, cfg.Registry, e.dest, PolicyFor(cfg, e.dest))
	dd.Name = e.id
	return dd, err
}

// fingerprint identifies what a lane is built from, so a reload replaces only lanes that changed.
func fingerprint(cfg *config.Config, d *config.Destination) string {
	raw, _ := json.Marshal(struct {
		D      any
		Config any
		P      dispatch.Policy
	}{destFields(d), sinks.MaskSecrets(d.SinkConfig), PolicyFor(cfg, d)})
	// MaskSecrets hides secrets, so hash them in separately: a changed secret must rebuild the lane.
	var secrets []string
	if d.SinkConfig != nil {
		secrets = secretValues(d.SinkConfig)
	}
	return string(raw) + strings.Join(secrets, "\x00")
}

// publishRouter hands intake the routing table of the enabled destinations. Callers hold m.change.
func (m *Manager) publishRouter() {
	if m.pub == nil {
		return
	}
	routes := make([]match.Route, 0, len(m.entries))
	labels := make(map[string]string, len(m.entries))
	metricLabels := make(map[string]string, len(m.entries))
	for _, e := range m.entries {
		labels[e.id] = e.name
		metricLabels[e.id] = e.label()
		switch {
		case e.enabled:
			routes = append(routes, routeOf(e.id, e.dest))
		case !e.broken:
			// Its events get skipped rows, for a replay once it is enabled again.
			rt := routeOf(e.id, e.dest)
			rt.Disabled = true
			routes = append(routes, rt)
		}
	}
	m.labels.Store(&labels)
	m.metricLabels.Store(&metricLabels)
	m.pub.SetRouter(match.NewRouter(routes))
}

// routeOf is a destination as the router sees it: named by its id, the key of its deliveries.
func routeOf(id string, d *config.Destination) match.Route {
	return match.Route{Name: id, Topics: d.TopicsMatch, Filter: d.FilterMatch, Tenant: d.Tenant, Scope: d.Scope,
		OrderingKey: d.OrderingKey, Block: d.OrderingKey != "" && d.Ordering != nil && d.Ordering.OnFailure == "block"}
}

// stop decides to remove an entry's lane and end its pending deliveries as skipped; forget also tells
// Options.OnRemoved. Callers hold m.change and run the op once it is released.
func (m *Manager) stop(e *entry, reason string, forget bool) *laneOp {
	op := m.q.decide(&laneOp{name: e.id, label: e.label(), stop: e.running, skip: reason, forget: forget})
	m.mu.Lock()
	e.running = false
	m.mu.Unlock()
	return op
}

// startLane decides to start (or, with replace, swap in) a built lane. Callers hold m.change and run the op once it
// is released.
func (m *Manager) startLane(dd dispatch.Destination, replace bool) *laneOp {
	return m.q.decide(&laneOp{name: dd.Name, start: &dd, replace: replace})
}

// find returns the entry with this id (or, failing that, name) that tenant may see; tenant "" sees all. An id
// wins over a name, so a destination named like another's id cannot shadow it.
func (m *Manager) find(idOrName, tenant string) *entry {
	e := m.findID(idOrName, tenant)
	if e != nil {
		return e
	}
	// Names are per tenant: a tenant key finds its own; a tenant-less key prefers a YAML or tenant-less
	// destination, else the first tenant's of that name (ids are unambiguous).
	var found *entry
	for _, e := range m.entries {
		if e.name != idOrName || (tenant != "" && e.tenant != tenant) {
			continue
		}
		if tenant != "" || e.source == SourceConfig || e.tenant == "" {
			return e
		}
		if found == nil {
			found = e
		}
	}
	return found
}

// findID returns the entry with this id that tenant may see.
func (m *Manager) findID(id, tenant string) *entry {
	for _, e := range m.entries {
		if e.id == id {
			if tenant != "" && e.tenant != tenant {
				return nil
			}
			return e
		}
	}
	return nil
}

// List returns the destinations tenant may see ("" = all), YAML ones first.
func (m *Manager) List(tenant string) []View {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []View
	for _, e := range m.entries {
		if tenant == "" || e.tenant == tenant {
			out = append(out, m.view(e))
		}
	}
	return out
}

// Get returns one destination by id or name.
func (m *Manager) Get(idOrName, tenant string) (View, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, notFound()
	}
	return m.view(e), nil
}

// Names returns the names of the destinations tenant may see ("" = all) — the delivery log's scope.
func (m *Manager) Names(tenant string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := []string{}
	for _, e := range m.entries {
		if tenant == "" || e.tenant == tenant {
			out = append(out, e.name)
		}
	}
	return out
}

// IDs returns the ids of the destinations tenant may see ("" = all) — the delivery log's scope. A
// deleted destination's deliveries are out of every tenant key's scope.
func (m *Manager) IDs(tenant string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := []string{}
	for _, e := range m.entries {
		if tenant == "" || e.tenant == tenant {
			out = append(out, e.id)
		}
	}
	return out
}

// Label returns the name of the destination with this id (the id itself for one no longer known, and for a
// per-run subscription, whose id is its name). It reads a snapshot, so it is cheap on hot paths.
func (m *Manager) Label(id string) string {
	if l := m.labels.Load(); l != nil {
		if n, ok := (*l)[id]; ok {
			return n
		}
	}
	return id
}

// MetricLabel is the destination label of the metrics of the destination with this id: its name, and one
// shared value for every per-run subscription (they come and go by the thousand).
func (m *Manager) MetricLabel(id string) string {
	if strings.HasPrefix(id, RunPrefix) {
		return "inline"
	}
	if l := m.metricLabels.Load(); l != nil {
		if n, ok := (*l)[id]; ok {
			return n
		}
	}
	return id
}

// Enabled maps every destination name to whether it is enabled (for metrics).
func (m *Manager) Enabled() map[string]bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]bool, len(m.entries))
	for _, e := range m.entries {
		out[e.label()] = e.enabled
	}
	return out
}

// label names an entry in metrics: tenants may share names, so a tenant's destination is tenant/name.
func (e *entry) label() string {
	if e.tenant != "" && e.source == SourceAPI {
		return e.tenant + "/" + e.name
	}
	return e.name
}

// view renders an entry. Callers hold m.mu or m.change.
func (m *Manager) view(e *entry) View {
	v := View{ID: e.id, Name: e.name, Type: e.typ, Tenant: e.tenant, Source: e.source, Enabled: e.enabled,
		DisabledReason: e.reason, CreatedAt: e.created, UpdatedAt: e.updated}
	if e.source == SourceConfig {
		v.File = m.cfg.File
	}
	if d := m.opts.Dispatcher; d != nil && e.running {
		v.BreakerOpen = d.BreakerOpen(e.id)
	}
	v.Spec = destFields(e.dest)
	v.Spec["config"] = maskedSinkConfig(e.dest.SinkConfig, len(e.retiring))
	for _, r := range e.retiring {
		v.Retiring = append(v.Retiring, RetiringView{Secret: sinks.Mask(r.Secret), Until: r.Until})
	}
	return v
}
