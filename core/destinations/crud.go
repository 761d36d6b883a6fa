package destinations

import (
	"context"
	"errors"
	"slices"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

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
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
	d, ferrs := m.parse(m.cfg, spec, nil)
	if ferrs != nil {
		return View{}, invalidDestination(ferrs)
	}
	if p := m.confine(d, spec, tenant); p != nil {
		return View{}, p
	}
	if p := m.vet(d); p != nil {
		return View{}, p
	}
	if p := m.nameTaken(d.Name, d.Tenant, ""); p != nil {
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
			ops = append(ops, &laneOp{discard: dd.Sink})
		}
		if errors.Is(err, store.ErrConflict) {
			return View{}, refuse(ErrConflict, "name", "name %q is taken by another destination of this tenant", d.Name)
		}
		return View{}, err
	}
	if !enabled {
		_ = m.opts.Store.SetDestinationState(ctx, store.DestinationState{Name: e.id, Enabled: false, Reason: e.reason, UpdatedAt: now})
	} else {
		_ = m.opts.Store.DeleteDestinationState(ctx, e.id)
		ops = append(ops, m.startLane(dd, false))
		e.running = true
	}
	m.mu.Lock()
	m.entries = append(m.entries, e)
	m.mu.Unlock()
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

// vet checks an API destination beyond its config's own validation (Lanes.Vet).
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

// nameTaken says whether another destination (not id) uses name where tenant would clash with it: names are
// per tenant (a clash never tells a tenant another's names), and YAML names are taken for everyone.
func (m *Manager) nameTaken(name, tenant, id string) error {
	for _, e := range m.entries {
		if e.name != name || e.id == id || (e.source != SourceConfig && e.tenant != tenant) {
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

// brokenRefusal answers a change to a destination that could not be loaded.
func (m *Manager) brokenRefusal(e *entry) error {
	return refuse(ErrInvalid, "", "destination %q %s; delete it and create it again", e.name, e.reason)
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
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, notFound()
	}
	if e.source != SourceAPI {
		return View{}, m.readOnly(e)
	}
	if e.broken {
		return View{}, m.brokenRefusal(e)
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
	// A destination's tenant is immutable: null (merge-patch removal) would make it tenant-less, receiving
	// every tenant's events.
	if t, ok := patch["tenant"]; ok && !(t == e.tenant || (t == nil && e.tenant == "")) {
		return View{}, refuse(ErrInvalid, "tenant", "cannot change after creation (it is %q); create a new destination instead", e.tenant)
	}
	unmaskSecrets(m.cfgRegistry(), patch, e.spec)
	spec := mergePatch(deepCopy(e.spec), patch).(map[string]any)
	// The tenant the router uses is the one stored at create, whatever the patch did to the spec.
	if e.tenant != "" {
		spec["tenant"] = e.tenant
	} else {
		delete(spec, "tenant")
	}
	d, ferrs := m.parse(m.cfg, spec, e.retiring)
	if ferrs != nil {
		return View{}, invalidDestination(ferrs)
	}
	if p := m.confine(d, spec, tenant); p != nil {
		return View{}, p
	}
	if p := m.vet(d); p != nil {
		return View{}, p
	}
	ne := *e
	ne.from = nil // changed in memory: the next Sync builds it from the store again
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
			ops = append(ops, &laneOp{discard: dd.Sink})
			return View{}, err
		}
		ops = append(ops, m.startLane(dd, true))
	} else if err := m.persist(ctx, &ne); err != nil {
		return View{}, err
	}
	m.mu.Lock()
	*e = ne
	m.mu.Unlock()
	if enable != nil && *enable != e.enabled {
		if err := m.setEnabled(ctx, e, *enable, "disabled over the API", &ops); err != nil {
			return View{}, err
		}
	}
	m.publishRouter()
	return m.view(e), nil
}

// Delete removes an API destination; its pending deliveries end as skipped.
func (m *Manager) Delete(ctx context.Context, idOrName, tenant string) error {
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
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
	ops = append(ops, m.stop(e, "destination deleted", true))
	_ = m.opts.Store.DeleteDestinationState(ctx, e.id)
	m.mu.Lock()
	m.entries = slices.DeleteFunc(slices.Clone(m.entries), func(x *entry) bool { return x == e })
	m.mu.Unlock()
	m.publishRouter()
	m.log.Info("destination deleted", "destination", e.name, "id", e.id)
	return nil
}

// SetEnabled enables or disables a destination (YAML or API). Disabling ends its pending deliveries as
// skipped and emits sluice.destination.disabled; enabling starts a fresh lane (breaker closed, no failures).
func (m *Manager) SetEnabled(ctx context.Context, idOrName, tenant string, on bool, reason string) (View, error) {
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, notFound()
	}
	if e.cfgDisabled {
		return View{}, refuse(ErrReadOnly, "", "destination %q has enabled: false in %s; change it there and reload", e.name, m.cfg.File)
	}
	if err := m.setEnabled(ctx, e, on, reason, &ops); err != nil {
		return View{}, err
	}
	m.publishRouter()
	return m.view(e), nil
}

// setEnabled changes an entry's operational state. Callers hold m.change, publish the router and run ops once
// it is released.
func (m *Manager) setEnabled(ctx context.Context, e *entry, on bool, reason string, ops *[]*laneOp) error {
	if on == e.enabled {
		return nil
	}
	if on && e.broken {
		return m.brokenRefusal(e)
	}
	now := m.opts.Now().UTC()
	if on {
		dd, err := m.build(ctx, m.cfg, e)
		if err != nil {
			return refuse(ErrInvalid, "config", "cannot start the destination: %v", err)
		}
		if err := m.opts.Store.SetDestinationState(ctx, store.DestinationState{Name: e.id, Enabled: true, UpdatedAt: now}); err != nil {
			*ops = append(*ops, &laneOp{discard: dd.Sink})
			return err
		}
		*ops = append(*ops, m.startLane(dd, false))
		m.mu.Lock()
		e.enabled, e.running, e.reason = true, true, ""
		m.mu.Unlock()
		m.log.Info("destination enabled", "destination", e.name)
		return nil
	}
	if err := m.opts.Store.SetDestinationState(ctx, store.DestinationState{Name: e.id, Enabled: false, Reason: reason, UpdatedAt: now}); err != nil {
		return err
	}
	m.mu.Lock()
	e.enabled, e.reason = false, reason
	m.mu.Unlock()
	op := m.stop(e, "destination disabled: "+reason, false)
	// The operator event goes out once the lane has stopped, and, being a publish, outside m.mu.
	tenant, data := e.tenant, map[string]any{
		"destination": map[string]string{"id": e.id, "name": e.name},
		"reason":      reason,
	}
	op.then = func(ctx context.Context) { m.emit(ctx, TopicDestinationDisabled, tenant, data) }
	*ops = append(*ops, op)
	m.log.Warn("destination disabled", "destination", e.name, "reason", reason)
	return nil
}
