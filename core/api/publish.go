package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/telemetry"
)

// The intake routes: the HTTP binding of intake. Reading the body (bounded), the content type and the
// CloudEvents ce-* headers are HTTP's; decoding, admitting and publishing are intake's.

// readEventBody reads an intake body, bounded by intake.http.max_body_bytes.
func readEventBody(r *http.Request, max int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, intake.TooLarge(max)
		}
		return nil, &problem{Status: http.StatusBadRequest, Code: "invalid_event", Message: "cannot read the body: " + err.Error()}
	}
	return b, nil
}

// jsonType is the content type of a Sluice event as publishers send it.
const jsonType = "application/json"

// checkContentType accepts what a Sluice event may be sent as.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" || ct == jsonType {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	// curl sends form-urlencoded unless told otherwise; the body is JSON all the same.
	lenient := mt == "application/json" || mt == "text/plain" || mt == "application/x-www-form-urlencoded" ||
		(strings.HasSuffix(mt, "+json") && !strings.HasPrefix(mt, "application/cloudevents"))
	if err != nil || !lenient {
		return &problem{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("content type %q is not accepted; send application/json", ct)}
	}
	return nil
}

// mediaType returns a content type's media type, lowercased ("" when absent or unparsable).
func mediaType(ct string) string {
	if ct == "" || ct == jsonType {
		return ct // what nearly every publisher sends: no parsing (and its allocations) per request
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}

// binaryAttrs reads the attributes of a binary-mode CloudEvent from its ce-* headers.
func binaryAttrs(h http.Header) (map[string]string, error) {
	attrs := map[string]string{}
	for k, vs := range h {
		lk := strings.ToLower(k)
		if !strings.HasPrefix(lk, "ce-") || len(vs) == 0 {
			continue
		}
		name := lk[3:]
		if !intake.IsAttributeName(name) {
			return nil, &problem{Status: http.StatusBadRequest, Code: "invalid_event", Field: k,
				Message: fmt.Sprintf("%q is not a CloudEvents attribute header: the name after ce- must be lowercase letters and digits", k)}
		}
		// The HTTP binding percent-encodes characters outside printable ASCII.
		v, err := url.PathUnescape(vs[0])
		if err != nil {
			v = vs[0]
		}
		attrs[name] = v
	}
	return attrs, nil
}

// decodeEvent decodes the body of POST /v1/events by its content type.
func (s *Server) decodeEvent(r *http.Request) (intake.Item, error) {
	ctx, max := r.Context(), s.intake.MaxBodyBytes()
	if mediaType(r.Header.Get("Content-Type")) == intake.MediaCloudEvent {
		body, err := readEventBody(r, max)
		if err != nil {
			return intake.Item{}, err
		}
		return intake.DecodeCloudEvent(ctx, body, "")
	}
	if r.Header.Get("Ce-Specversion") != "" {
		body, err := readEventBody(r, max)
		if err != nil {
			return intake.Item{}, err
		}
		attrs, err := binaryAttrs(r.Header)
		if err != nil {
			return intake.Item{}, err
		}
		return intake.BinaryCloudEvent(ctx, attrs, r.Header.Get("Content-Type"), body, "ce-")
	}
	if err := checkContentType(r); err != nil {
		return intake.Item{}, err
	}
	body, err := readEventBody(r, max)
	if err != nil {
		return intake.Item{}, err
	}
	return intake.DecodeEvent(ctx, body)
}

// handleEvent serves POST /v1/events: a Sluice event (application/json), a structured CloudEvent
// (application/cloudevents+json), a binary-mode CloudEvent (ce-* headers) or a CloudEvents batch
// (application/cloudevents-batch+json, answered like /v1/events/batch).
func (s *Server) handleEvent(w http.ResponseWriter, r *http.Request) {
	if mediaType(r.Header.Get("Content-Type")) == intake.MediaCloudEventBatch {
		s.handleBatch(w, r)
		return
	}
	ctx, span := telemetry.StartPublish(r.Context(), r.Header, "/v1/events")
	defer span.End()
	if ctx != r.Context() { // tracing on: the span is the parent of what follows
		r = r.WithContext(ctx)
	}
	it, err := s.decodeEvent(r)
	if err == nil {
		err = s.intake.Admit(r.Context(), &it, "")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	intake.KeepTraceparent(&it.Event, r.Header.Get("Traceparent"))
	res, err := s.intake.Publish(r.Context(), []event.Event{it.Event})
	if err != nil {
		s.unavailable(w, err)
		return
	}
	if res[0].Err != nil {
		writeError(w, resultProblem(res[0].Err, "id"))
		return
	}
	writeAccepted(w, res[0])
}

// writeAccepted answers one accepted event: what writeJSON writes for an intake.Result, built without
// reflection when the id needs no escaping (an id Sluice generated never does).
func writeAccepted(w http.ResponseWriter, res intake.Result) {
	for i := 0; i < len(res.ID); i++ {
		if c := res.ID[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			writeJSON(w, http.StatusAccepted, res)
			return
		}
	}
	b := make([]byte, 0, len(`{"id":"","duplicate":false,"deliveries":}`)+len(res.ID)+21)
	b = append(b, `{"id":"`...)
	b = append(b, res.ID...)
	b = append(b, `","duplicate":`...)
	b = strconv.AppendBool(b, res.Duplicate)
	b = append(b, `,"deliveries":`...)
	b = strconv.AppendInt(b, int64(res.Deliveries), 10)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

// handleBatch serves POST /v1/events/batch (`{"events": [...]}`, or a CloudEvents batch): every valid event
// is stored; each gets its own answer.
func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	ctx, span := telemetry.StartPublish(r.Context(), r.Header, r.URL.Path)
	defer span.End()
	if ctx != r.Context() { // tracing on: the span is the parent of what follows
		r = r.WithContext(ctx)
	}
	decodeOne := intake.DecodeBatchEvent
	field := "events"
	var raws []json.RawMessage
	if mediaType(r.Header.Get("Content-Type")) == intake.MediaCloudEventBatch {
		body, err := readEventBody(r, s.intake.MaxBodyBytes())
		if err == nil {
			raws, err = intake.SplitCloudEventBatch(body)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		field, decodeOne = "", intake.DecodeCloudEvent
	} else {
		if err := checkContentType(r); err != nil {
			writeError(w, err)
			return
		}
		body, err := readEventBody(r, s.intake.MaxBodyBytes())
		if err == nil {
			raws, err = intake.DecodeBatch(body)
		}
		if err != nil {
			writeError(w, err)
			return
		}
	}
	if err := s.intake.CheckBatch(len(raws), field); err != nil {
		writeError(w, err)
		return
	}
	type answer struct {
		Status int `json:"status"`
		*intake.Result
		Error *problem `json:"error,omitempty"`
	}
	// Refusals name an event by its place: events[3].topic, or [3].type in a CloudEvents batch.
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
		it, err := decodeOne(r.Context(), raw, prefixOf(i))
		if err == nil {
			err = s.intake.Admit(r.Context(), &it, prefixOf(i))
		}
		if err != nil {
			p := problemOf(err)
			answers[i] = answer{Status: p.Status, Error: p}
			continue
		}
		intake.KeepTraceparent(&it.Event, r.Header.Get("Traceparent"))
		evs = append(evs, it.Event)
		idx = append(idx, i)
	}
	accepted := 0
	if len(evs) > 0 {
		res, err := s.intake.Publish(r.Context(), evs)
		if err != nil {
			s.unavailable(w, err)
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
	writeJSON(w, http.StatusAccepted, map[string]any{
		"accepted": accepted, "rejected": len(raws) - accepted, "results": answers,
	})
}

// resultProblem answers an event the store refused; a reused id names the id field.
func resultProblem(err error, field string) *problem {
	p := problemOf(err)
	if errors.Is(err, store.ErrIDReused) {
		p.Field = field
	}
	return p
}

// unavailable answers a publish that did not reach the store (shutting down, or the store failed).
func (s *Server) unavailable(w http.ResponseWriter, err error) {
	if !errors.Is(err, intake.ErrClosed) {
		slog.Error("publish failed", "err", err)
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, &problem{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the event was not stored: " + err.Error() + "; retry later"})
}
