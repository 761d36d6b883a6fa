package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/core/api/authz"
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
	Data          json.RawMessage   `json:"data"`
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
	lp, p := parseList(r)
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
	rows, err := s.store.ListEvents(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pageOf(rows, lp.limit, func(row store.EventSummary) int64 { return row.Seq },
		func(row store.EventSummary) eventJSON {
			ev := row.Event
			return eventJSON{ID: ev.ID, Topic: ev.Topic, Time: ev.Time, Tenant: ev.Tenant, Metadata: ev.Metadata,
				Scope: ev.Scope, CorrelationID: ev.CorrelationID, Data: ev.Data, ReceivedAt: row.ReceivedAt}
		}))
}

// getEvent serves GET /v1/events/{id}: the event with its deliveries. A tenant key gets 404 for another
// tenant's event and sees only the deliveries to its own destinations.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	rec, err := s.store.Event(r.Context(), r.PathValue("id"))
	p := principal(r.Context())
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
	names := s.dests.Names(tenant)
	return func(name string) bool { return slices.Contains(names, name) }
}

// deliveryView renders a delivery; withAttempts adds the attempt list (always a list then, maybe empty).
func (s *Server) deliveryView(d store.Delivery, log []store.Attempt, withAttempts bool) deliveryJSON {
	j := deliveryJSON{
		ID: formatID(d.ID), EventID: d.EventID, Destination: destRef{ID: s.ref(d.Destination), Name: d.Destination},
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

// ref returns a destination name's id (the name itself when no manager is wired, or it is gone).
func (s *Server) ref(name string) string {
	if s.dests == nil {
		return name
	}
	return s.dests.Ref(name)
}

func formatID(id int64) string { return strconv.FormatInt(id, 10) }
