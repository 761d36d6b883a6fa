// Package destinations keeps the live set of destinations — those of the YAML file and those created over the
// API — and everything that changes it: config reloads, API create/patch/delete, enable/disable (by hand, by
// auto-disable, by a 410), secret rotation and test sends. It starts and replaces dispatcher lanes, hands
// intake a new routing table after every change, and emits the operator events sluice.destination.disabled and
// sluice.delivery.failed.
package destinations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// Operator event topics.
const (
	TopicDestinationDisabled = "sluice.destination.disabled"
	TopicDeliveryFailed      = "sluice.delivery.failed"
)

// Publisher is intake as the manager uses it: it publishes operator events and takes new routing tables.
type Publisher interface {
	Publish(ctx context.Context, evs []event.Event) ([]intake.Result, error)
	SetRouter(r *match.Router)
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
	// OnRemoved, when set, hears of each destination deleted over the API or removed by a reload (the server
	// drops its metric series).
	OnRemoved func(name string)
	Logger    *slog.Logger
	Now       func() time.Time
}

// Manager owns the live destinations. Its methods are safe for concurrent use; changes are serialized.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu      sync.RWMutex
	cfg     *config.Config
	entries []*entry // YAML destinations in file order, then API ones oldest first
	pub     Publisher
	timer   *time.Timer
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
}

// New returns a Manager; call Start.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{opts: opts, log: opts.Logger}
}

// Start loads the API destinations and operational states from the store, starts a lane for every enabled
// destination and hands pub the routing table. pub receives operator events from then on.
func (m *Manager) Start(ctx context.Context, cfg *config.Config, pub Publisher) error {
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
		if err != nil {
			return fmt.Errorf("API destination %s (%s): %w", rec.Name, rec.ID, err)
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
		taken[e.name] = "the API"
		entries = append(entries, e)
	}
	for _, e := range entries {
		if e.enabled {
			dd, err := m.build(ctx, cfg, e)
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
		} else if st, ok := states[d.Name]; ok && !st.Enabled {
			e.enabled, e.reason = false, st.Reason
		}
		e.fingerprint = fingerprint(cfg, d)
		out = append(out, e)
	}
	return out, nil
}

// apiEntry opens a stored API destination. stale reports secrets sealed under a previous key.
func (m *Manager) apiEntry(cfg *config.Config, rec store.DestinationRecord, states map[string]store.DestinationState) (*entry, bool, error) {
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
			return nil, false, err
		}
		stale = stale || st
		e.retiring = append(e.retiring, store.RetiringSecret{Secret: pt, Until: r.Until})
	}
	if st, err := m.openSecrets(spec); err != nil {
		return nil, false, err
	} else if st {
		stale = true
	}
	d, ferrs := m.parse(cfg, spec, e.retiring)
	if ferrs != nil {
		return nil, false, fmt.Errorf("no longer valid: %v", joinFieldErrors(ferrs))
	}
	e.dest = d
	if st, ok := states[rec.Name]; ok && !st.Enabled {
		e.enabled, e.reason = false, st.Reason
	}
	e.fingerprint = fingerprint(cfg, d)
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
func (m *Manager) build(ctx context.Context, cfg *config.Config, e *entry) (dispatch.Destination, error) {
	return m.opts.Lanes.Build(ctx, cfg.Registry, e.dest, PolicyFor(cfg, e.dest))
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

// publishRouter hands intake the routing table of the enabled destinations. Callers hold m.mu.
func (m *Manager) publishRouter() {
	if m.pub == nil {
		return
	}
	routes := make([]match.Route, 0, len(m.entries))
	for _, e := range m.entries {
		if e.enabled {
			routes = append(routes, routeOf(e.dest))
		}
	}
	m.pub.SetRouter(match.NewRouter(routes))
}

// routeOf is a destination as the router sees it.
func routeOf(d *config.Destination) match.Route {
	return match.Route{Name: d.Name, Topics: d.TopicsMatch, Filter: d.FilterMatch, Tenant: d.Tenant, Scope: d.Scope,
		OrderingKey: d.OrderingKey, Block: d.OrderingKey != "" && d.Ordering != nil && d.Ordering.OnFailure == "block"}
}

// Apply switches to a reloaded config: YAML destinations that were removed stop (their pending deliveries end
// as skipped), changed ones get a new lane, new ones start; API destinations are revalidated against it. On
// any error nothing changes and the old config stays.
func (m *Manager) Apply(ctx context.Context, cfg *config.Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	states, err := m.states(ctx)
	if err != nil {
		return err
	}
	next, err := m.yamlEntries(cfg, states)
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for _, e := range next {
		names[e.name] = true
	}
	for _, old := range m.entries {
		if old.source != SourceAPI {
			continue
		}
		if names[old.name] {
			return fmt.Errorf("destinations: %q is already an API destination (%s); rename it in %s or delete the API one first", old.name, old.id, cfg.File)
		}
		d, ferrs := m.parse(cfg, old.spec, old.retiring)
		if ferrs != nil {
			return fmt.Errorf("API destination %s is not valid under the new config: %v", old.name, joinFieldErrors(ferrs))
		}
		e := *old
		e.dest, e.fingerprint = d, fingerprint(cfg, d)
		next = append(next, &e)
	}
	prev := map[string]*entry{}
	for _, e := range m.entries {
		prev[e.name] = e
	}
	// Build every lane that has to change first: a sink that cannot be built leaves everything as it was.
	built := map[string]dispatch.Destination{}
	for _, e := range next {
		old := prev[e.name]
		if !e.enabled || (old != nil && old.running && old.fingerprint == e.fingerprint) {
			continue
		}
		dd, err := m.build(ctx, cfg, e)
		if err != nil {
			for _, b := range built {
				_ = b.Sink.Close(ctx)
			}
			return fmt.Errorf("destination %s: %w", e.name, err)
		}
		built[e.name] = dd
	}
	for _, old := range m.entries {
		if !slices.ContainsFunc(next, func(e *entry) bool { return e.name == old.name }) {
			m.stop(ctx, old, "destination removed from "+cfg.File)
			_ = m.opts.Store.DeleteDestinationState(ctx, old.name)
			m.removed(old.name)
			m.log.Info("destination removed by reload", "destination", old.name)
		}
	}
	for _, e := range next {
		old := prev[e.name]
		switch dd, ok := built[e.name]; {
		case ok && old != nil && old.running:
			if err := m.opts.Dispatcher.Replace(ctx, dd); err != nil {
				m.log.Warn("replace lane", "destination", e.name, "err", err)
			}
			e.running = true
			m.log.Info("destination changed by reload", "destination", e.name)
		case ok:
			m.opts.Dispatcher.Add(dd)
			e.running = true
		case !e.enabled && old != nil && old.running:
			m.stop(ctx, old, e.reason)
		default:
			e.running = old != nil && old.running && e.enabled
		}
	}
	m.cfg, m.entries = cfg, next
	m.publishRouter()
	m.scheduleRetirement()
	return nil
}

func (m *Manager) removed(name string) {
	if m.opts.OnRemoved != nil {
		m.opts.OnRemoved(name)
	}
}

// stop removes an entry's lane and ends its pending deliveries as skipped.
func (m *Manager) stop(ctx context.Context, e *entry, reason string) {
	if e.running {
		if err := m.opts.Dispatcher.Remove(ctx, e.name); err != nil {
			m.log.Warn("close sink", "destination", e.name, "err", err)
		}
		e.running = false
	}
	if n, err := m.opts.Store.SkipPending(ctx, e.name, reason); err != nil {
		m.log.Error("skip pending deliveries", "destination", e.name, "err", err)
	} else if n > 0 {
		m.log.Info("skipped pending deliveries", "destination", e.name, "skipped", n, "reason", reason)
	}
}

// find returns the entry with this id (or name) that tenant may see; tenant "" sees all.
func (m *Manager) find(idOrName, tenant string) *entry {
	for _, e := range m.entries {
		if e.id == idOrName || e.name == idOrName {
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

// Ref returns the id of a destination name (the name itself for YAML ones and for names no longer known).
func (m *Manager) Ref(name string) (id string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, e := range m.entries {
		if e.name == name {
			return e.id
		}
	}
	return name
}

// Enabled maps every destination name to whether it is enabled (for metrics).
func (m *Manager) Enabled() map[string]bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]bool, len(m.entries))
	for _, e := range m.entries {
		out[e.name] = e.enabled
	}
	return out
}

// Create adds an API destination from its JSON form. tenant is the caller's tenant ("" for a tenant-less
// key): the destination belongs to it. Without config.secrets, a webhook gets a generated signing secret,
// shown in full in the returned view only.
func (m *Manager) Create(ctx context.Context, body []byte, tenant string) (View, error) {
	spec, p := decodeSpec(body)
	if p != nil {
		return View{}, p
	}
	if t, _ := spec["tenant"].(string); tenant != "" && t != "" && t != tenant {
		return View{}, refuse(ErrForbidden, "tenant", "this key manages tenant %q's destinations only", tenant)
	} else if tenant != "" {
		spec["tenant"] = tenant
	}
	enabled := true
	if v, ok := spec["enabled"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return View{}, refuse(ErrInvalid, "enabled", "must be true or false")
		}
		enabled = b
		delete(spec, "enabled")
	}
	generated := ""
	if spec["type"] == "webhook" {
		c, _ := spec["config"].(map[string]any)
		if c == nil {
			c = map[string]any{}
			spec["config"] = c
		}
		if list, _ := c["secrets"].([]any); len(list) == 0 && c["signing"] != webhook.SigningNone {
			s, err := webhook.NewSecret()
			if err != nil {
				return View{}, err
			}
			c["secrets"], generated = []any{s}, s
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ferrs := m.parse(m.cfg, spec, nil)
	if ferrs != nil {
		return View{}, invalidDestination(ferrs)
	}
	if p := m.vet(d); p != nil {
		return View{}, p
	}
	if p := m.nameTaken(d.Name, ""); p != nil {
		return View{}, p
	}
	now := m.opts.Now().UTC()
	e := &entry{id: "dst_" + event.NewID(), name: d.Name, tenant: d.Tenant, typ: d.Type, source: SourceAPI,
		dest: d, spec: spec, created: now, updated: now, enabled: enabled}
	if !enabled {
		e.reason = "created disabled"
	}
	e.fingerprint = fingerprint(m.cfg, d)
	if p := m.checkSealable(e); p != nil {
		return View{}, p
	}
	var dd dispatch.Destination
	if enabled {
		var err error
		if dd, err = m.build(ctx, m.cfg, e); err != nil {
			return View{}, refuse(ErrInvalid, "config", "%v", err)
		}
	}
	if err := m.persist(ctx, e); err != nil {
		if dd.Sink != nil {
			_ = dd.Sink.Close(ctx)
		}
		if errors.Is(err, store.ErrConflict) {
			return View{}, refuse(ErrConflict, "name", "name %q is taken by another destination", d.Name)
		}
		return View{}, err
	}
	if !enabled {
		_ = m.opts.Store.SetDestinationState(ctx, store.DestinationState{Name: e.name, Enabled: false, Reason: e.reason, UpdatedAt: now})
	} else {
		_ = m.opts.Store.DeleteDestinationState(ctx, e.name)
		m.opts.Dispatcher.Add(dd)
		e.running = true
	}
	m.entries = append(m.entries, e)
	m.publishRouter()
	m.log.Info("destination created", "destination", e.name, "id", e.id, "tenant", e.tenant)
	v := m.view(e)
	if generated != "" {
		if c, ok := v.Spec["config"].(map[string]any); ok {
			c["secrets"] = []any{generated}
		}
	}
	return v, nil
}

// vet runs Options.Vet.
func (m *Manager) vet(d *config.Destination) error {
	if err := m.opts.Lanes.Vet(d); err != nil {
		var fe *sinks.FieldError
		if errors.As(err, &fe) {
			return refuse(ErrInvalid, fe.Path, "%s: %s", fe.Path, fe.Msg)
		}
		return refuse(ErrInvalid, "config", "%v", err)
	}
	return nil
}

// checkSealable refuses secrets when no encryption key is configured.
func (m *Manager) checkSealable(e *entry) error {
	if m.opts.Box.HasKey() {
		return nil
	}
	field := ""
	walkSecretPaths(m.cfgRegistry(), e.spec, func(path, s string) {
		if s != "" && field == "" {
			field = path
		}
	})
	if field == "" {
		return nil
	}
	return refuse(ErrEncryptionKeyRequired, field,
		"this destination holds a secret, and %v", seal.ErrNoKey)
}

// nameTaken says whether another destination (not id) uses name.
func (m *Manager) nameTaken(name, id string) error {
	for _, e := range m.entries {
		if e.name != name || e.id == id {
			continue
		}
		where := "another API destination"
		if e.source == SourceConfig {
			where = "a destination in " + m.cfg.File
		}
		return refuse(ErrConflict, "name", "name %q is taken by %s; pick another name", name, where)
	}
	return nil
}

// readOnly answers a change to a YAML destination.
func (m *Manager) readOnly(e *entry) error {
	return refuse(ErrReadOnly, "", "destination %q is defined in %s; change it there and reload (YAML destinations are read-only over the API)", e.name, m.cfg.File)
}

// Patch changes an API destination with a JSON merge patch (RFC 7396). A masked secret sent back unchanged
// keeps the stored secret. The type and name cannot change.
func (m *Manager) Patch(ctx context.Context, idOrName, tenant string, body []byte) (View, error) {
	patch, p := decodeSpec(body)
	if p != nil {
		return View{}, p
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, notFound()
	}
	if e.source != SourceAPI {
		return View{}, m.readOnly(e)
	}
	var enable *bool
	if v, ok := patch["enabled"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return View{}, refuse(ErrInvalid, "enabled", "must be true or false")
		}
		enable = &b
		delete(patch, "enabled")
	}
	if t, ok := patch["type"]; ok && t != e.typ {
		return View{}, refuse(ErrInvalid, "type", "cannot change after creation (it is %q); create a new destination instead", e.typ)
	}
	if n, ok := patch["name"]; ok && n != e.name {
		return View{}, refuse(ErrInvalid, "name", "cannot change after creation (it is %q); create a new destination instead", e.name)
	}
	if t, ok := patch["tenant"]; ok && t != nil && t != e.tenant && !(t == "" && e.tenant == "") {
		return View{}, refuse(ErrInvalid, "tenant", "cannot change after creation")
	}
	unmaskSecrets(m.cfgRegistry(), patch, e.spec)
	spec := mergePatch(deepCopy(e.spec), patch).(map[string]any)
	d, ferrs := m.parse(m.cfg, spec, e.retiring)
	if ferrs != nil {
		return View{}, invalidDestination(ferrs)
	}
	if p := m.vet(d); p != nil {
		return View{}, p
	}
	ne := *e
	ne.spec, ne.dest, ne.updated = spec, d, m.opts.Now().UTC()
	ne.fingerprint = fingerprint(m.cfg, d)
	if p := m.checkSealable(&ne); p != nil {
		return View{}, p
	}
	if ne.running && ne.fingerprint != e.fingerprint {
		dd, err := m.build(ctx, m.cfg, &ne)
		if err != nil {
			return View{}, refuse(ErrInvalid, "config", "%v", err)
		}
		if err := m.persist(ctx, &ne); err != nil {
			_ = dd.Sink.Close(ctx)
			return View{}, err
		}
		if err := m.opts.Dispatcher.Replace(ctx, dd); err != nil {
			m.log.Warn("replace lane", "destination", e.name, "err", err)
		}
	} else if err := m.persist(ctx, &ne); err != nil {
		return View{}, err
	}
	*e = ne
	if enable != nil && *enable != e.enabled {
		if err := m.setEnabled(ctx, e, *enable, "disabled over the API"); err != nil {
			return View{}, err
		}
	}
	m.publishRouter()
	return m.view(e), nil
}

// Delete removes an API destination; its pending deliveries end as skipped.
func (m *Manager) Delete(ctx context.Context, idOrName, tenant string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return notFound()
	}
	if e.source != SourceAPI {
		return m.readOnly(e)
	}
	if err := m.opts.Store.DeleteDestination(ctx, e.id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	m.stop(ctx, e, "destination deleted")
	_ = m.opts.Store.DeleteDestinationState(ctx, e.name)
	m.removed(e.name)
	m.entries = slices.DeleteFunc(m.entries, func(x *entry) bool { return x == e })
	m.publishRouter()
	m.log.Info("destination deleted", "destination", e.name, "id", e.id)
	return nil
}

// SetEnabled enables or disables a destination (YAML or API). Disabling ends its pending deliveries as
// skipped and emits sluice.destination.disabled; enabling starts a fresh lane (breaker closed, no failures).
func (m *Manager) SetEnabled(ctx context.Context, idOrName, tenant string, on bool, reason string) (View, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, notFound()
	}
	if e.cfgDisabled {
		return View{}, refuse(ErrReadOnly, "", "destination %q has enabled: false in %s; change it there and reload", e.name, m.cfg.File)
	}
	if err := m.setEnabled(ctx, e, on, reason); err != nil {
		return View{}, err
	}
	m.publishRouter()
	return m.view(e), nil
}

// setEnabled changes an entry's operational state. Callers hold m.mu and publish the router.
func (m *Manager) setEnabled(ctx context.Context, e *entry, on bool, reason string) error {
	if on == e.enabled {
		return nil
	}
	now := m.opts.Now().UTC()
	if on {
		dd, err := m.build(ctx, m.cfg, e)
		if err != nil {
			return refuse(ErrInvalid, "config", "cannot start the destination: %v", err)
		}
		if err := m.opts.Store.SetDestinationState(ctx, store.DestinationState{Name: e.name, Enabled: true, UpdatedAt: now}); err != nil {
			_ = dd.Sink.Close(ctx)
			return err
		}
		m.opts.Dispatcher.Add(dd)
		e.enabled, e.running, e.reason = true, true, ""
		m.log.Info("destination enabled", "destination", e.name)
		return nil
	}
	if err := m.opts.Store.SetDestinationState(ctx, store.DestinationState{Name: e.name, Enabled: false, Reason: reason, UpdatedAt: now}); err != nil {
		return err
	}
	e.enabled, e.reason = false, reason
	m.stop(ctx, e, "destination disabled: "+reason)
	m.log.Warn("destination disabled", "destination", e.name, "reason", reason)
	m.emit(ctx, TopicDestinationDisabled, e.tenant, map[string]any{
		"destination": map[string]string{"id": e.id, "name": e.name},
		"reason":      reason,
	})
	return nil
}

// OnDisabled is the dispatcher's callback when a lane disabled itself (auto-disable, 410).
func (m *Manager) OnDisabled(name, reason string) {
	ctx := context.Background()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.find(name, "")
	if e == nil || !e.enabled {
		return
	}
	if err := m.setEnabled(ctx, e, false, reason); err != nil {
		m.log.Error("disable destination", "destination", name, "err", err)
	}
	m.publishRouter()
}

// OnFailed is the dispatcher's callback for a delivery that ended as failed: it emits sluice.delivery.failed
// (not for operator events themselves, so a failing operator destination cannot feed itself).
func (m *Manager) OnFailed(job store.Job, att store.Attempt) {
	if strings.HasPrefix(job.Event.Topic, "sluice.") {
		return
	}
	m.mu.RLock()
	e := m.find(job.Delivery.Destination, "")
	id, tenant := job.Delivery.Destination, ""
	if e != nil {
		id, tenant = e.id, e.tenant
	}
	m.mu.RUnlock()
	data := map[string]any{
		"delivery_id": fmt.Sprint(job.Delivery.ID),
		"event_id":    job.Event.ID,
		"topic":       job.Event.Topic,
		"destination": map[string]string{"id": id, "name": job.Delivery.Destination},
		"attempts":    att.N,
		"error":       att.Error,
	}
	if att.StatusCode != 0 {
		data["status_code"] = att.StatusCode
	}
	m.emit(context.Background(), TopicDeliveryFailed, tenant, data)
}

// emit publishes an operator event as an ordinary event.
func (m *Manager) emit(ctx context.Context, topic, tenant string, data map[string]any) {
	if m.pub == nil {
		return
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return
	}
	ev := event.Event{Topic: topic, Tenant: tenant, Data: raw}
	res, err := m.pub.Publish(context.WithoutCancel(ctx), []event.Event{ev})
	if err == nil && len(res) == 1 && res[0].Err != nil {
		err = res[0].Err
	}
	if err != nil {
		m.log.Warn("emit operator event", "topic", topic, "err", err)
	}
}

// RotateSecret gives an API webhook destination a new signing secret (generated when secret is ""). The old
// secrets keep signing beside it for delivery.rotation_overlap, then are dropped. The new secret is returned
// in full, once.
func (m *Manager) RotateSecret(ctx context.Context, idOrName, tenant, secret string) (View, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, "", notFound()
	}
	if e.source != SourceAPI {
		return View{}, "", m.readOnly(e)
	}
	c, _ := e.spec["config"].(map[string]any)
	if e.typ != "webhook" || c == nil || c["signing"] == webhook.SigningNone {
		return View{}, "", refuse(ErrNoSecret, "", "destination %q does not sign its deliveries; only signing webhooks have secrets to rotate", e.name)
	}
	if secret == "" {
		var err error
		if secret, err = webhook.NewSecret(); err != nil {
			return View{}, "", err
		}
	}
	now := m.opts.Now().UTC()
	overlap := m.cfg.Delivery.RotationOverlap.D()
	ne := *e
	ne.spec = deepCopy(e.spec).(map[string]any)
	nc := ne.spec["config"].(map[string]any)
	old, _ := nc["secrets"].([]any)
	ne.retiring = nil
	for _, r := range e.retiring {
		if r.Until.After(now) {
			ne.retiring = append(ne.retiring, r)
		}
	}
	if overlap > 0 {
		for _, s := range old {
			if str, ok := s.(string); ok && str != secret {
				ne.retiring = append(ne.retiring, store.RetiringSecret{Secret: str, Until: now.Add(overlap)})
			}
		}
	}
	nc["secrets"] = []any{secret}
	d, ferrs := m.parse(m.cfg, ne.spec, ne.retiring)
	if ferrs != nil {
		for _, fe := range ferrs {
			if strings.HasPrefix(fe.Path, "config.secrets") {
				return View{}, "", refuse(ErrInvalidSecret, "secret", "%s", fe.Msg)
			}
		}
		return View{}, "", invalidDestination(ferrs)
	}
	ne.dest, ne.updated, ne.fingerprint = d, now, fingerprint(m.cfg, d)
	if err := m.swap(ctx, e, &ne); err != nil {
		return View{}, "", err
	}
	m.scheduleRetirement()
	m.log.Info("signing secret rotated", "destination", e.name, "overlap", overlap.String())
	return m.view(e), secret, nil
}

// swap persists ne and moves e's lane to it.
func (m *Manager) swap(ctx context.Context, e, ne *entry) error {
	if ne.running {
		dd, err := m.build(ctx, m.cfg, ne)
		if err != nil {
			return err
		}
		if err := m.persist(ctx, ne); err != nil {
			_ = dd.Sink.Close(ctx)
			return err
		}
		if err := m.opts.Dispatcher.Replace(ctx, dd); err != nil {
			m.log.Warn("replace lane", "destination", e.name, "err", err)
		}
	} else if err := m.persist(ctx, ne); err != nil {
		return err
	}
	*e = *ne
	return nil
}

// scheduleRetirement arms a timer for the next rotated-out secret to expire. Callers hold m.mu.
func (m *Manager) scheduleRetirement() {
	var next time.Time
	for _, e := range m.entries {
		for _, r := range e.retiring {
			if next.IsZero() || r.Until.Before(next) {
				next = r.Until
			}
		}
	}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	if next.IsZero() {
		return
	}
	m.timer = time.AfterFunc(max(next.Sub(m.opts.Now()), 0)+10*time.Millisecond, m.retire)
}

// retire drops rotated-out secrets whose overlap ended.
func (m *Manager) retire() {
	ctx := context.Background()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	for _, e := range m.entries {
		keep := slices.DeleteFunc(slices.Clone(e.retiring), func(r store.RetiringSecret) bool { return !r.Until.After(now) })
		if len(keep) == len(e.retiring) {
			continue
		}
		ne := *e
		ne.retiring = keep
		d, ferrs := m.parse(m.cfg, ne.spec, keep)
		if ferrs != nil {
			m.log.Error("drop rotated-out secret", "destination", e.name, "err", joinFieldErrors(ferrs))
			continue
		}
		ne.dest, ne.fingerprint = d, fingerprint(m.cfg, d)
		if err := m.swap(ctx, e, &ne); err != nil {
			m.log.Error("drop rotated-out secret", "destination", e.name, "err", err)
			continue
		}
		m.log.Info("rotated-out signing secret dropped", "destination", e.name)
	}
	m.publishRouter()
	m.scheduleRetirement()
}

// Test sends one event to a destination now and returns the delivery with its attempt. ev nil sends the
// catalog example of the destination's first concrete topic. The event is stored, marked as a test, and
// goes to this destination only.
func (m *Manager) Test(ctx context.Context, idOrName, tenant string, ev *event.Event) (*store.DeliveryRecord, error) {
	m.mu.RLock()
	e := m.find(idOrName, tenant)
	if e == nil {
		m.mu.RUnlock()
		return nil, notFound()
	}
	if !e.running {
		m.mu.RUnlock()
		return nil, refuse(ErrDisabled, "", "destination %q is disabled (%s); enable it before testing", e.name, e.reason)
	}
	name, destTenant := e.name, e.tenant
	var test event.Event
	if ev != nil {
		test = *ev
	} else {
		t, ok := m.exampleFor(e)
		if !ok {
			m.mu.RUnlock()
			return nil, refuse(ErrNoExample, "topic",
				"no catalog example for the topics of %q; add an example to the topic in the config's topics list, or send an event in the body: {\"topic\": ..., \"data\": ...}", e.name)
		}
		test = t
	}
	m.mu.RUnlock()
	if test.ID == "" {
		test.ID = event.NewID()
	}
	if test.Time.IsZero() {
		test.Time = m.opts.Now().UTC()
	}
	if test.Tenant == "" {
		test.Tenant = destTenant
	}
	res, err := m.opts.Store.Append(ctx, []store.NewEvent{{Event: test, Destinations: []string{name}, Leased: []bool{true}, Test: true}},
		store.AppendOptions{Lease: dispatch.FreshLease})
	if err != nil {
		return nil, err
	}
	if res[0].Err != nil {
		return nil, refuse(ErrConflict, "id", "%v", res[0].Err)
	}
	if res[0].Duplicate || len(res[0].Deliveries) != 1 {
		return nil, refuse(ErrConflict, "id", "an event with this id was already stored; omit id to have one generated")
	}
	dl := res[0].Deliveries[0]
	if _, err := m.opts.Dispatcher.Attempt(ctx, name, store.Job{Delivery: dl, Event: test}); err != nil {
		if errors.Is(err, dispatch.ErrNoLane) {
			return nil, refuse(ErrDisabled, "", "destination %q was disabled meanwhile", name)
		}
		return nil, err
	}
	return m.opts.Store.Delivery(ctx, dl.ID)
}

// exampleFor builds the catalog example event of an entry's first concrete topic (or first catalog topic its
// patterns match).
func (m *Manager) exampleFor(e *entry) (event.Event, bool) {
	topics := m.cfg.Topics
	pick := func(t config.Topic) (event.Event, bool) {
		raw, err := json.Marshal(t.Example)
		if err != nil || t.Example == nil {
			return event.Event{}, false
		}
		return event.Event{Topic: t.Name, Data: raw}, true
	}
	for _, p := range e.dest.Topics {
		if strings.Contains(p, "*") {
			continue
		}
		for _, t := range topics {
			if t.Name == p {
				if ev, ok := pick(t); ok {
					return ev, true
				}
			}
		}
	}
	for _, t := range topics {
		if e.dest.TopicsMatch.Match(t.Name) {
			if ev, ok := pick(t); ok {
				return ev, true
			}
		}
	}
	return event.Event{}, false
}

// Replay requeues a destination's deliveries (f.Destination is set from idOrName). It returns how many.
func (m *Manager) Replay(ctx context.Context, idOrName, tenant string, f store.ReplayFilter) (int, error) {
	m.mu.RLock()
	e := m.find(idOrName, tenant)
	var name string
	running := false
	if e != nil {
		name, running = e.name, e.running
	}
	m.mu.RUnlock()
	if e == nil {
		return 0, notFound()
	}
	if !running {
		return 0, refuse(ErrDisabled, "", "destination %q is disabled; enable it before replaying", name)
	}
	f.Destination = name
	n, err := m.opts.Store.Replay(ctx, f, m.opts.Now())
	if err != nil {
		return n, err
	}
	m.opts.Dispatcher.Poke(name)
	m.log.Info("deliveries replayed", "destination", name, "requeued", n)
	return n, nil
}

// Retry requeues one delivery by hand, if tenant may see its destination.
func (m *Manager) Retry(ctx context.Context, id int64, tenant string) (store.Delivery, error) {
	rec, err := m.opts.Store.Delivery(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Delivery{}, refuse(ErrNotFound, "", "no delivery with this id")
	}
	if err != nil {
		return store.Delivery{}, err
	}
	m.mu.RLock()
	e := m.find(rec.Destination, tenant)
	running := e != nil && e.running
	m.mu.RUnlock()
	if e == nil {
		if tenant != "" {
			return store.Delivery{}, refuse(ErrNotFound, "", "no delivery with this id")
		}
		return store.Delivery{}, refuse(ErrGone, "", "destination %q no longer exists", rec.Destination)
	}
	if !running {
		return store.Delivery{}, refuse(ErrDisabled, "", "destination %q is disabled; enable it before retrying", e.name)
	}
	d, err := m.opts.Store.Retry(ctx, id, m.opts.Now())
	if errors.Is(err, store.ErrConflict) {
		return d, refuse(ErrInFlight, "", "the delivery is being attempted right now")
	}
	if err != nil {
		return d, err
	}
	m.opts.Dispatcher.Poke(d.Destination)
	return d, nil
}

// view renders an entry. Callers hold m.mu.
func (m *Manager) view(e *entry) View {
	v := View{ID: e.id, Name: e.name, Type: e.typ, Tenant: e.tenant, Source: e.source, Enabled: e.enabled,
		DisabledReason: e.reason, CreatedAt: e.created, UpdatedAt: e.updated}
	if e.source == SourceConfig {
		v.File = m.cfg.File
	}
	v.Spec = destFields(e.dest)
	v.Spec["config"] = maskedSinkConfig(e.dest.SinkConfig, len(e.retiring))
	for _, r := range e.retiring {
		v.Retiring = append(v.Retiring, RetiringView{Secret: sinks.Mask(r.Secret), Until: r.Until})
	}
	return v
}
