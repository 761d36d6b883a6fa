package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/api/console"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// openAPIDoc is the checked-in OpenAPI 3.1 document of this API, served at GET /v1/openapi.json. It is
// written by hand and kept honest by a test that validates real responses against it.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3.1 document of the API (a copy).
func OpenAPI() []byte { return slices.Clone(openAPIDoc) }

// Options wire a Server.
type Options struct {
	Store  store.Store
	Intake *intake.Intake
	Keys   *Keys
	// Destinations is the live destination set: the backend of /v1/destinations, retry and replay, and the
	// scope of a tenant key's view of deliveries.
	Destinations *destinations.Manager
	// Metrics serves GET /metrics (Prometheus); nil answers 404.
	Metrics http.Handler
	// Console is the console block of the config: when Enabled, /console/ is served (portal.go).
	Console config.Console
	// Sinks describes the sink types the console's destination forms offer.
	Sinks *sinks.Registry
	// Activity feeds the console's overview chart and live tail; nil counts nothing.
	Activity *console.Activity
	// PortalSecret signs portal links (PortalKey); empty makes a random one for this process.
	PortalSecret []byte
	// Numbers hides delivery ids and cursors (seal.NewNumbers over store.encryption_key); nil shows them plain.
	Numbers *seal.Numbers
}

// Server serves the HTTP API.
type Server struct {
	store   store.Store
	intake  *intake.Intake
	dests   *destinations.Manager
	metrics http.Handler
	nums    *seal.Numbers
	keyset  atomic.Pointer[Keys]
	ready   atomic.Bool
	mux     *http.ServeMux
	handler http.Handler

	checksMu sync.Mutex
	checks   []readyCheck

	consoleCfg   config.Console
	portalSecret []byte
	console      *console.Console
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

// Role names as require takes them.
const (
	roleReader    = "reader"
	rolePublisher = "publisher"
	roleAdmin     = "admin"
)

// New builds the API from opts.
func New(opts Options) *Server {
	keys := opts.Keys
	if keys == nil {
		keys = &Keys{}
	}
	s := &Server{store: opts.Store, intake: opts.Intake, dests: opts.Destinations, metrics: opts.Metrics, nums: opts.Numbers}
	s.keyset.Store(keys)
	mux := http.NewServeMux()

	mux.HandleFunc("POST /v1/events", s.require(rolePublisher, s.handleEvent))
	mux.HandleFunc("POST /v1/events/batch", s.require(rolePublisher, s.handleBatch))
	mux.HandleFunc("GET /v1/events", s.require(roleReader, s.listEvents))
	mux.HandleFunc("GET /v1/events/{id}", s.require(roleReader, s.getEvent))

	mux.HandleFunc("GET /v1/deliveries", s.require(roleReader, s.listDeliveries))
	mux.HandleFunc("GET /v1/deliveries/{id}", s.require(roleReader, s.getDelivery))
	mux.HandleFunc("POST /v1/deliveries/{id}/retry", s.require(roleAdmin, s.retryDelivery))

	mux.HandleFunc("GET /v1/destinations", s.require(roleReader, s.listDestinations))
	mux.HandleFunc("POST /v1/destinations", s.require(roleAdmin, s.createDestination))
	mux.HandleFunc("GET /v1/destinations/{id}", s.require(roleReader, s.getDestination))
	mux.HandleFunc("PATCH /v1/destinations/{id}", s.require(roleAdmin, s.patchDestination))
	mux.HandleFunc("DELETE /v1/destinations/{id}", s.require(roleAdmin, s.deleteDestination))
	mux.HandleFunc("POST /v1/destinations/{id}/enable", s.require(roleAdmin, s.enableDestination))
	mux.HandleFunc("POST /v1/destinations/{id}/disable", s.require(roleAdmin, s.disableDestination))
	mux.HandleFunc("POST /v1/destinations/{id}/test", s.require(roleAdmin, s.testDestination))
	mux.HandleFunc("POST /v1/destinations/{id}/rotate-secret", s.require(roleAdmin, s.rotateSecret))
	mux.HandleFunc("POST /v1/destinations/{id}/replay", s.require(roleAdmin, s.replayDestination))

	mux.HandleFunc("GET /v1/topics", s.require(roleReader, s.listTopics))
	s.mountConsole(mux, opts)
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(openAPIDoc)
	})
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	// Everything else under /v1 lands here: the catch-all matches every method, so ServeMux's own 405 never
	// fires below /v1; unmatched answers 405 (with Allow) when the path is a route for other methods.
	mux.HandleFunc("/v1/", s.require(roleReader, s.unmatched))
	s.mux = mux
	s.handler = mux
	return s
}

// probeMethods are the methods unmatched tries to find out whether a path is a route for other methods.
var probeMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// unmatched answers a /v1 request no route took: 405 when the path is a route for other methods, else 404.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range probeMethods {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/v1/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		if slices.Contains(allow, http.MethodGet) {
			allow = append(allow, http.MethodHead)
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, &problem{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Message: r.Method + " is not allowed on " + r.URL.Path + "; allowed: " + strings.Join(allow, ", ")})
		return
	}
	writeError(w, &problem{Status: http.StatusNotFound, Code: "not_found",
		Message: r.Method + " " + r.URL.Path + " is not a route of this server"})
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeError(w, &problem{Status: http.StatusNotFound, Code: "not_found",
			Message: "metrics are not served by this server"})
		return
	}
	s.metrics.ServeHTTP(w, r)
}

// SetKeys swaps the key set (config reload).
func (s *Server) SetKeys(k *Keys) { s.keyset.Store(k) }

func (s *Server) keys() *Keys { return s.keyset.Load() }

// SetReady flips /readyz (false while starting and draining).
func (s *Server) SetReady(v bool) { s.ready.Store(v) }

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principal(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// readyz answers ready or not ready; the reason (store errors, plugin names) only to a request with a valid
// key, as it tells an outsider what runs inside.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	_, known := s.keys().Lookup(strings.TrimSpace(token))
	writeJSON := func(w http.ResponseWriter, status int, body map[string]string) {
		if !known {
			delete(body, "reason")
		}
		writeJSON(w, status, body)
	}
	if !s.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "starting or draining"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "store: " + err.Error()})
		return
	}
	s.checksMu.Lock()
	checks := append([]readyCheck(nil), s.checks...)
	s.checksMu.Unlock()
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": c.name + ": " + err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

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
	writeJSON(w, http.StatusOK, page{Data: out, NextCursor: ""})
}

// page is the shape of every list answer.
type page struct {
	Data       any    `json:"data"`
	NextCursor string `json:"next_cursor"`
}

// maxPageBytes is about the most one list answer holds: a page ends before it passes it (with at least one
// row), and next_cursor continues from there, so no request costs more than this whatever limit asks.
const maxPageBytes = 8 << 20

// pageOf renders one page of a list the store answered with up to limit+1 rows: the extra row only says a
// next page exists, whose cursor (pos, Server.cursor of its position) is the last row shown. A page also ends before it passes
// maxPageBytes.
func pageOf[R, J any](rows []R, limit int, pos func(R) string, view func(R) J) page {
	return pageOfMore(rows, false, limit, pos, view)
}

// pageOfMore is pageOf for rows that end early although more may follow (more): the page then has a cursor.
func pageOfMore[R, J any](rows []R, more bool, limit int, pos func(R) string, view func(R) J) page {
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = pos(rows[len(rows)-1])
	} else if more && len(rows) > 0 {
		next = pos(rows[len(rows)-1])
	}
	out := make([]J, 0, len(rows))
	size := 0
	for i, r := range rows {
		v := view(r)
		b, _ := json.Marshal(v)
		if size += len(b) + 1; size > maxPageBytes && i > 0 {
			next = pos(rows[i-1])
			break
		}
		out = append(out, v)
	}
	return page{Data: out, NextCursor: next}
}
