package event

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Event is one published event as Sluice stores and delivers it.
type Event struct {
	ID            string            `json:"id"`
	Topic         string            `json:"topic"`
	Time          time.Time         `json:"time"`
	Tenant        string            `json:"tenant,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Scope         map[string]string `json:"scope,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Data          json.RawMessage   `json:"data"`
	// Traceparent is the W3C trace context the event was published with (the traceparent HTTP header, or a
	// CloudEvent's traceparent extension), stored with it and forwarded to webhook receivers so one trace spans
	// publisher, Sluice and receiver. "" when the publisher sent none.
	Traceparent string `json:"traceparent,omitempty"`

	// Body, when a destination's transform set it, is what that destination receives in place of the
	// envelope (queues, buckets, plugins) or of the data (webhooks). It is never stored.
	Body json.RawMessage `json:"-"`
	// OrderingKey is the event's ordering key for the destination it is being delivered to (its
	// `ordering_key`); sinks that order by key use it (Pub/Sub ordering key). Never stored with the event.
	OrderingKey string `json:"-"`
	// DataChecked says Data is known to be valid JSON: intake's decoders set it, having parsed it, so a sink
	// that sends Data as it is need not check it again for each destination. Never stored: an event read back
	// from the store (a retry, a claim after a restart) is checked where it is sent.
	DataChecked bool `json:"-"`
}

// NewID returns a new event id: a UUIDv7, so ids sort by creation time.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's random source does; nothing sensible can continue then.
		panic("event: random source failed: " + err.Error())
	}
	return id.String()
}

// envelope is the body queue, bucket and plugin sinks carry: the event without routing-only fields.
type envelope struct {
	ID       string            `json:"id"`
	Topic    string            `json:"topic"`
	Time     string            `json:"time"`
	Tenant   string            `json:"tenant,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Data     json.RawMessage   `json:"data"`
}

// Envelope encodes the event as `{"id","topic","time","tenant"?,"metadata"?,"data"}`, or returns the
// transformed Body when a destination's transform produced one. The data is compacted onto one line (NDJSON
// buckets depend on it) and checked, so a sink never sends broken JSON.
func (e *Event) Envelope() ([]byte, error) {
	if len(e.Body) > 0 {
		return e.Body, nil
	}
	return json.Marshal(envelope{
		ID: e.ID, Topic: e.Topic, Time: e.Time.UTC().Format(time.RFC3339Nano),
		Tenant: e.Tenant, Metadata: e.Metadata, Data: e.dataOrNull(),
	})
}

func (e *Event) dataOrNull() json.RawMessage {
	if len(e.Data) == 0 {
		return json.RawMessage("null")
	}
	return e.Data
}

// Doc returns the event as generic JSON values, the shape filters and transforms see:
// {id, topic, time, tenant, metadata, data}.
func (e *Event) Doc() (map[string]any, error) {
	var data any
	if len(e.Data) > 0 {
		if err := json.Unmarshal(e.Data, &data); err != nil {
			return nil, err
		}
	}
	md := make(map[string]any, len(e.Metadata))
	for k, v := range e.Metadata {
		md[k] = v
	}
	return map[string]any{
		"id":       e.ID,
		"topic":    e.Topic,
		"time":     e.Time.UTC().Format(time.RFC3339Nano),
		"tenant":   e.Tenant,
		"metadata": md,
		"data":     data,
	}, nil
}

// ValidTraceparent reports whether s is a W3C traceparent Sluice can store and forward: version 00's form
// "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>", lowercase, with non-zero ids and no reserved flags.
// Intake drops an invalid one rather than refusing the event: tracing is best effort and must never lose an
// event.
func ValidTraceparent(s string) bool {
	if len(s) != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	zeroTrace, zeroSpan := true, true
	for i := 3; i < 55; i++ {
		c := s[i]
		if i == 35 || i == 52 {
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
		if c != '0' {
			if i < 35 {
				zeroTrace = false
			} else if i < 52 {
				zeroSpan = false
			}
		}
	}
	// Version 00 defines the two low flag bits (sampled, random); the others are reserved and must be zero.
	return !zeroTrace && !zeroSpan && s[53] == '0' && s[54] <= '3'
}
