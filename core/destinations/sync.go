package destinations

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// Watch keeps this node's destinations in step with changes other nodes make to the shared store (API
// destinations created, changed or deleted; destinations enabled or disabled; per-run subscriptions
// registered, refreshed or ended): each time the store's
// Changes fires, Sync runs (at most once per minSyncGap; changes in between share the next), and once when it
// starts. It returns at once for a store only this node uses (no store.Watcher), and
// otherwise when ctx ends.
func (m *Manager) Watch(ctx context.Context) {
	w, ok := m.opts.Store.(store.Watcher)
	if !ok {
		return
	}
	changes := w.Changes(ctx)
	// Sync once as soon as the subscription exists: a change another node made after Start read the store
	// but before the subscription was taken has already been announced, and no later signal repeats it.
	first := make(chan struct{}, 1)
	first <- struct{}{}
	gap := m.syncGap
	if gap == nil {
		gap = func(took time.Duration) <-chan time.Time { return time.After(max(minSyncGap, syncRest*took)) }
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-first:
		case <-changes:
		}
		t0 := time.Now()
		if err := m.Sync(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("reload destinations changed by another node; trying again at the next change", "err", err)
		}
		// Changes announced meanwhile wait for the gap, then one Sync takes them all.
		select {
		case <-ctx.Done():
			return
		case <-gap(time.Since(t0)):
		}
	}
}

// Sync reads every destination, state and subscription, so under a stream of changes (thousands of per-run
// subscriptions, each refreshed once a minute, are dozens a second) back-to-back Syncs would take a core. Watch
// rests between two: minSyncGap, or syncRest times as long as the last Sync took when that is longer (so Syncs
// take at most a fifth of a core). A change after a quiet spell is taken at once; in a stream, when the rest
// ends.
const (
	minSyncGap = 250 * time.Millisecond
	syncRest   = 4
)

// Sync brings the running destinations in line with what the store holds: API destinations, operational
// states and per-run subscriptions written by another node. It writes nothing but the skips of a destination
// disabled elsewhere. Like every change, it decides under a lock and stops or starts lanes after releasing it.
func (m *Manager) Sync(ctx context.Context) error {
	return errors.Join(m.syncDestinations(ctx), m.runs.sync(ctx))
}

// syncDestinations is Sync for API destinations and operational states.
func (m *Manager) syncDestinations(ctx context.Context) error {
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	add := func(op *laneOp) {
		if op != nil {
			ops = append(ops, op)
		}
	}
	m.change.Lock()
	defer m.change.Unlock()
	if m.cfg == nil {
		return nil // not started
	}
	states, err := m.states(ctx)
	if err != nil {
		return err
	}
	recs, err := m.opts.Store.Destinations(ctx)
	if err != nil {
		return err
	}
	var next []*entry
	for _, e := range m.entries {
		if e.source != SourceAPI {
			add(m.syncState(ctx, e, states))
			next = append(next, e)
		}
	}
	old := map[string]*entry{}
	for _, e := range m.entries {
		if e.source == SourceAPI {
			old[e.id] = e
		}
	}
	for _, rec := range recs {
		prev := old[rec.ID]
		delete(old, rec.ID)
		if prev != nil && prev.same(m.cfg, rec) {
			// Unchanged since it was built: only its state can have moved.
			add(m.syncState(ctx, prev, states))
			next = append(next, prev)
			continue
		}
		ne, _, err := m.apiEntry(m.cfg, rec, states)
		if err != nil {
			m.log.Warn("API destination changed by another node cannot run here", "destination", rec.Name, "id", rec.ID, "err", err)
			if prev != nil {
				next = append(next, prev)
			}
			continue
		}
		if prev != nil && prev.name == ne.name && prev.fingerprint == ne.fingerprint {
			m.mu.Lock()
			prev.spec, prev.retiring, prev.updated, prev.from = ne.spec, ne.retiring, ne.updated, ne.from
			m.mu.Unlock()
			add(m.syncState(ctx, prev, states))
			next = append(next, prev)
			continue
		}
		// New here, or changed: the lane is built again from the stored definition.
		swap := prev != nil && prev.running
		if prev != nil && prev.running && !(swap && ne.enabled) {
			add(m.stop(prev, "", false))
		}
		if ne.enabled {
			if dd, err := m.build(ctx, m.cfg, ne); err != nil {
				m.log.Warn("start destination changed by another node", "destination", ne.name, "err", err)
				if swap {
					add(m.stop(prev, "", false))
				}
			} else {
				add(m.startLane(dd, swap))
				ne.running = true
			}
		}
		next = append(next, ne)
	}
	// Deleted on another node (which ended their pending deliveries).
	for _, e := range old {
		add(m.stop(e, "", true))
	}
	m.mu.Lock()
	m.entries = next
	m.mu.Unlock()
	m.publishRouter()
	m.scheduleRetirement()
	return nil
}

// syncState decides to start or stop an entry's lane as its stored state says. Callers hold m.change and run
// the op once it is released.
func (m *Manager) syncState(ctx context.Context, e *entry, states map[string]store.DestinationState) *laneOp {
	if e.cfgDisabled {
		return nil
	}
	st, ok := states[e.id]
	want := !ok || st.Enabled
	switch {
	case want && !e.enabled:
		dd, err := m.build(ctx, m.cfg, e)
		if err != nil {
			m.log.Warn("start destination enabled by another node", "destination", e.name, "err", err)
			return nil
		}
		m.mu.Lock()
		e.enabled, e.running, e.reason = true, true, ""
		m.mu.Unlock()
		return m.startLane(dd, false)
	case !want && e.enabled:
		m.mu.Lock()
		e.enabled, e.reason = false, st.Reason
		m.mu.Unlock()
		// Its pending deliveries were skipped by the node that disabled it; skipping again catches those
		// appended here since.
		return m.stop(e, "destination disabled: "+st.Reason, false)
	}
	return nil
}
