package console_test

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/api/console"
	"github.com/sluicehq/sluice/core/store"
)

func TestSignInAndOut(t *testing.T) {
	h := newHarness(t)
	c := h.client()
	if p := c.get("/console/"); p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/login" {
		t.Fatalf("signed out overview: %d %s", p.status, p.header.Get("Location"))
	}
	login := c.get("/console/login")
	if login.status != http.StatusOK || !strings.Contains(login.body, `name="key"`) || !strings.Contains(login.body, `<label for="key">`) {
		t.Fatalf("login page: %d %s", login.status, login.body)
	}
	// A sign-in without the form's token is refused: nobody can sign a browser in from another site.
	if p := c.post("/console/login", url.Values{"key": {adminKey}, "csrf": {"forged"}}); p.status != http.StatusForbidden {
		t.Fatalf("login with a wrong CSRF token: %d", p.status)
	}
	c.get("/console/login")
	if p := c.post("/console/login", url.Values{"key": {"not-a-key"}}); p.status != http.StatusUnauthorized || !strings.Contains(p.body, "Unknown API key") {
		t.Fatalf("unknown key: %d %s", p.status, p.body)
	}
	p := c.post("/console/login", url.Values{"key": {adminKey}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("sign in: %d %s", p.status, p.body)
	}
	var session *http.Cookie
	for _, ck := range (&http.Response{Header: p.header}).Cookies() {
		if ck.Name == "sluice_console" {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.MaxAge != 3600 ||
		session.Expires.IsZero() || session.Path != "/console/" {
		t.Fatalf("session cookie: %+v", session)
	}
	over := c.get("/console/")
	if over.status != http.StatusOK || !strings.Contains(over.body, "admin") || !strings.Contains(over.body, "yaml-hook") {
		t.Fatalf("overview: %d", over.status)
	}
	// Sign-out needs the CSRF token too, then the session is gone.
	if p := c.post("/console/logout", url.Values{"csrf": {"nope"}}); p.status != http.StatusForbidden {
		t.Fatalf("sign out without token: %d", p.status)
	}
	if p := c.post("/console/logout", nil); p.status != http.StatusSeeOther {
		t.Fatalf("sign out: %d", p.status)
	}
	if p := c.get("/console/"); p.status != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d", p.status)
	}
	// A POST with a forged cookie is 401, not an action.
	if p := c.post("/console/destinations/yaml-hook/disable", nil); p.status != http.StatusUnauthorized {
		t.Fatalf("action without session: %d", p.status)
	}
}

// TestPagesAndHeaders renders every page for an admin: each answers 200 with its content, the security
// headers, and no inline script or style (the CSP forbids them; a page that needs one would break).
func TestPagesAndHeaders(t *testing.T) {
	h := newHarness(t)
	id := h.publish("case.status_updated", "", `{"case": {"id": "c-1", "status": "approved"}}`)
	h.waitFor("delivery", func() bool { return h.hook.count() == 1 })
	c := h.signIn(adminKey)
	hook := h.destID("yaml-hook")
	pages := []struct{ path, want string }{
		{"/console/", "Delivered (1h)"},
		{"/console/destinations", "globex-hook"},
		{"/console/destinations/" + hook, "Recent deliveries"},
		{"/console/destinations/new", "url"},
		{"/console/destinations/new?type=webhook", "signing secrets"},
		{"/console/events", id},
		{"/console/events?topic=case.status_updated", id},
		{"/console/events?status=delivered", "#"},
		{"/console/events?destination=yaml-hook", id},
		{"/console/events/" + id, "HTTP 204"},
		{"/console/destinations/" + hook + "/replay", "Count deliveries"},
		{"/console/topics", "A case moved from one status to another."},
		{"/console/live", id},
	}
	for _, pg := range pages {
		p := c.get(pg.path)
		if p.status != http.StatusOK || !strings.Contains(p.body, pg.want) {
			t.Errorf("%s: %d, want %q in:\n%s", pg.path, p.status, pg.want, p.body)
			continue
		}
		csp := p.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") ||
			!strings.Contains(csp, "frame-ancestors 'none'") || p.header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", pg.path, p.header)
		}
		if strings.Contains(p.body, " style=") || regexp.MustCompile(`<script>|<script [^>]*>[^<]`).MatchString(p.body) {
			t.Errorf("%s: inline style or script", pg.path)
		}
		if !strings.Contains(p.body, `"includeIndicatorStyles":false`) {
			t.Errorf("%s: htmx indicator styles are not switched off", pg.path)
		}
	}
	if p := c.get("/console/static/htmx.min.js"); p.status != http.StatusOK || !strings.Contains(p.header.Get("Content-Type"), "javascript") {
		t.Fatalf("vendored htmx: %d %s", p.status, p.header.Get("Content-Type"))
	}
	if p := c.get("/console/nope"); p.status != http.StatusNotFound {
		t.Fatalf("unknown page: %d", p.status)
	}
}

func TestFrameAncestors(t *testing.T) {
	h := newHarness(t, withFrameAncestors(`["https://app.example.com"]`))
	p := h.client().get("/console/login")
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors https://app.example.com") {
		t.Fatalf("CSP: %s", csp)
	}
	if xfo := p.header.Get("X-Frame-Options"); xfo != "" {
		t.Fatalf("X-Frame-Options %q would forbid the allowed embedder", xfo)
	}
}

// TestTemplatesEscape: a topic, payload and error a publisher or receiver controls are shown as text.
func TestTemplatesEscape(t *testing.T) {
	h := newHarness(t)
	id := h.publish("order.created", "acme", `{"order": {"id": "<script>alert(1)</script>"}}`)
	c := h.signIn(adminKey)
	p := c.get("/console/events/" + id)
	if strings.Contains(p.body, "<script>alert") || !strings.Contains(p.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("payload not escaped:\n%s", p.body)
	}
}

func TestTenantScoping(t *testing.T) {
	h := newHarness(t)
	acmeEvent := h.publish("order.created", "acme", `{"order": {"id": "a-1"}}`)
	globexEvent := h.publish("order.created", "globex", `{"order": {"id": "g-1"}}`)
	plainEvent := h.publish("case.status_updated", "", `{"case": {"id": "c-1"}}`)
	h.waitFor("deliveries", func() bool { return h.acme.count() == 1 && h.globex.count() == 1 })
	globexDelivery := h.deliveryOf(globexEvent, "globex-hook")
	acme := h.signIn(acmeKey)

	for _, path := range []string{"/console/", "/console/destinations", "/console/events", "/console/live",
		"/console/events?destination=globex-hook", "/console/events?tenant=globex", "/console/events?status=delivered"} {
		p := acme.get(path)
		if p.status != http.StatusOK {
			t.Fatalf("%s: %d", path, p.status)
		}
		for _, other := range []string{"globex", globexEvent, plainEvent, "yaml-hook"} {
			if strings.Contains(p.body, other) {
				t.Errorf("%s shows %q to tenant acme", path, other)
			}
		}
	}
	if p := acme.get("/console/events"); !strings.Contains(p.body, acmeEvent) {
		t.Fatalf("acme does not see its own event")
	}
	// Another tenant's ids are not found, for reading and for acting.
	for _, path := range []string{"/console/events/" + globexEvent, "/console/events/" + plainEvent,
		"/console/destinations/" + h.destID("globex-hook"), "/console/destinations/globex-hook",
		"/console/destinations/" + h.destID("yaml-hook") + "/edit", "/console/destinations/" + h.destID("globex-hook") + "/replay"} {
		if p := acme.get(path); p.status != http.StatusNotFound {
			t.Errorf("GET %s as acme: %d, want 404", path, p.status)
		}
	}
	for _, path := range []string{"/console/destinations/" + h.destID("globex-hook") + "/disable",
		"/console/destinations/" + h.destID("globex-hook") + "/test",
		"/console/destinations/" + h.destID("globex-hook") + "/rotate-secret",
		"/console/destinations/" + h.destID("globex-hook") + "/replay",
		"/console/deliveries/" + h.did(globexDelivery.ID) + "/retry"} {
		if p := acme.post(path, nil); p.status != http.StatusNotFound {
			t.Errorf("POST %s as acme: %d, want 404", path, p.status)
		}
	}
	if v, _ := h.mgr.Get("globex-hook", ""); !v.Enabled {
		t.Fatal("acme disabled globex's destination")
	}
	// The event page lists only the deliveries to acme's destinations.
	if p := acme.get("/console/events/" + acmeEvent); p.status != http.StatusOK || !strings.Contains(p.body, "acme-hook") {
		t.Fatalf("acme's event: %d", p.status)
	}
	// A destination acme creates is acme's, whatever the form says.
	p := acme.post("/console/destinations", url.Values{"type": {"webhook"}, "name": {"acme-new"}, "topics": {"order.*"},
		"tenant": {"globex"}, "enabled": {"on"}, "cfg.url": {h.acme.URL}})
	if p.status != http.StatusCreated {
		t.Fatalf("acme create: %d %s", p.status, p.body)
	}
	if v, err := h.mgr.Get("acme-new", "acme"); err != nil || v.Tenant != "acme" {
		t.Fatalf("acme's new destination: %+v %v", v, err)
	}
}

func TestReaderSeesNoActions(t *testing.T) {
	h := newHarness(t)
	id := h.publish("case.status_updated", "", `{"case": {"id": "c-1"}}`)
	h.waitFor("delivery", func() bool { return h.hook.count() == 1 })
	d := h.deliveryOf(id, "yaml-hook")
	hook := h.destID("yaml-hook")
	r := h.signIn(readerKey)
	for _, path := range []string{"/console/", "/console/destinations", "/console/destinations/" + hook, "/console/events/" + id} {
		p := r.get(path)
		if p.status != http.StatusOK {
			t.Fatalf("%s: %d", path, p.status)
		}
		for _, action := range []string{"/disable", "/retry", "/rotate-secret", "/test", "New destination", "Replay"} {
			if strings.Contains(p.body, action) {
				t.Errorf("reader sees %q on %s", action, path)
			}
		}
		if !strings.Contains(p.body, "read-only") {
			t.Errorf("%s does not say the session is read-only", path)
		}
	}
	for _, path := range []string{"/console/destinations/new", "/console/destinations/" + hook + "/replay"} {
		if p := r.get(path); p.status != http.StatusForbidden {
			t.Errorf("GET %s as reader: %d", path, p.status)
		}
	}
	for _, path := range []string{"/console/destinations", "/console/destinations/" + hook, "/console/destinations/" + hook + "/disable",
		"/console/destinations/" + hook + "/test", "/console/destinations/" + hook + "/rotate-secret",
		"/console/destinations/" + hook + "/replay", "/console/deliveries/" + h.did(d.ID) + "/retry"} {
		if p := r.post(path, url.Values{"name": {"x"}, "type": {"webhook"}}); p.status != http.StatusForbidden {
			t.Errorf("POST %s as reader: %d, want 403", path, p.status)
		}
	}
	if v, _ := h.mgr.Get("yaml-hook", ""); !v.Enabled || h.hook.count() != 1 {
		t.Fatal("a reader's POST changed something")
	}
}

func TestCSRFRefused(t *testing.T) {
	h := newHarness(t)
	c := h.signIn(adminKey)
	hook := h.destID("yaml-hook")
	for _, token := range []string{"", "wrong"} {
		if p := c.post("/console/destinations/"+hook+"/disable", url.Values{"csrf": {token}}); p.status != http.StatusForbidden {
			t.Fatalf("disable with token %q: %d", token, p.status)
		}
	}
	// Another session's token is not this session's.
	other := h.signIn(adminKey)
	if p := c.post("/console/destinations/"+hook+"/disable", url.Values{"csrf": {other.csrf}}); p.status != http.StatusForbidden {
		t.Fatalf("disable with another session's token: %d", p.status)
	}
	if v, _ := h.mgr.Get("yaml-hook", ""); !v.Enabled {
		t.Fatal("a refused POST disabled the destination")
	}
	// The header htmx sends works as the form field does.
	req, _ := http.NewRequest(http.MethodPost, h.http.URL+"/console/destinations/"+hook+"/disable", nil)
	req.Header.Set("X-CSRF-Token", c.csrf)
	if p := c.do(req); p.status != http.StatusSeeOther {
		t.Fatalf("disable with the header: %d %s", p.status, p.body)
	}
	if v, _ := h.mgr.Get("yaml-hook", ""); v.Enabled {
		t.Fatal("the destination is still enabled")
	}
}

func TestDestinationActions(t *testing.T) {
	h := newHarness(t)
	c := h.signIn(adminKey)
	rcv := newReceiver(t)

	// A form with a bad value comes back with the field marked and what the user typed kept.
	p := c.post("/console/destinations", url.Values{"type": {"webhook"}, "name": {"bad"}, "topics": {"case.*"},
		"enabled": {"on"}, "cfg.url": {"ftp://nowhere"}})
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "ftp://nowhere") || !strings.Contains(p.body, `class="field invalid"`) {
		t.Fatalf("invalid form: %d\n%s", p.status, p.body)
	}
	p = c.post("/console/destinations", url.Values{"type": {"webhook"}, "name": {"partner"}, "topics": {"case.*"},
		"enabled": {"on"}, "cfg.url": {rcv.URL}, "cfg.headers": {"X-Team: kyc"}})
	if p.status != http.StatusCreated || !strings.Contains(p.body, "shown once") {
		t.Fatalf("create: %d\n%s", p.status, p.body)
	}
	secret := regexp.MustCompile(`value="(whsec_[^"]+)"`).FindStringSubmatch(p.body)
	if secret == nil {
		t.Fatalf("the generated secret is not shown:\n%s", p.body)
	}
	v, err := h.mgr.Get("partner", "")
	if err != nil {
		t.Fatal(err)
	}
	// Elsewhere the secret is masked.
	show := c.get("/console/destinations/" + v.ID)
	if strings.Contains(show.body, secret[1]) || !strings.Contains(show.body, "whsec_…") {
		t.Fatalf("destination page shows the secret unmasked:\n%s", show.body)
	}
	edit := c.get("/console/destinations/" + v.ID + "/edit")
	if edit.status != http.StatusOK || strings.Contains(edit.body, secret[1]) || !strings.Contains(edit.body, "X-Team") {
		t.Fatalf("edit form: %d\n%s", edit.status, edit.body)
	}
	// Saving the form as it is keeps the stored (masked) secret; a changed field changes.
	form := formValues(edit.body)
	form.Set("topics", "case.*, order.*")
	if p := c.post("/console/destinations/"+v.ID, form); p.status != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", p.status, p.body)
	}
	saved, _ := h.mgr.Get(v.ID, "")
	if topics, _ := saved.Spec["topics"].([]any); len(topics) != 2 {
		t.Fatalf("topics after edit: %v", saved.Spec["topics"])
	}

	// Test send: the example event goes out and its attempt is shown.
	p = c.post("/console/destinations/"+v.ID+"/test", nil)
	if p.status != http.StatusOK || !strings.Contains(p.body, "HTTP 204") || rcv.count() != 1 {
		t.Fatalf("test send: %d (receiver got %d)\n%s", p.status, rcv.count(), p.body)
	}

	// Rotate: the new secret is shown once.
	p = c.post("/console/destinations/"+v.ID+"/rotate-secret", nil)
	rotated := regexp.MustCompile(`value="(whsec_[^"]+)"`).FindStringSubmatch(p.body)
	if p.status != http.StatusOK || rotated == nil || rotated[1] == secret[1] {
		t.Fatalf("rotate: %d\n%s", p.status, p.body)
	}

	// Disable and enable.
	if p := c.post("/console/destinations/"+v.ID+"/disable", nil); p.status != http.StatusSeeOther {
		t.Fatalf("disable: %d", p.status)
	}
	if p := c.get("/console/destinations/" + v.ID + "?done=disabled"); !strings.Contains(p.body, "disabled in the console by admin") {
		t.Fatalf("disabled reason not shown:\n%s", p.body)
	}
	if p := c.post("/console/destinations/"+v.ID+"/enable", nil); p.status != http.StatusSeeOther {
		t.Fatalf("enable: %d", p.status)
	}
	if v, _ := h.mgr.Get(v.ID, ""); !v.Enabled {
		t.Fatal("not enabled again")
	}
	// A YAML destination has no edit form to save.
	if p := c.post("/console/destinations/yaml-hook", url.Values{"topics": {"x.*"}}); p.status != http.StatusConflict {
		t.Fatalf("edit a YAML destination: %d", p.status)
	}
}

func TestRetryAndReplay(t *testing.T) {
	h := newHarness(t)
	h.hook.setStatus(http.StatusBadRequest) // permanent: the delivery fails at once
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, h.publish("case.status_updated", "", `{"case": {"id": "c"}}`))
	}
	h.waitFor("three failed deliveries", func() bool {
		for _, id := range ids {
			if h.deliveryOf(id, "yaml-hook").Status != store.Failed {
				return false
			}
		}
		return true
	})
	c := h.signIn(adminKey)
	ev := c.get("/console/events/" + ids[0])
	if !strings.Contains(ev.body, "HTTP 400") || !strings.Contains(ev.body, "Retry") {
		t.Fatalf("failed attempt not shown:\n%s", ev.body)
	}
	h.hook.setStatus(http.StatusNoContent)
	d := h.deliveryOf(ids[0], "yaml-hook")
	p := c.post("/console/deliveries/"+h.did(d.ID)+"/retry", nil)
	if p.status != http.StatusSeeOther || !strings.Contains(p.header.Get("Location"), "/console/events/"+ids[0]) {
		t.Fatalf("retry: %d %s", p.status, p.header.Get("Location"))
	}
	h.waitFor("the retried delivery", func() bool { return h.deliveryOf(ids[0], "yaml-hook").Status == store.Delivered })

	hook := h.destID("yaml-hook")
	since := time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04")
	p = c.get("/console/destinations/" + hook + "/replay?count=1&status=failed&since=" + url.QueryEscape(since))
	if p.status != http.StatusOK || !strings.Contains(p.body, "<strong>2</strong> deliveries will be requeued") {
		t.Fatalf("replay count: %d\n%s", p.status, p.body)
	}
	// An empty range counts nothing and offers no button.
	p = c.get("/console/destinations/" + hook + "/replay?count=1&status=failed&until=2001-01-01T00:00")
	if !strings.Contains(p.body, "<strong>0</strong>") || strings.Contains(p.body, `id="confirm"`) {
		t.Fatalf("empty replay:\n%s", p.body)
	}
	// The confirmation as htmx sends it (token in the header): the form's range still applies.
	req, _ := http.NewRequest(http.MethodPost, h.http.URL+"/console/destinations/"+hook+"/replay",
		strings.NewReader(url.Values{"status": {"failed"}, "until": {"2001-01-01T00:00"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-CSRF-Token", c.csrf)
	if p := c.do(req); p.status != http.StatusOK || !strings.Contains(p.body, "Requeued 0 deliveries") {
		t.Fatalf("replay of an empty range with the header token: %d\n%s", p.status, p.body)
	}
	p = c.post("/console/destinations/"+hook+"/replay", url.Values{"status": {"failed"}, "since": {since}})
	if p.status != http.StatusOK || !strings.Contains(p.body, "Requeued 2 deliveries") {
		t.Fatalf("replay: %d\n%s", p.status, p.body)
	}
	h.waitFor("replayed deliveries", func() bool {
		return h.deliveryOf(ids[1], "yaml-hook").Status == store.Delivered && h.deliveryOf(ids[2], "yaml-hook").Status == store.Delivered
	})
}

func TestPortalLinks(t *testing.T) {
	h := newHarness(t)
	globexEvent := h.publish("order.created", "globex", `{"order": {"id": "g-1"}}`)
	acmeEvent := h.publish("order.created", "acme", `{"order": {"id": "a-1"}}`)

	for _, key := range []string{acmeKey, readerKey} {
		if st, _ := h.apiPost("/v1/portal-links", key, `{"tenant": "acme"}`); st != http.StatusForbidden {
			t.Fatalf("portal link with key %s: %d", key, st)
		}
	}
	if st, _ := h.apiPost("/v1/portal-links", adminKey, `{}`); st != http.StatusBadRequest {
		t.Fatalf("portal link without tenant: %d", st)
	}
	if st, _ := h.apiPost("/v1/portal-links", adminKey, `{"tenant": "acme", "ttl": "9999h"}`); st != http.StatusBadRequest {
		t.Fatalf("portal link with a too long ttl: %d", st)
	}
	st, body := h.apiPost("/v1/portal-links", adminKey, `{"tenant": "acme", "ttl": "10m", "read_only": true}`)
	link, _ := body["url"].(string)
	exp, _ := body["expires_at"].(string)
	if st != http.StatusCreated || !strings.HasPrefix(link, h.http.URL+"/console/portal?token=") || exp == "" {
		t.Fatalf("portal link: %d %v", st, body)
	}
	if at, err := time.Parse(time.RFC3339, exp); err != nil || at.Before(time.Now().Add(9*time.Minute)) || at.After(time.Now().Add(11*time.Minute)) {
		t.Fatalf("expires_at %q", exp)
	}
	c := h.client()
	u, _ := url.Parse(link)
	p := c.get(u.RequestURI())
	if p.status != http.StatusOK || !strings.Contains(p.body, `http-equiv="refresh"`) {
		t.Fatalf("open portal link: %d\n%s", p.status, p.body)
	}
	p = c.get("/console/events")
	if !strings.Contains(p.body, acmeEvent) || strings.Contains(p.body, globexEvent) || !strings.Contains(p.body, "tenant acme") {
		t.Fatalf("portal session events:\n%s", p.body)
	}
	if p := c.get("/console/events/" + globexEvent); p.status != http.StatusNotFound {
		t.Fatalf("portal session reads globex's event: %d", p.status)
	}
	if p := c.post("/console/destinations/acme-hook/disable", nil); p.status != http.StatusForbidden {
		t.Fatalf("read-only portal disables: %d", p.status)
	}

	// A link that is tampered with, signed with another key, or expired opens nothing.
	token := u.Query().Get("token")
	bad := []string{
		token[:len(token)-2] + "xx",
		console.SignPortal([]byte("another server's key"), console.PortalClaims{Tenant: "acme", Expires: time.Now().Add(time.Hour)}),
		console.SignPortal(portalSecret, console.PortalClaims{Tenant: "acme", Expires: time.Now().Add(-time.Second)}),
		"garbage",
	}
	for _, tok := range bad {
		fresh := h.client()
		if p := fresh.get("/console/portal?token=" + url.QueryEscape(tok)); p.status != http.StatusForbidden {
			t.Errorf("bad token %q: %d", tok, p.status)
		}
		if p := fresh.get("/console/"); p.status != http.StatusSeeOther {
			t.Errorf("bad token %q opened a session", tok)
		}
	}
	// A claim changed to another tenant breaks the signature.
	_, sig, _ := strings.Cut(token, ".")
	forged := console.SignPortal([]byte("x"), console.PortalClaims{Tenant: "globex", Expires: time.Now().Add(time.Hour)})
	fp, _, _ := strings.Cut(forged, ".")
	if p := h.client().get("/console/portal?token=" + url.QueryEscape(fp+"."+sig)); p.status != http.StatusForbidden {
		t.Fatalf("a link re-aimed at globex: %d", p.status)
	}

	// An acting portal link (not read-only) may act within its tenant only.
	_, body = h.apiPost("/v1/portal-links", adminKey, `{"tenant": "acme"}`)
	u, _ = url.Parse(body["url"].(string))
	act := h.client()
	act.get(u.RequestURI())
	act.get("/console/")
	if p := act.post("/console/destinations/"+h.destID("acme-hook")+"/disable", nil); p.status != http.StatusSeeOther {
		t.Fatalf("portal admin disables its own destination: %d %s", p.status, p.body)
	}
	if p := act.post("/console/destinations/"+h.destID("globex-hook")+"/disable", nil); p.status != http.StatusNotFound {
		t.Fatalf("portal admin disables globex's destination: %d", p.status)
	}
}

// formValues reads the inputs, textareas and selected options of a rendered form, as a browser submits it.
func formValues(body string) url.Values {
	v := url.Values{}
	for _, m := range regexp.MustCompile(`<input [^>]*name="([^"]+)"[^>]*>`).FindAllStringSubmatch(body, -1) {
		tag := m[0]
		if strings.Contains(tag, `type="checkbox"`) && !strings.Contains(tag, "checked") {
			continue
		}
		val := ""
		if vm := regexp.MustCompile(`value="([^"]*)"`).FindStringSubmatch(tag); vm != nil {
			val = htmlUnescape(vm[1])
		} else if strings.Contains(tag, `type="checkbox"`) {
			val = "on"
		}
		v.Add(m[1], val)
	}
	for _, m := range regexp.MustCompile(`(?s)<textarea [^>]*name="([^"]+)"[^>]*>(.*?)</textarea>`).FindAllStringSubmatch(body, -1) {
		v.Add(m[1], htmlUnescape(m[2]))
	}
	for _, m := range regexp.MustCompile(`(?s)<select [^>]*name="([^"]+)"[^>]*>(.*?)</select>`).FindAllStringSubmatch(body, -1) {
		if sel := regexp.MustCompile(`<option value="([^"]*)" selected>`).FindStringSubmatch(m[2]); sel != nil {
			v.Add(m[1], htmlUnescape(sel[1]))
		} else {
			v.Add(m[1], "")
		}
	}
	return v
}

func htmlUnescape(s string) string { return html.UnescapeString(s) }

// TestLiveStream reads the live tail's event stream as the SSE extension does: a tenant's stream carries its
// tenant's new events only, and CloseStreams (server shutdown) ends it.
func TestLiveStream(t *testing.T) {
	h := newHarness(t)
	c := h.signIn(acmeKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/console/live/stream", nil)
	res, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	globex := h.publish("order.created", "globex", `{"order": {"id": "g-1"}}`)
	acme := h.publish("order.created", "acme", `{"order": {"id": "a-1"}}`)
	sc := bufio.NewScanner(res.Body)
	var event string
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, globex) {
			t.Fatalf("acme's stream carried globex's event: %s", line)
		}
		if strings.HasPrefix(line, "event: ") {
			event = strings.TrimPrefix(line, "event: ")
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, acme) {
			break
		}
	}
	if event != "event" {
		t.Fatalf("SSE event name %q (the page swaps on \"event\")", event)
	}
	h.srv.CloseStreams()
	for sc.Scan() {
		if strings.Contains(sc.Text(), globex) {
			t.Fatalf("acme's stream carried globex's event")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("the stream did not end cleanly after CloseStreams: %v", err)
	}
	// A new stream after shutdown began answers 204: the browser does not reconnect.
	if p := c.get("/console/live/stream"); p.status != http.StatusNoContent {
		t.Fatalf("stream after close: %d", p.status)
	}
}

// TestOverviewShowsOpenBreaker: a destination whose receiver keeps failing shows "breaker open" on the overview
// once its lane's breaker opens; the healthy destination beside it does not.
func TestOverviewShowsOpenBreaker(t *testing.T) {
	h := newHarness(t)
	down := newReceiver(t)
	down.setStatus(http.StatusServiceUnavailable)
	v, err := h.mgr.Create(context.Background(), []byte(fmt.Sprintf(`{"name": "flaky", "type": "webhook", "topics": ["order.*"],
		"breaker": {"window": "1m", "min_attempts": 3, "failure_ratio": 0.5, "probe_interval": "1h", "max_probe_interval": "1h"},
		"config": {"url": %q, "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}`, down.URL)), "")
	if err != nil {
		t.Fatal(err)
	}
	c := h.signIn(adminKey)
	card := func(body, id string) string {
		start := strings.Index(body, `id="dest-`+id+`"`)
		if start < 0 {
			t.Fatalf("the overview has no card for %s", id)
		}
		end := strings.Index(body[start:], "</article>")
		return body[start : start+end]
	}
	// The breaker judges only once it has watched a whole window (1m) of failures: three failed attempts now,
	// three 50s later (the dispatcher's clock moved ahead), and 15s after that the next failure opens it. The
	// clock, not the machine's speed, decides when the window is full.
	publishThree := func() (ids []string) {
		for range 3 {
			ids = append(ids, h.publish("order.created", "", `{"order": {"id": "o"}}`))
		}
		return ids
	}
	failThree := func(phase string) {
		ids := publishThree()
		h.waitFor("the "+phase+" failed attempts", func() bool {
			for _, id := range ids {
				if h.deliveryOf(id, "flaky").Attempts == 0 {
					return false
				}
			}
			return true
		})
	}
	failThree("first")
	if strings.Contains(card(c.get("/console/").body, v.ID), "breaker open") {
		t.Fatal("the breaker opened before it had watched a whole window")
	}
	h.skew.Add(int64(50 * time.Second))
	failThree("second")
	if strings.Contains(card(c.get("/console/").body, v.ID), "breaker open") {
		t.Fatal("the breaker opened before it had watched a whole window")
	}
	h.skew.Add(int64(15 * time.Second))
	publishThree()
	h.waitFor("the overview to show the breaker open", func() bool {
		return strings.Contains(card(c.get("/console/").body, v.ID), "breaker open")
	})
	if strings.Contains(card(c.get("/console/").body, h.destID("yaml-hook")), "breaker open") {
		t.Fatal("the healthy destination shows an open breaker")
	}
}
