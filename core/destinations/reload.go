package destinations

import (
	"context"
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
)

// Apply switches to a reloaded config: YAML destinations that were removed stop (their pending deliveries end
// as skipped), changed ones get a new lane, new ones start; API destinations are revalidated against it. On
// any error nothing changes and the old config stays.
func (m *Manager) Apply(ctx context.Context, cfg *config.Config) error {
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
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
		if old.broken {
			e := *old
			next = append(next, &e)
			continue
		}
		d, ferrs := m.parse(cfg, old.spec, old.retiring)
		if ferrs != nil {
			return fmt.Errorf("API destination %s is not valid under the new config: %v", old.name, joinFieldErrors(ferrs))
		}
		e := *old
		e.dest, e.fingerprint, e.from = d, fingerprint(cfg, d), nil
		next = append(next, &e)
	}
	// By id: tenants' API destinations may share a name (a YAML destination's id is its name).
	prev := map[string]*entry{}
	for _, e := range m.entries {
		prev[e.id] = e
	}
	// Build every lane that has to change first: a sink that cannot be built leaves everything as it was.
	built := map[string]dispatch.Destination{}
	for _, e := range next {
		old := prev[e.id]
		if !e.enabled || (old != nil && old.running && old.fingerprint == e.fingerprint) {
			continue
		}
		dd, err := m.build(ctx, cfg, e)
		if err != nil {
			for _, b := range built {
				ops = append(ops, &laneOp{discard: b.Sink})
			}
			return fmt.Errorf("destination %s: %w", e.name, err)
		}
		built[e.id] = dd
	}
	for _, old := range m.entries {
		if !slices.ContainsFunc(next, func(e *entry) bool { return e.id == old.id }) {
			ops = append(ops, m.stop(old, "destination removed from "+cfg.File, true))
			_ = m.opts.Store.DeleteDestinationState(ctx, old.id)
			m.log.Info("destination removed by reload", "destination", old.name)
		}
	}
	for _, e := range next {
		old := prev[e.id]
		switch dd, ok := built[e.id]; {
		case ok && old != nil && old.running:
			ops = append(ops, m.startLane(dd, true))
			e.running = true
			m.log.Info("destination changed by reload", "destination", e.name)
		case ok:
			ops = append(ops, m.startLane(dd, false))
			e.running = true
		case !e.enabled && old != nil && old.running:
			ops = append(ops, m.stop(old, e.reason, false))
		default:
			e.running = old != nil && old.running && e.enabled
		}
	}
	m.mu.Lock()
	m.cfg, m.entries = cfg, next
	m.mu.Unlock()
	m.publishRouter()
	m.scheduleRetirement()
	return nil
}
