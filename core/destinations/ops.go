package destinations

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

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
	id, name, destTenant := e.id, e.name, e.tenant
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
	res, err := m.opts.Store.Append(ctx, []store.NewEvent{{Event: test, Destinations: []string{id}, Leased: []bool{true}, Test: true}},
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
	if _, err := m.opts.Dispatcher.Attempt(ctx, id, store.Job{Delivery: dl, Event: test}); err != nil {
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
	var id, name string
	running := false
	if e != nil {
		id, name, running = e.id, e.name, e.running
	}
	m.mu.RUnlock()
	if e == nil {
		return 0, notFound()
	}
	if !running {
		return 0, refuse(ErrDisabled, "", "destination %q is disabled; enable it before replaying", name)
	}
	f.Destination = id
	n, err := m.opts.Store.Replay(ctx, f, m.opts.Now())
	if err != nil {
		return n, err
	}
	m.opts.Dispatcher.Poke(id)
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
	e := m.findID(rec.Destination, tenant)
	running := e != nil && e.running
	m.mu.RUnlock()
	if e == nil {
		if tenant != "" {
			return store.Delivery{}, refuse(ErrNotFound, "", "no delivery with this id")
		}
		return store.Delivery{}, refuse(ErrGone, "", "destination %s no longer exists", rec.Destination)
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
