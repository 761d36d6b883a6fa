package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/sluicehq/sluice/core/api/authz"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
)

// eventJSON is an event as the API shows it. Deliveries is set by GET /v1/events/{id} only.
type eventJSON struct {
	ID            string            `json:"id"`
	Topic         string            `json:"topic"`
	Time          time.Time         `json:"time"`
	Tenant        string            `json:"tenant,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Scope         map[string]string `json:"scope,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Data          json.RawMessage   `json:"data,omitempty"`
	ReceivedAt    time.Time         `json:"received_at"`
	Deliveries    *[]deliveryJSON   `json:"deliveries,omitempty"`
}

type attemptJSON struct {
	At         time.Time `json:"at"`
	DurationMS float64   `json:"duration_ms"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	Response   string    `json:"response,omitempty"`
}

type destRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// deliveryJSON is a delivery as the API shows it. Attempts (the list) is given where one delivery is asked
// for (GET /v1/deliveries/{id}, an event's deliveries, a test send); lists carry attempt_count only, because
// the store lists deliveries without their attempts and a page of 1000 should not cost 1000 more reads.
type deliveryJSON struct {
	ID           string         `json:"id"`
	EventID      string         `json:"event_id"`
	Destination  destRef        `json:"destination"`
	Status       store.Status   `json:"status"`
	AttemptCount int            `json:"attempt_count"`
	Attempts     *[]attemptJSON `json:"attempts,omitempty"`
	Test         bool           `json:"test,omitempty"`
	NextAt       *time.Time     `json:"next_attempt_at,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
	LastError    string         `json:"last_error,omitempty"`
}

// listEvents serves GET /v1/events: events newest first. A tenant key sees its tenant's events only.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	lp, p := s.parseList(r)
	if p != nil {
		writeError(w, p)
		return
	}
	q := r.URL.Query()
	f := store.EventFilter{Topic: q.Get("topic"), Since: lp.since, Until: lp.until, Before: lp.before, Limit: lp.limit + 1}
	if q.Has("tenant") {
		f.Tenant, f.TenantSet = q.Get("tenant"), true
	}
	if t := principal(r.Context()).Tenant; t != "" {
		if f.TenantSet && f.Tenant != t {
			// Another tenant's events do not exist for this key: the list is empty, as for an unknown tenant.
			writeJSON(w, http.StatusOK, page{Data: []eventJSON{}})
			return
		}
		f.Tenant, f.TenantSet = t, true
	}
	withData := false
	switch v := q.Get("include"); v {
	case "":
	case "data":
		withData = true
	default:
		writeError(w, badParam("include", "must be data (or absent for summaries), got %q", v))
		return
	}
	rows, more, err := s.eventRows(r, f, lp.limit+1)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pageOfMore(rows, more, lp.limit, func(row store.EventSummary) string { return s.cursor(row.Seq) },
		func(row store.EventSummary) eventJSON {
			ev := row.Event
			j := eventJSON{ID: ev.ID, Topic: ev.Topic, Time: ev.Time, Tenant: ev.Tenant, Metadata: ev.Metadata,
				Scope: ev.Scope, CorrelationID: ev.CorrelationID, ReceivedAt: row.ReceivedAt}
			if withData {
				j.Data = ev.Data
			}
			return j
		}))
}

// eventRows reads up to want events of f in chunks small enough that a chunk of the largest events intake
// accepts stays near maxPageBytes, and stops once the rows read pass it: a list of big events costs one page
// of memory, not limit times the largest event.
// more reports that it stopped for size with more rows possibly left.
func (s *Server) eventRows(r *http.Request, f store.EventFilter, want int) (out []store.EventSummary, more bool, err error) {
	chunk := want
	if s.intake != nil && s.intake.MaxBodyBytes() > 0 {
		chunk = int(min(int64(want), max(maxPageBytes/s.intake.MaxBodyBytes(), 2)))
	}
	size := 0
	for len(out) < want {
		f.Limit = min(chunk, want-len(out))
		rows, err := s.store.ListEvents(r.Context(), f)
		if err != nil {
			return nil, false, err
		}
		out = append(out, rows...)
		for _, row := range rows {
			size += len(row.Event.Data)
		}
		if len(rows) < f.Limit {
			return out, false, nil
		}
		if size > maxPageBytes {
			return out, len(out) < want, nil
		}
		f.Before = rows[len(rows)-1].Seq
	}
	return out, false, nil
}

// getEvent serves GET /v1/events/{id}: the event with its deliveries. A tenant key gets 404 for another
// tenant's event and sees only the deliveries to its own destinations. Event ids are per tenant: a tenant key
// reads its own tenant's; a tenant-less key picks one with ?tenant= (without it, the first appended).
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	p := principal(r.Context())
	var (
		rec *store.EventRecord
		err error
	)
	switch t, set := r.URL.Query()["tenant"]; {
	case p.Tenant != "":
		rec, err = s.store.TenantEvent(r.Context(), p.Tenant, r.PathValue("id"))
	case set:
		rec, err = s.store.TenantEvent(r.Context(), t[0], r.PathValue("id"))
	default:
		rec, err = s.store.Event(r.Context(), r.PathValue("id"))
	}
	if errors.Is(err, store.ErrNotFound) || (err == nil && !authz.Sees(p, rec.Event.Tenant)) {
		writeError(w, notFound("event"))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ev := rec.Event
	out := eventJSON{ID: ev.ID, Topic: ev.Topic, Time: ev.Time, Tenant: ev.Tenant, Metadata: ev.Metadata, Scope: ev.Scope,
		CorrelationID: ev.CorrelationID, Data: ev.Data, ReceivedAt: rec.ReceivedAt}
	visible := s.visible(p.Tenant)
	deliveries := make([]deliveryJSON, 0, len(rec.Deliveries))
	for _, d := range rec.Deliveries {
		if visible(d.Destination) {
			deliveries = append(deliveries, s.deliveryView(d.Delivery, d.AttemptLog, true))
		}
	}
	// Always present on the single-event answer, even empty ("matched nothing"): a pointer to the slice.
	out.Deliveries = &deliveries
	writeJSON(w, http.StatusOK, out)
}

// visible returns whether a tenant may see deliveries to a destination name ("" sees all).
func (s *Server) visible(tenant string) func(name string) bool {
	if tenant == "" {
		return func(string) bool { return true }
	}
	if s.dests == nil {
		return func(string) bool { return false }
	}
	ids := s.dests.IDs(tenant)
	return func(id string) bool { return slices.Contains(ids, id) }
}

// deliveryView renders a delivery; withAttempts adds the attempt list (always a list then, maybe empty).
func (s *Server) deliveryView(d store.Delivery, log []store.Attempt, withAttempts bool) deliveryJSON {
	j := deliveryJSON{
		ID: s.nums.Hide(d.ID, seal.KindDelivery), EventID: d.EventID, Destination: destRef{ID: d.Destination, Name: s.label(d.Destination)},
		Status: d.Status, AttemptCount: d.Attempts, Test: d.Test, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		LastError: d.LastError,
	}
	if d.Status == store.Pending && !d.NextAt.IsZero() {
		t := d.NextAt
		j.NextAt = &t
	}
	if withAttempts {
		list := make([]attemptJSON, 0, len(log))
		j.Attempts = &list
		for _, a := range log {
			list = append(list, attemptJSON{At: a.At, DurationMS: float64(a.Duration.Microseconds()) / 1000,
				StatusCode: a.StatusCode, Error: a.Error, Response: string(a.Response)})
		}
		if len(log) > j.AttemptCount {
			j.AttemptCount = len(log)
		}
	}
	return j
}

// label returns a destination id's name (the id itself when no manager is wired, or it is gone).
func (s *Server) label(id string) string {
	if s.dests == nil {
		return id
	}
	return s.dests.Label(id)
}
