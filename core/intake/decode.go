package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/sluicehq/sluice/core/event"
)

type tenantKey struct{}

// WithTenant binds the publishing key's tenant: its events carry that tenant and no other.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// input is the JSON form of one event.
type input struct {
	ID            *string           `json:"id"`
	Topic         *string           `json:"topic"`
	Data          json.RawMessage   `json:"data"`
	Metadata      map[string]string `json:"metadata"`
	Tenant        string            `json:"tenant"`
	Scope         map[string]string `json:"scope"`
	CorrelationID string            `json:"correlation_id"`
	Subscriptions json.RawMessage   `json:"subscriptions"`
	Time          *string           `json:"time"`
}

const maxIDLen = 128

// toEvent validates one input; prefix names it inside a batch ("events[3].").
func toEvent(ctx context.Context, in *input, prefix string) (event.Event, error) {
	var ev event.Event
	if in.ID != nil {
		id := *in.ID
		if !validID(id) {
			return ev, invalid(prefix+"id", "must be 1–%d printable characters without spaces, or omitted to have Sluice generate one", maxIDLen)
		}
		ev.ID = id
	}
	switch {
	case in.Topic == nil || *in.Topic == "":
		return ev, invalid(prefix+"topic", "is required, e.g. \"case.status_updated\"")
	case len(*in.Topic) > 255 || strings.ContainsAny(*in.Topic, "* \t\r\n"):
		return ev, invalid(prefix+"topic", "must be at most 255 characters with no spaces or '*' (patterns belong to destinations)")
	}
	ev.Topic = *in.Topic
	if len(in.Data) == 0 {
		return ev, invalid(prefix+"data", "is required: the event's payload as JSON (use {} for none)")
	}
	ev.Data, ev.DataChecked = in.Data, true // parsed as JSON by the decoder, or checked by the CloudEvents one
	if in.Time != nil {
		t, err := time.Parse(time.RFC3339Nano, *in.Time)
		if err != nil {
			return ev, invalid(prefix+"time", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		ev.Time = t.UTC()
	}
	// Metadata may travel as headers (webhook, AMQP, CloudEvents): a CR/LF or other control byte would split or
	// smuggle a header at every destination, so it is refused here, once.
	if !metadataSafe(in.Metadata) {
		// The first offending key in sorted order, so the answer does not depend on map order.
		for _, k := range slices.Sorted(maps.Keys(in.Metadata)) {
			if !headerSafe(k) || !headerSafe(in.Metadata[k]) {
				return ev, invalid(prefix+"metadata."+k, "contains a control character (CR, LF, NUL, ...) that cannot travel in a header; remove it")
			}
		}
	}
	ev.Metadata, ev.Scope, ev.CorrelationID = in.Metadata, in.Scope, in.CorrelationID
	ev.Tenant = in.Tenant
	if t, ok := ctx.Value(tenantKey{}).(string); ok && t != "" {
		switch ev.Tenant {
		case "":
			ev.Tenant = t
		case t:
		default:
			return ev, refuse(ErrForbidden, prefix+"tenant", "this key publishes for tenant %q only", t)
		}
	}
	return ev, nil
}

// metadataSafe reports whether every key and value of md is headerSafe (without sorting the keys: that costs
// an allocation per event).
func metadataSafe(md map[string]string) bool {
	for k, v := range md {
		if !headerSafe(k) || !headerSafe(v) {
			return false
		}
	}
	return true
}

// headerSafe reports whether s may be a header field value (RFC 9110: no control characters but tab).
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func validID(id string) bool {
	return id != "" && len(id) <= maxIDLen &&
		strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) < 0
}

// decodeStrict reads a JSON body strictly, turning decoder errors into refusals that name the field.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.More() {
			return invalid("", "the body must hold a single JSON object")
		}
		return nil
	}
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &se):
		return invalid("", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if f, _, _ := strings.Cut(te.Field, "."); f == "metadata" || f == "scope" {
			return invalid(f, "must be an object of string values, e.g. {\"source\": \"crm\"}")
		}
		return invalid(te.Field, "must be %s", jsonKind(te.Type.String()))
	case errors.Is(err, io.EOF):
		return invalid("", "the body is empty; send a JSON event such as {\"topic\": \"case.created\", \"data\": {}}")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "malformed JSON: the body ends too early")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid(f, "unknown field %q; valid fields: id, topic, data, metadata, tenant, scope, correlation_id, subscriptions, time", f)
	}
	return invalid("", "malformed JSON: %v", err)
}

func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "map[string]string"):
		return "an object of string values"
	case strings.HasPrefix(goType, "map"):
		return "an object"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.Contains(goType, "string"):
		return "a string"
	}
	return "a " + goType
}

// Item is one decoded event on its way to Admit and Publish, with the per-run subscriptions it carries.
type Item struct {
	Event         event.Event
	Subscriptions []SubscriptionRequest
}

// jsonItem validates one Sluice event.
func jsonItem(ctx context.Context, body *input, prefix string) (Item, error) {
	ev, err := toEvent(ctx, body, prefix)
	if err != nil {
		return Item{}, err
	}
	subs, err := parseSubscriptions(body.Subscriptions, prefix)
	if err != nil {
		return Item{}, err
	}
	if len(subs) > 0 && ev.CorrelationID == "" {
		return Item{}, invalid(prefix+"correlation_id", "is required with subscriptions: they last for the run the correlation id names")
	}
	return Item{Event: ev, Subscriptions: subs}, nil
}

// DecodeEvent decodes and validates one Sluice event ({"topic", "data", ...}, the body of POST /v1/events).
// The publishing key's tenant comes from ctx (WithTenant).
func DecodeEvent(ctx context.Context, body []byte) (Item, error) {
	var in input
	if err := decodeStrict(body, &in); err != nil {
		return Item{}, err
	}
	return jsonItem(ctx, &in, "")
}

// DecodeBatch splits a batch body ({"events": [...]}) into its events, for DecodeBatchEvent.
func DecodeBatch(body []byte) ([]json.RawMessage, error) {
	var b struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := decodeStrict(body, &b); err != nil {
		return nil, err
	}
	return b.Events, nil
}

// DecodeBatchEvent decodes one event of a batch; prefix names it in refusals ("events[3].").
func DecodeBatchEvent(ctx context.Context, raw []byte, prefix string) (Item, error) {
	var one input
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&one); err != nil {
		return Item{}, invalid(strings.TrimSuffix(prefix, "."), "not a valid event: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	return jsonItem(ctx, &one, prefix)
}

// CheckBatch refuses a batch of n events that is empty or larger than Options.MaxBatch; field names the list.
func (in *Intake) CheckBatch(n int, field string) error {
	if n == 0 {
		return invalid(field, "must be a non-empty array of events")
	}
	if n > in.opts.MaxBatch {
		return invalid(field, "holds %d events; at most %d per batch", n, in.opts.MaxBatch)
	}
	return nil
}

// MaxBodyBytes is the largest body an event (or a batch) may have (intake.http.max_body_bytes).
func (in *Intake) MaxBodyBytes() int64 { return in.opts.MaxBodyBytes }
