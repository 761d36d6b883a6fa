package console

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/api/authz"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

//go:embed static templates
var assets embed.FS

// Options wire a Console. Store, Intake and Destinations are the same service layer /v1 uses.
type Options struct {
	Store        store.Store
	Intake       *intake.Intake
	Destinations *destinations.Manager
	// Lookup authenticates an API key (the /v1 key set, live across reloads).
	Lookup func(key string) (authz.Principal, bool)
	// Sinks describes the sink types the create and edit forms offer (plugin sinks included).
	Sinks *sinks.Registry
	// Activity counts outcomes per minute (the overview) and wakes the live tail; nil makes one that hears
	// nothing.
	Activity *Activity
	Config   config.Console
	// PortalSecret signs portal links (PortalKey derives it); empty makes a random one for this process.
	PortalSecret []byte
	// Numbers hides delivery ids and list cursors as the API does; nil shows them plain.
	Numbers *seal.Numbers
	Logger  *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Console serves /console/.
type Console struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
	csp      string
	xfo      string
	mux      *http.ServeMux
	// closing ends the live tails' streams (Close): a server shutting down waits for every request, and a
	// stream never ends by itself.
	closing   chan struct{}
	closeOnce sync.Once
}

// Close ends every live tail stream now and refuses new ones; pages keep working. Call it when the HTTP
// server starts shutting down (http.Server.RegisterOnShutdown).
func (c *Console) Close() { c.closeOnce.Do(func() { close(c.closing) }) }

// pageNames are the templates under templates/, each rendered inside layout.html.
var pageNames = []string{"login", "overview", "destinations", "destination", "form", "secret", "events", "event",
	"replay", "topics", "live", "error", "portal", "attempt"}

// New builds the console.
func New(opts Options) *Console {
	if opts.Activity == nil {
		opts.Activity = NewActivity()
	}
	if opts.Sinks == nil {
		opts.Sinks = sinks.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.PortalSecret) == 0 {
		opts.PortalSecret = randomKey()
	}
	if opts.Config.SessionTTL <= 0 {
		opts.Config.SessionTTL = config.Duration(12 * time.Hour)
	}
	c := &Console{opts: opts, log: opts.Logger, now: opts.Now, sessions: newSessions(), pages: map[string]*template.Template{},
		closing: make(chan struct{})}
	// The store keys deliveries by destination id; pages show the name.
	// Delivery ids show as the API shows them (hidden under store.encryption_key, seal.Numbers).
	pageFuncs := template.FuncMap{"destName": func(id string) string { return id },
		"did": func(id int64) string { return opts.Numbers.Hide(id, seal.KindDelivery) }}
	if opts.Destinations != nil {
		pageFuncs["destName"] = opts.Destinations.Label
	}
	for _, name := range pageNames {
		c.pages[name] = template.Must(template.New("layout.html").Funcs(funcs).Funcs(pageFuncs).ParseFS(assets,
			"templates/layout.html", "templates/parts.html", "templates/"+name+".html"))
	}
	sub, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err)
	}
	c.static = http.StripPrefix("/console/static/", http.FileServerFS(sub))
	c.csp, c.xfo = framePolicy(opts.Config.FrameAncestors)
	c.routes()
	return c
}

// framePolicy turns console.frame_ancestors into the Content-Security-Policy and X-Frame-Options headers.
// No inline script or style is allowed anywhere: htmx's own indicator style is switched off by its meta
// config and lives in console.css.
func framePolicy(ancestors []string) (csp, xfo string) {
	fa := "'none'"
	xfo = "DENY"
	if len(ancestors) > 0 {
		fa = strings.Join(ancestors, " ")
		xfo = "" // X-Frame-Options cannot name several origins; frame-ancestors rules
		if len(ancestors) == 1 && ancestors[0] == "'self'" {
			xfo = "SAMEORIGIN"
		}
	}
	csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"form-action 'self'; base-uri 'none'; frame-ancestors " + fa
	return csp, xfo
}

// ServeHTTP serves everything under /console/.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", c.csp)
	if c.xfo != "" {
		h.Set("X-Frame-Options", c.xfo)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := http.NewServeMux()
	m.Handle("GET /console/static/", c.static)
	m.HandleFunc("GET /console/login", c.loginPage)
	m.HandleFunc("POST /console/login", c.login)
	m.HandleFunc("GET /console/portal", c.portal)
	m.HandleFunc("POST /console/logout", c.session(authz.Reader, c.logout))

	m.HandleFunc("GET /console/{$}", c.session(authz.Reader, c.overview))
	m.HandleFunc("GET /console/destinations", c.session(authz.Reader, c.listDestinations))
	m.HandleFunc("GET /console/destinations/new", c.session(authz.Admin, c.newDestination))
	m.HandleFunc("POST /console/destinations", c.session(authz.Admin, c.createDestination))
	m.HandleFunc("GET /console/destinations/{id}", c.session(authz.Reader, c.showDestination))
	m.HandleFunc("GET /console/destinations/{id}/edit", c.session(authz.Admin, c.editDestination))
	m.HandleFunc("POST /console/destinations/{id}", c.session(authz.Admin, c.updateDestination))
	m.HandleFunc("POST /console/destinations/{id}/enable", c.session(authz.Admin, c.enable(true)))
	m.HandleFunc("POST /console/destinations/{id}/disable", c.session(authz.Admin, c.enable(false)))
	m.HandleFunc("POST /console/destinations/{id}/test", c.session(authz.Admin, c.testDestination))
	m.HandleFunc("POST /console/destinations/{id}/rotate-secret", c.session(authz.Admin, c.rotateSecret))
	m.HandleFunc("GET /console/destinations/{id}/replay", c.session(authz.Admin, c.replayPreview))
	m.HandleFunc("POST /console/destinations/{id}/replay", c.session(authz.Admin, c.replay))

	m.HandleFunc("GET /console/events", c.session(authz.Reader, c.listEvents))
	m.HandleFunc("GET /console/events/{id}", c.session(authz.Reader, c.showEvent))
	m.HandleFunc("POST /console/deliveries/{id}/retry", c.session(authz.Admin, c.retryDelivery))
	m.HandleFunc("GET /console/topics", c.session(authz.Reader, c.topics))
	m.HandleFunc("GET /console/live", c.session(authz.Reader, c.live))
	m.HandleFunc("GET /console/live/stream", c.session(authz.Reader, c.liveStream))
	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
	c.mux = m
}

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string
	P       *authz.Principal
	Admin   bool // may act (admin role): action buttons are shown only then
	CSRF    string
	Portal  bool
	Flash   string
	Data    any
	Version string
}

// render writes page name with status.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	if s := sessionOf(r); s != nil {
		p := s.principal
		v.P = &p
		v.Admin = authz.Can(p.Role, authz.Admin)
		v.CSRF = s.csrf
		v.Portal = s.portal
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := c.pages[name].Execute(w, v); err != nil {
		c.log.Warn("console: render", "page", name, "err", err)
	}
}

// fail renders the error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error, status int, msg string) {
	if err != nil && msg == "" {
		status, msg = describeError(err)
	}
	if status >= 500 {
		c.log.Error("console: request failed", "path", r.URL.Path, "err", err)
	}
	c.render(w, r, status, "error", view{Title: http.StatusText(status), Data: struct {
		Status int
		Msg    string
	}{status, msg}})
}

// describeError maps the service layer's domain errors to a status and a message to show.
func describeError(err error) (int, string) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, destinations.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "Not found: there is nothing with this id that you can see."
	case errors.Is(err, destinations.ErrForbidden), errors.Is(err, authz.ErrForbidden):
		status = http.StatusForbidden
	case errors.Is(err, destinations.ErrMalformed):
		status = http.StatusBadRequest
	case errors.Is(err, destinations.ErrConflict), errors.Is(err, destinations.ErrReadOnly),
		errors.Is(err, destinations.ErrDisabled), errors.Is(err, destinations.ErrGone),
		errors.Is(err, destinations.ErrInFlight), errors.Is(err, store.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, destinations.ErrInvalid), errors.Is(err, destinations.ErrInvalidSecret),
		errors.Is(err, destinations.ErrNoSecret), errors.Is(err, destinations.ErrNoExample),
		errors.Is(err, destinations.ErrEncryptionKeyRequired):
		status = http.StatusUnprocessableEntity
	}
	var de *destinations.Error
	if errors.As(err, &de) {
		if de.Field != "" {
			return status, de.Field + ": " + de.Msg
		}
		return status, de.Msg
	}
	if status == http.StatusInternalServerError {
		return status, "Something went wrong on the server; the log says more."
	}
	return status, err.Error()
}
