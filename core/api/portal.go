package api

import (
	"crypto/rand"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/api/console"
	"github.com/sluicehq/sluice/core/config"
)

// Portal link lifetimes: the link opens a session only before it expires (the session then lasts
// console.session_ttl).
const (
	defaultPortalTTL = time.Hour
	maxPortalTTL     = 7 * 24 * time.Hour
)

// mountConsole serves the console under /console/ on the API's port when console.enabled, and the route
// that makes portal links into it.
func (s *Server) mountConsole(mux *http.ServeMux, opts Options) {
	s.portalSecret = opts.PortalSecret
	if len(s.portalSecret) == 0 {
		// No store.encryption_key to derive it from: links die when this process does.
		s.portalSecret = make([]byte, 32)
		_, _ = rand.Read(s.portalSecret)
	}
	s.consoleCfg = opts.Console
	mux.HandleFunc("POST /v1/portal-links", s.require(roleAdmin, s.createPortalLink))
	if !opts.Console.Enabled {
		return
	}
	c := console.New(console.Options{Store: opts.Store, Intake: opts.Intake, Destinations: opts.Destinations,
		Lookup: func(key string) (Principal, bool) { return s.keys().Lookup(key) }, Sinks: opts.Sinks,
		Activity: opts.Activity, Config: opts.Console, PortalSecret: s.portalSecret, Numbers: opts.Numbers})
	s.console = c
	mux.Handle("/console/", c)
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
}

// CloseStreams ends the console's live tail streams, which would otherwise hold a graceful shutdown until its
// deadline; register it with http.Server.RegisterOnShutdown.
func (s *Server) CloseStreams() {
	if s.console != nil {
		s.console.Close()
	}
}

// createPortalLink serves POST /v1/portal-links {"tenant", "ttl"?, "read_only"?}: a signed, expiring console
// URL confined to one tenant. Only an admin key without a tenant may make one (a tenant's key could otherwise
// mint links to its own tenant that outlive the key).
func (s *Server) createPortalLink(w http.ResponseWriter, r *http.Request) {
	if p := principal(r.Context()); p.Tenant != "" {
		writeError(w, &problem{Status: http.StatusForbidden, Code: "forbidden",
			Message: "key " + p.Name + " is confined to tenant " + p.Tenant + "; portal links are made with an admin key without a tenant"})
		return
	}
	var body struct {
		Tenant   string `json:"tenant"`
		TTL      string `json:"ttl"`
		ReadOnly bool   `json:"read_only"`
	}
	if _, p := decodeBody(w, r, &body); p != nil {
		writeError(w, p)
		return
	}
	if strings.TrimSpace(body.Tenant) == "" {
		writeError(w, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Field: "tenant",
			Message: "is required: the tenant the link is confined to, e.g. {\"tenant\": \"acme\"}"})
		return
	}
	ttl := defaultPortalTTL
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil || d <= 0 || d > maxPortalTTL {
			writeError(w, &problem{Status: http.StatusBadRequest, Code: "invalid_body", Field: "ttl",
				Message: "must be a duration from 1s to 168h, such as 15m (default 1h)"})
			return
		}
		ttl = d
	}
	if !s.consoleCfg.Enabled {
		writeError(w, &problem{Status: http.StatusConflict, Code: "console_disabled",
			Message: "the console is off (console.enabled: false), so a portal link would open nothing"})
		return
	}
	expires := time.Now().Add(ttl).Truncate(time.Second).UTC()
	token := console.SignPortal(s.portalSecret, console.PortalClaims{Tenant: body.Tenant, ReadOnly: body.ReadOnly, Expires: expires})
	base := strings.TrimSuffix(s.consoleCfg.PublicURL, "/")
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"url":        base + "/console/portal?" + url.Values{"token": {token}}.Encode(),
		"expires_at": expires,
	})
}

// PortalKey derives the portal link key from the store's encryption key (first of store.EncryptionKeys);
// nil when none is configured.
func PortalKey(c config.Store) []byte {
	keys, err := c.EncryptionKeys()
	if err != nil || c.EncryptionKey == "" || len(keys) == 0 {
		return nil
	}
	return console.PortalKey(keys[0])
}
