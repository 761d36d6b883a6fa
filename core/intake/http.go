package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// Problem is a client error with the field at fault; it becomes {"error": {"code", "message", "field"}}.
type Problem struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Pointer is the JSON pointer (RFC 6901) into data of the value that failed the topic's schema; "" is
	// data itself.
	Pointer *string `json:"pointer,omitempty"`
}

func (p *Problem) Error() string { return p.Message }

func invalid(field, format string, args ...any) *Problem {
	return &Problem{Status: http.StatusBadRequest, Code: "invalid_event", Field: field, Message: fmt.Sprintf(format, args...)}
}

// WriteError writes err as the API's error body.
func WriteError(w http.ResponseWriter, err error) {
	var p *Problem
	if !errors.As(err, &p) {
		p = &Problem{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
	}
	WriteJSON(w, p.Status, map[string]any{"error": p})
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

type tenantKey struct{}

// WithTenant binds the publishing key's tenant: its events carry that tenant and no other.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// input is the JSON body of one event.
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
func toEvent(ctx context.Context, in *input, prefix string) (event.Event, *Problem) {
	var ev event.Event
	if in.ID != nil {
		id := *in.ID
		if id == "" || len(id) > maxIDLen || strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0 {
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
	ev.Data = in.Data
	if in.Time != nil {
		t, err := time.Parse(time.RFC3339Nano, *in.Time)
		if err != nil {
			return ev, invalid(prefix+"time", "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		ev.Time = t.UTC()
	}
	ev.Metadata, ev.Scope, ev.CorrelationID = in.Metadata, in.Scope, in.CorrelationID
	ev.Tenant = in.Tenant
	if t, ok := ctx.Value(tenantKey{}).(string); ok && t != "" {
		switch ev.Tenant {
		case "":
			ev.Tenant = t
		case t:
		default:
			return ev, &Problem{Status: http.StatusForbidden, Code: "forbidden", Field: prefix + "tenant",
				Message: fmt.Sprintf("this key publishes for tenant %q only", t)}
		}
	}
	return ev, nil
}

// decode reads a JSON body strictly, turning decoder errors into problems that name the field.
func decode(r *http.Request, max int64, v any) *Problem {
	body := http.MaxBytesReader(nil, r.Body, max)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.More() {
			return invalid("", "the body must hold a single JSON object")
		}
		return nil
	}
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return tooLarge(max)
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

func tooLarge(max int64) *Problem {
	return &Problem{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large",
		Message: fmt.Sprintf("the body is larger than intake.http.max_body_bytes (%d bytes)", max)}
}

func checkContentType(r *http.Request) *Problem {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	// curl sends form-urlencoded unless told otherwise; the body is JSON all the same.
	lenient := mt == "application/json" || mt == "text/plain" || mt == "application/x-www-form-urlencoded" ||
		(strings.HasSuffix(mt, "+json") && !strings.HasPrefix(mt, "application/cloudevents"))
	if err != nil || !lenient {
		return &Problem{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("content type %q is not accepted; send application/json", ct)}
	}
	return nil
}

// item is one decoded event on its way to Publish, with the per-run subscriptions it carries.
type item struct {
	ev   event.Event
	subs []SubscriptionRequest
}

// jsonItem validates one Sluice event (the body of POST /v1/events).
func jsonItem(ctx context.Context, body *input, prefix string) (item, *Problem) {
	ev, p := toEvent(ctx, body, prefix)
	if p != nil {
		return item{}, p
	}
	subs, p := parseSubscriptions(body.Subscriptions, prefix)
	if p != nil {
		return item{}, p
	}
	if len(subs) > 0 && ev.CorrelationID == "" {
		return item{}, invalid(prefix+"correlation_id", "is required with subscriptions: they last for the run the correlation id names")
	}
	return item{ev: ev, subs: subs}, nil
}

// readBody reads a whole body, bounded.
func readBody(r *http.Request, max int64) ([]byte, *Problem) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(max)
		}
		return nil, invalid("", "cannot read the body: %v", err)
	}
	return b, nil
}

// HandleEvent serves POST /v1/events: a Sluice event (application/json), a structured CloudEvent
// (application/cloudevents+json), a binary-mode CloudEvent (ce-* headers) or a CloudEvents batch
// (application/cloudevents-batch+json, answered like /v1/events/batch).
func (in *Intake) HandleEvent(w http.ResponseWriter, r *http.Request) {
	var it item
	switch mt := mediaType(r.Header.Get("Content-Type")); {
	case mt == ceBatch:
		in.HandleBatch(w, r)
		return
	case mt == ceStructured:
		body, p := readBody(r, in.opts.MaxBodyBytes)
		if p == nil {
			var ce *ceEvent
			if ce, p = decodeStructured(body, ""); p == nil {
				it, p = ceItem(r.Context(), ce, "")
			}
		}
		if p != nil {
			WriteError(w, p)
			return
		}
	case r.Header.Get("Ce-Specversion") != "":
		body, p := readBody(r, in.opts.MaxBodyBytes)
		if p == nil {
			var ce *ceEvent
			if ce, p = decodeBinaryHTTP(r.Header, body); p == nil {
				it, p = ceItem(r.Context(), ce, "")
			}
		}
		if p != nil {
			WriteError(w, p)
			return
		}
	default:
		if p := checkContentType(r); p != nil {
			WriteError(w, p)
			return
		}
		var body input
		if p := decode(r, in.opts.MaxBodyBytes, &body); p != nil {
			WriteError(w, p)
			return
		}
		var p *Problem
		if it, p = jsonItem(r.Context(), &body, ""); p != nil {
			WriteError(w, p)
			return
		}
	}
	if p := in.admit(r.Context(), &it, ""); p != nil {
		WriteError(w, p)
		return
	}
	res, err := in.Publish(r.Context(), []event.Event{it.ev})
	if err != nil {
		in.unavailable(w, err)
		return
	}
	if res[0].Err != nil {
		WriteError(w, resultProblem(res[0].Err, "id"))
		return
	}
	WriteJSON(w, http.StatusAccepted, res[0])
}

// HandleBatch serves POST /v1/events/batch (`{"events": [...]}`, or a CloudEvents batch): every valid event is
// stored; each gets its own answer.
func (in *Intake) HandleBatch(w http.ResponseWriter, r *http.Request) {
	var raws []json.RawMessage
	decodeOne := func(ctx context.Context, raw json.RawMessage, prefix string) (item, *Problem) {
		var one input
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&one); err != nil {
			return item{}, invalid(prefix[:len(prefix)-1], "not a valid event: %v", strings.TrimPrefix(err.Error(), "json: "))
		}
		return jsonItem(ctx, &one, prefix)
	}
	field := "events"
	if mediaType(r.Header.Get("Content-Type")) == ceBatch {
		body, p := readBody(r, in.opts.MaxBodyBytes)
		if p == nil {
			raws, p = splitBatch(body)
		}
		if p != nil {
			WriteError(w, p)
			return
		}
		field = ""
		decodeOne = func(ctx context.Context, raw json.RawMessage, prefix string) (item, *Problem) {
			ce, p := decodeStructured(raw, prefix)
			if p != nil {
				return item{}, p
			}
			return ceItem(ctx, ce, prefix)
		}
	} else {
		if p := checkContentType(r); p != nil {
			WriteError(w, p)
			return
		}
		var body struct {
			Events []json.RawMessage `json:"events"`
		}
		if p := decode(r, in.opts.MaxBodyBytes, &body); p != nil {
			WriteError(w, p)
			return
		}
		raws = body.Events
	}
	if len(raws) == 0 {
		WriteError(w, invalid(field, "must be a non-empty array of events"))
		return
	}
	if len(raws) > in.opts.MaxBatch {
		WriteError(w, invalid(field, "holds %d events; at most %d per batch", len(raws), in.opts.MaxBatch))
		return
	}
	type answer struct {
		Status int `json:"status"`
		*Result
		Error *Problem `json:"error,omitempty"`
	}
	// Problems name an event by its place: events[3].topic, or [3].type in a CloudEvents batch.
	prefixOf := func(i int) string {
		if field == "" {
			return fmt.Sprintf("[%d].", i)
		}
		return fmt.Sprintf("events[%d].", i)
	}
	answers := make([]answer, len(raws))
	var evs []event.Event
	var idx []int
	for i, raw := range raws {
		it, p := decodeOne(r.Context(), raw, prefixOf(i))
		if p == nil {
			p = in.admit(r.Context(), &it, prefixOf(i))
		}
		if p != nil {
			answers[i] = answer{Status: p.Status, Error: p}
			continue
		}
		evs = append(evs, it.ev)
		idx = append(idx, i)
	}
	accepted := 0
	if len(evs) > 0 {
		res, err := in.Publish(r.Context(), evs)
		if err != nil {
			in.unavailable(w, err)
			return
		}
		for k, rs := range res {
			i := idx[k]
			if rs.Err != nil {
				p := resultProblem(rs.Err, prefixOf(i)+"id")
				answers[i] = answer{Status: p.Status, Error: p}
				continue
			}
			accepted++
			answers[i] = answer{Status: http.StatusAccepted, Result: &res[k]}
		}
	}
	WriteJSON(w, http.StatusAccepted, map[string]any{
		"accepted": accepted, "rejected": len(raws) - accepted, "results": answers,
	})
}

func resultProblem(err error, field string) *Problem {
	if errors.Is(err, store.ErrIDReused) {
		return &Problem{Status: http.StatusConflict, Code: "conflict", Field: field, Message: err.Error()}
	}
	return &Problem{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

func (in *Intake) unavailable(w http.ResponseWriter, err error) {
	if !errors.Is(err, ErrClosed) {
		slog.Error("publish failed", "err", err)
	}
	w.Header().Set("Retry-After", "1")
	WriteError(w, &Problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the event was not stored: " + err.Error() + "; retry later"})
}
