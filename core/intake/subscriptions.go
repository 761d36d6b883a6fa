package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/match"
)

// Subscriptions takes the per-run subscriptions (DESIGN §4) intake admits: webhook destinations an event
// registers for its correlation id. core/destinations owns them, as it owns every destination; intake only
// hands them over and asks which ones an event reaches.
type Subscriptions interface {
	// Register makes an event's subscriptions durable and starts their lanes before the event is published,
	// so the event itself reaches them. Its refusals are *Error (ErrInvalid, ErrLimit, ErrUnavailable); prefix
	// names the event inside a batch.
	Register(ctx context.Context, ev *event.Event, reqs []SubscriptionRequest, prefix string) error
	// Match names the live subscriptions ev reaches.
	Match(ev *event.Event) []string
}

// SubscriptionsOff refuses an event's subscriptions on a server where they are off.
func SubscriptionsOff(prefix string) error {
	return invalid(prefix+"subscriptions", "per-run subscriptions are off on this server; remove the field, or set intake.inline_subscriptions.enabled: true")
}

// SubscriptionRequest is one entry of an event's `subscriptions`.
type SubscriptionRequest struct {
	URL    string   `json:"url"`
	Topics []string `json:"topics"`
	Secret string   `json:"secret,omitempty"`
}

// parseSubscriptions reads an event's subscriptions field strictly.
func parseSubscriptions(raw json.RawMessage, prefix string) ([]SubscriptionRequest, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var subs []SubscriptionRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&subs); err != nil {
		return nil, invalid(prefix+"subscriptions", "must be an array of {\"url\", \"topics\", \"secret\"?}: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	for i, s := range subs {
		p := fmt.Sprintf("%ssubscriptions[%d]", prefix, i)
		if s.URL == "" {
			return nil, invalid(p+".url", "is required: the webhook URL to deliver this run's events to")
		}
		if len(s.Topics) == 0 {
			return nil, invalid(p+".topics", "at least one topic pattern is required, e.g. [\"case.*\"]")
		}
		if _, err := match.CompileTopics(s.Topics); err != nil {
			return nil, invalid(p+".topics", "%v", err)
		}
	}
	return subs, nil
}
