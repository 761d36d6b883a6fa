package destinations

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// RotateSecret gives an API webhook destination a new signing secret (generated when secret is ""). The old
// secrets keep signing beside it for delivery.rotation_overlap, then are dropped. The new secret is returned
// in full, once.
func (m *Manager) RotateSecret(ctx context.Context, idOrName, tenant, secret string) (View, string, error) {
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
	e := m.find(idOrName, tenant)
	if e == nil {
		return View{}, "", notFound()
	}
	if e.source != SourceAPI {
		return View{}, "", m.readOnly(e)
	}
	if e.broken {
		return View{}, "", m.brokenRefusal(e)
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
	ne.from = nil // changed in memory: the next Sync builds it from the store again
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
	if err := m.swap(ctx, e, &ne, &ops); err != nil {
		return View{}, "", err
	}
	m.scheduleRetirement()
	m.log.Info("signing secret rotated", "destination", e.name, "overlap", overlap.String())
	return m.view(e), secret, nil
}

// swap persists ne and decides to move e's lane to it. Callers hold m.change and run ops once it is released.
func (m *Manager) swap(ctx context.Context, e, ne *entry, ops *[]*laneOp) error {
	if ne.running {
		dd, err := m.build(ctx, m.cfg, ne)
		if err != nil {
			return err
		}
		if err := m.persist(ctx, ne); err != nil {
			*ops = append(*ops, &laneOp{discard: dd.Sink})
			return err
		}
		*ops = append(*ops, m.startLane(dd, true))
	} else if err := m.persist(ctx, ne); err != nil {
		return err
	}
	m.mu.Lock()
	*e = *ne
	m.mu.Unlock()
	return nil
}

// scheduleRetirement arms a timer for the next rotated-out secret to expire. Callers hold m.change.
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
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
	now := m.opts.Now()
	for _, e := range m.entries {
		keep := slices.DeleteFunc(slices.Clone(e.retiring), func(r store.RetiringSecret) bool { return !r.Until.After(now) })
		if len(keep) == len(e.retiring) {
			continue
		}
		ne := *e
		ne.from = nil // changed in memory: the next Sync builds it from the store again
		ne.retiring = keep
		d, ferrs := m.parse(m.cfg, ne.spec, keep)
		if ferrs != nil {
			m.log.Error("drop rotated-out secret", "destination", e.name, "err", joinFieldErrors(ferrs))
			continue
		}
		ne.dest, ne.fingerprint = d, fingerprint(m.cfg, d)
		if err := m.swap(ctx, e, &ne, &ops); err != nil {
			m.log.Error("drop rotated-out secret", "destination", e.name, "err", err)
			continue
		}
		m.log.Info("rotated-out signing secret dropped", "destination", e.name)
	}
	m.publishRouter()
	m.scheduleRetirement()
}
