package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/api/authz"
	"github.com/sluicehq/sluice/core/intake"
)

// Sessions are kept server-side, in memory: the cookie holds only a random id. Signing out or removing the
// key from auth.keys ends a session at once (each request looks the key up again); a restart signs everyone
// out, and several nodes behind one address need sticky sessions.
const (
	cookieName      = "sluice_console"
	loginCookieName = "sluice_console_login"
	csrfField       = "csrf"
	csrfHeader      = "X-CSRF-Token"
	maxSessions     = 10000
)

type session struct {
	id string
	// key is the API key signed in with; "" for a portal session, whose principal is fixed by its link.
	key       string
	principal authz.Principal
	portal    bool
	csrf      string
	expires   time.Time
}

type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func newSessions() *sessions { return &sessions{m: map[string]*session{}} }

func randomKey() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func randomToken() string { return base64.RawURLEncoding.EncodeToString(randomKey()) }

// add stores a new session; it refuses (false) when the table is full of live sessions.
func (ss *sessions) add(s *session, now time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		for id, o := range ss.m {
			if now.After(o.expires) {
				delete(ss.m, id)
			}
		}
		if len(ss.m) >= maxSessions {
			return false
		}
	}
	ss.m[s.id] = s
	return true
}

func (ss *sessions) get(id string, now time.Time) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[id]
	if s != nil && now.After(s.expires) {
		delete(ss.m, id)
		return nil
	}
	return s
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

type sessionKey struct{}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

func principalOf(r *http.Request) authz.Principal {
	if s := sessionOf(r); s != nil {
		return s.principal
	}
	return authz.Principal{}
}

// current returns the request's live session: its cookie names one that has not expired and whose key is
// still in the key set (with the role and tenant the key has now).
func (c *Console) current(r *http.Request) *session {
	ck, err := r.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	s := c.sessions.get(ck.Value, c.now())
	if s == nil {
		return nil
	}
	if s.portal {
		return s
	}
	p, ok := c.opts.Lookup(s.key)
	if !ok {
		c.sessions.remove(s.id)
		return nil
	}
	cp := *s
	cp.principal = p
	return &cp
}

// session wraps a page: without a session GET pages redirect to the sign-in and anything else is 401; a POST
// without the session's CSRF token is 403; a role that may not do this is 403 (the same rule as /v1).
func (c *Console) session(need string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.current(r)
		if s == nil {
			if r.Method == http.MethodGet {
				if r.Header.Get("HX-Request") == "true" {
					w.Header().Set("HX-Redirect", "/console/login")
				}
				http.Redirect(w, r, "/console/login", http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusUnauthorized, "Your session has ended; sign in again.")
			return
		}
		ctx := context.WithValue(r.Context(), sessionKey{}, s)
		if s.principal.Tenant != "" {
			// As for a tenant's key on /v1: whatever the services publish for this request is the tenant's.
			ctx = intake.WithTenant(ctx, s.principal.Tenant)
		}
		r = r.WithContext(ctx)
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !validCSRF(r, s.csrf) {
			c.fail(w, r, nil, http.StatusForbidden, "This form has expired or did not come from this console (CSRF token missing or wrong). Reload the page and try again.")
			return
		}
		if err := authz.Authorize(s.principal, need); err != nil {
			c.fail(w, r, nil, http.StatusForbidden, "Not allowed: "+err.Error()+".")
			return
		}
		h(w, r)
	}
}

// validCSRF checks the form field or the header (htmx sends it on every request) against want.
func validCSRF(r *http.Request, want string) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
		got = r.PostFormValue(csrfField)
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (c *Console) secureCookie(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(c.opts.Config.PublicURL, "https://")
}

// start opens a session for s and sets its cookie.
func (c *Console) start(w http.ResponseWriter, r *http.Request, s *session) bool {
	s.id, s.csrf = randomToken(), randomToken()
	s.expires = c.now().Add(c.opts.Config.SessionTTL.D())
	if !c.sessions.add(s, c.now()) {
		return false
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.id, Path: "/console/", Expires: s.expires,
		MaxAge: int(c.opts.Config.SessionTTL.D().Seconds()), HttpOnly: true, Secure: c.secureCookie(r), SameSite: http.SameSiteStrictMode})
	return true
}

type loginData struct {
	LoginCSRF string
	Error     string
}

// loginPage shows the sign-in form. Before any session exists the form's CSRF token is a double submit: the
// same random value in a SameSite=Strict cookie and in the form.
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, r, http.StatusOK, "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookieName, Value: tok, Path: "/console/", MaxAge: 3600,
		HttpOnly: true, Secure: c.secureCookie(r), SameSite: http.SameSiteStrictMode})
	c.render(w, r, status, "login", view{Title: "Sign in", Data: loginData{LoginCSRF: tok, Error: msg}})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	ck, err := r.Cookie(loginCookieName)
	form := r.PostFormValue(csrfField)
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(form)) != 1 {
		c.fail(w, r, nil, http.StatusForbidden, "This sign-in form has expired or did not come from this console (CSRF token missing or wrong). Open the sign-in page again.")
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	p, ok := c.opts.Lookup(key)
	if key == "" || !ok {
		c.showLogin(w, r, http.StatusUnauthorized, "Unknown API key. Use a key from auth.keys in the server's config.")
		return
	}
	if !c.start(w, r, &session{key: key, principal: p}) {
		c.fail(w, r, nil, http.StatusServiceUnavailable, "Too many open sessions; try again later.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookieName, Path: "/console/", MaxAge: -1})
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if s := sessionOf(r); s != nil {
		c.sessions.remove(s.id)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: "/console/", MaxAge: -1, HttpOnly: true,
		Secure: c.secureCookie(r), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// portal opens a session from a portal link. It answers a page that moves on to the overview itself (a
// meta refresh) rather than a redirect: a SameSite=Strict cookie set while arriving from another site is sent
// only on a navigation this site starts.
func (c *Console) portal(w http.ResponseWriter, r *http.Request) {
	claims, err := OpenPortal(c.opts.PortalSecret, r.URL.Query().Get("token"), c.now())
	if err != nil {
		c.fail(w, r, nil, http.StatusForbidden, "This portal link is not valid: "+err.Error()+". Ask for a new one.")
		return
	}
	role := authz.Admin
	if claims.ReadOnly {
		role = authz.Reader
	}
	s := &session{portal: true, principal: authz.Principal{Name: "portal:" + claims.Tenant, Role: role, Tenant: claims.Tenant}}
	if !c.start(w, r, s) {
		c.fail(w, r, nil, http.StatusServiceUnavailable, "Too many open sessions; try again later.")
		return
	}
	c.render(w, r, http.StatusOK, "portal", view{Title: "Opening the console", Data: claims})
}
