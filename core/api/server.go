package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/store"
)

// Server serves the HTTP API.
type Server struct {
	store   store.Store
	intake  *intake.Intake
	keyset  atomic.Pointer[Keys]
	ready   atomic.Bool
	handler http.Handler

	checksMu sync.Mutex
	checks   []readyCheck
}

type readyCheck struct {
	name string
	fn   func(context.Context) error
}

// AddCheck adds a readiness check to /readyz: while fn returns an error, /readyz answers 503 with
// "name: error" as the reason (plugin sinks that keep crashing report this way).
func (s *Server) AddCheck(name string, fn func(ctx context.Context) error) {
	s.checksMu.Lock()
	defer s.checksMu.Unlock()
	s.checks = append(s.checks, readyCheck{name: name, fn: fn})
}

// New builds the API over st and in, authenticating with keys.
func New(st store.Store, in *intake.Intake, keys *Keys) *Server {
	s := &Server{store: st, intake: in}
	s.keyset.Store(keys)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", s.require("publisher", in.HandleEvent))
	mux.HandleFunc("POST /v1/events/batch", s.require("publisher", in.HandleBatch))
	mux.HandleFunc("GET /v1/events/{id}", s.require("reader", s.getEvent))
	mux.HandleFunc("GET /v1/topics", s.require("reader", s.listTopics))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		intake.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("/v1/", s.require("reader", func(w http.ResponseWriter, r *http.Request) {
		intake.WriteError(w, &intake.Problem{Status: http.StatusNotFound, Code: "not_found",
			Message: r.Method + " " + r.URL.Path + " is not a route of this server"})
	}))
	s.handler = mux
	return s
}

// SetKeys swaps the key set (config reload).
func (s *Server) SetKeys(k *Keys) { s.keyset.Store(k) }

func (s *Server) keys() *Keys { return s.keyset.Load() }

// SetReady flips /readyz (false while starting and draining).
func (s *Server) SetReady(v bool) { s.ready.Store(v) }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principal(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		intake.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "starting or draining"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		intake.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "store: " + err.Error()})
		return
	}
	s.checksMu.Lock()
	checks := append([]readyCheck(nil), s.checks...)
	s.checksMu.Unlock()
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			intake.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": c.name + ": " + err.Error()})
			return
		}
	}
	intake.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
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

type deliveryJSON struct {
	ID          string        `json:"id"`
	EventID     string        `json:"event_id"`
	Destination destRef       `json:"destination"`
	Status      store.Status  `json:"status"`
	Attempts    []attemptJSON `json:"attempts"`
	NextAt      *time.Time    `json:"next_attempt_at,omitempty"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
	LastError   string        `json:"last_error,omitempty"`
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	rec, err := s.store.Event(r.Context(), r.PathValue("id"))
	p := principal(r.Context())
	if errors.Is(err, store.ErrNotFound) || (err == nil && p.Tenant != "" && rec.Event.Tenant != p.Tenant) {
		intake.WriteError(w, &intake.Problem{Status: http.StatusNotFound, Code: "not_found", Message: "no event with this id"})
		return
	}
	if err != nil {
		intake.WriteError(w, err)
		return
	}
	out := struct {
		ID            string            `json:"id"`
		Topic         string            `json:"topic"`
		Time          time.Time         `json:"time"`
		Tenant        string            `json:"tenant,omitempty"`
		Metadata      map[string]string `json:"metadata,omitempty"`
		Scope         map[string]string `json:"scope,omitempty"`
		CorrelationID string            `json:"correlation_id,omitempty"`
		Data          json.RawMessage   `json:"data"`
		ReceivedAt    time.Time         `json:"received_at"`
		Deliveries    []deliveryJSON    `json:"deliveries"`
	}{
		ID: rec.Event.ID, Topic: rec.Event.Topic, Time: rec.Event.Time, Tenant: rec.Event.Tenant,
		Metadata: rec.Event.Metadata, Scope: rec.Event.Scope, CorrelationID: rec.Event.CorrelationID,
		Data: rec.Event.Data, ReceivedAt: rec.ReceivedAt, Deliveries: []deliveryJSON{},
	}
	for _, d := range rec.Deliveries {
		out.Deliveries = append(out.Deliveries, toDeliveryJSON(d))
	}
	intake.WriteJSON(w, http.StatusOK, out)
}

func toDeliveryJSON(d store.DeliveryRecord) deliveryJSON {
	j := deliveryJSON{
		ID: formatID(d.ID), EventID: d.EventID, Destination: destRef{ID: d.Destination, Name: d.Destination},
		Status: d.Status, Attempts: []attemptJSON{}, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, LastError: d.LastError,
	}
	if d.Status == store.Pending {
		t := d.NextAt
		j.NextAt = &t
	}
	for _, a := range d.AttemptLog {
		j.Attempts = append(j.Attempts, attemptJSON{At: a.At, DurationMS: float64(a.Duration.Microseconds()) / 1000,
			StatusCode: a.StatusCode, Error: a.Error, Response: string(a.Response)})
	}
	return j
}

func formatID(id int64) string { return strconv.FormatInt(id, 10) }

type topicJSON struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Example     any             `json:"example,omitempty"`
}

// listTopics serves GET /v1/topics: the topic catalog, in config order. It is one page: next_cursor is empty.
func (s *Server) listTopics(w http.ResponseWriter, r *http.Request) {
	topics := s.intake.Topics()
	out := make([]topicJSON, 0, len(topics))
	for _, t := range topics {
		tj := topicJSON{Name: t.Name, Description: t.Description, Example: t.Example}
		if t.CompiledSchema != nil {
			tj.Schema = t.CompiledSchema.JSON
		}
		out = append(out, tj)
	}
	intake.WriteJSON(w, http.StatusOK, map[string]any{"data": out, "next_cursor": ""})
}
