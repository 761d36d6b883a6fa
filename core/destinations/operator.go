package destinations

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// Operator event topics.
const (
	TopicDestinationDisabled = "sluice.destination.disabled"
	TopicDeliveryFailed      = "sluice.delivery.failed"
)

// OnDisabled is the dispatcher's callback when a lane disabled itself (auto-disable, 410).
func (m *Manager) OnDisabled(name, reason string) {
	ctx := context.Background()
	var ops []*laneOp
	defer func() { m.q.run(ctx, ops) }()
	m.change.Lock()
	defer m.change.Unlock()
	e := m.findID(name, "")
	if e == nil || !e.enabled {
		return
	}
	if err := m.setEnabled(ctx, e, false, reason, &ops); err != nil {
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
	e := m.findID(job.Delivery.Destination, "")
	id, name, tenant := job.Delivery.Destination, job.Delivery.Destination, ""
	if e != nil {
		name, tenant = e.name, e.tenant
	}
	m.mu.RUnlock()
	data := map[string]any{
		"delivery_id": fmt.Sprint(job.Delivery.ID),
		"event_id":    job.Event.ID,
		"topic":       job.Event.Topic,
		"destination": map[string]string{"id": id, "name": name},
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
	ev := event.Event{Topic: topic, Tenant: tenant, Data: raw, DataChecked: true}
	res, err := m.pub.Publish(context.WithoutCancel(ctx), []event.Event{ev})
	if err == nil && len(res) == 1 && res[0].Err != nil {
		err = res[0].Err
	}
	if err != nil {
		m.log.Warn("emit operator event", "topic", topic, "err", err)
	}
}
