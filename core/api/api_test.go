package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/api"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

var approved = map[string]any{"case": map[string]any{"id": "c-1", "status": "approved"}}

func caseEvent(extra map[string]any) map[string]any {
	ev := map[string]any{"topic": "case.status_updated", "data": approved}
	for k, v := range extra {
		ev[k] = v
	}
	return ev
}

// waitStatus waits until a delivery (by id) reaches status.
func (h *harness) waitStatus(id string, status store.Status) map[string]any {
	h.t.Helper()
	var d map[string]any
	waitFor(h.t, "delivery "+id+" to be "+string(status), func() bool {
		d = h.delivery(id)
		return d["status"] == string(status)
	})
	return d
}

// TestAuthorization: keys and roles are checked before anything else, and the open routes need no key.
func TestAuthorization(t *testing.T) {
	h := newHarness(t)
	if r := h.must(http.StatusUnauthorized, "GET", "/v1/events", "", nil); r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	h.must(http.StatusUnauthorized, "GET", "/v1/destinations", "wrong-key", nil)
	h.must(http.StatusUnauthorized, "POST", "/v1/destinations", "", "{")
	// A reader creating a destination is refused before its (invalid) body is looked at.
	for _, body := range []string{"{", `{"name": 1}`, ""} {
		if code, _ := h.must(http.StatusForbidden, "POST", "/v1/destinations", readerKey, body).err(t); code != "forbidden" {
			t.Fatalf("reader create: code %q", code)
		}
	}
	h.must(http.StatusForbidden, "POST", "/v1/destinations", publisherKey, "{")
	h.must(http.StatusForbidden, "PATCH", "/v1/destinations/"+yamlHookName, readerKey, "{")
	h.must(http.StatusForbidden, "POST", "/v1/destinations/"+yamlHookName+"/replay", readerKey, `{"status": "nope"}`)
	h.must(http.StatusForbidden, "POST", "/v1/deliveries/1/retry", publisherKey, nil)
	h.must(http.StatusForbidden, "POST", "/v1/events", readerKey, caseEvent(nil))
	// A publisher also reads.
	id := h.publish(publisherKey, caseEvent(nil))
	h.must(http.StatusOK, "GET", "/v1/events/"+id, publisherKey, nil)
	h.must(http.StatusOK, "GET", "/v1/deliveries", publisherKey, nil)
	h.must(http.StatusOK, "GET", "/v1/topics", readerKey, nil)

	// Unknown routes and wrong methods answer JSON errors.
	if code, _ := h.must(http.StatusNotFound, "GET", "/v1/nope", readerKey, nil).err(t); code != "not_found" {
		t.Fatalf("unknown route: %q", code)
	}
	r := h.must(http.StatusMethodNotAllowed, "DELETE", "/v1/events", adminKey, nil)
	if code, _ := r.err(t); code != "method_not_allowed" || !strings.Contains(r.header.Get("Allow"), "GET") || !strings.Contains(r.header.Get("Allow"), "POST") {
		t.Fatalf("405: code %q, Allow %q", code, r.header.Get("Allow"))
	}
	h.must(http.StatusMethodNotAllowed, "PUT", "/v1/destinations/x", adminKey, "{}")
	h.must(http.StatusMethodNotAllowed, "GET", "/v1/destinations/x/replay", adminKey, nil)

	// Open routes.
	doc := h.must(http.StatusOK, "GET", "/v1/openapi.json", "", nil)
	if !bytes.Equal(doc.body, api.OpenAPI()) || !strings.HasPrefix(doc.header.Get("Content-Type"), "application/json") {
		t.Fatal("GET /v1/openapi.json does not serve the embedded document")
	}
	h.must(http.StatusOK, "GET", "/healthz", "", nil)
	h.must(http.StatusOK, "GET", "/readyz", "", nil)
	h.must(http.StatusNotFound, "GET", "/metrics", "", nil) // no Metrics handler given
}

// TestMetricsHandler: GET /metrics serves the handler given in Options, without a key.
func TestMetricsHandler(t *testing.T) {
	srv := api.New(api.Options{Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("sluice_up 1\n"))
	})})
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "sluice_up 1\n" {
		t.Fatalf("/metrics: %d %q", rec.Code, rec.Body.String())
	}
}

// TestTenantIsolation: a tenant key sees and changes only its tenant's destinations, events and deliveries;
// everything else answers 404 on every route, and lists never show it.
func TestTenantIsolation(t *testing.T) {
	h := newHarness(t)
	ra, rg := newReceiver(t), newReceiver(t)
	acme := h.createHook(acmeKey, "acme-hook", ra.URL, nil)
	globex := h.createHook(globexKey, "globex-hook", rg.URL, nil)
	if acme["tenant"] != "acme" || globex["tenant"] != "globex" {
		t.Fatalf("a tenant key's destination belongs to its tenant: %v / %v", acme["tenant"], globex["tenant"])
	}
	acmeID, globexID := acme["id"].(string), globex["id"].(string)

	// A tenant key cannot create a destination for another tenant.
	r := h.do("POST", "/v1/destinations", acmeKey, map[string]any{"name": "sneaky", "type": "webhook", "tenant": "globex",
		"topics": []string{"*"}, "config": map[string]any{"url": ra.URL}})
	if r.status != http.StatusForbidden {
		t.Fatalf("acme creating a globex destination: %d %s", r.status, r.body)
	}
	// Nor publish for another tenant.
	h.must(http.StatusForbidden, "POST", "/v1/events", acmeKey, caseEvent(map[string]any{"tenant": "globex"}))

	acmeEv := h.publish(acmeKey, caseEvent(nil))
	globexEv := h.publish(globexKey, caseEvent(nil))
	waitFor(t, "both tenants' deliveries", func() bool { return len(ra.got(acmeEv)) == 1 && len(rg.got(globexEv)) == 1 })
	if len(ra.got(globexEv)) != 0 || len(rg.got(acmeEv)) != 0 {
		t.Fatal("a tenant's destination received another tenant's event")
	}
	waitFor(t, "the YAML (tenant-less) destination to get both", func() bool {
		return len(h.yaml.got(acmeEv)) == 1 && len(h.yaml.got(globexEv)) == 1
	})
	globexDelivery := h.deliveryOf(globexEv, "globex-hook")["id"].(string)
	acmeYAMLDelivery := h.deliveryOf(acmeEv, yamlHookName)["id"].(string)

	// Every route answers 404 for what is not acme's: another tenant's destination (by id and by name) and a
	// tenant-less YAML destination.
	for _, ref := range []string{globexID, "globex-hook", yamlHookName} {
		base := "/v1/destinations/" + ref
		for _, c := range []struct{ method, path, body string }{
			{"GET", base, ""},
			{"PATCH", base, `{"topics": ["case.*"]}`},
			{"DELETE", base, ""},
			{"POST", base + "/enable", ""},
			{"POST", base + "/disable", `{"reason": "x"}`},
			{"POST", base + "/test", ""},
			{"POST", base + "/rotate-secret", ""},
			{"POST", base + "/replay", `{"status": "delivered"}`},
		} {
			for _, key := range []string{acmeKey, acmeReaderKey} {
				r := h.do(c.method, c.path, key, nilIfEmpty(c.body))
				want := http.StatusNotFound
				if key == acmeReaderKey && c.method != "GET" {
					want = http.StatusForbidden // the role is checked first, and says nothing about the id
				}
				if r.status != want {
					t.Fatalf("%s %s with %s: %d, want %d: %s", c.method, c.path, key, r.status, want, r.body)
				}
			}
		}
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/events/" + globexEv},
		{"GET", "/v1/deliveries/" + globexDelivery},
		{"POST", "/v1/deliveries/" + globexDelivery + "/retry"},
		{"GET", "/v1/deliveries/" + acmeYAMLDelivery}, // acme's event, but a destination acme does not own
		{"POST", "/v1/deliveries/" + acmeYAMLDelivery + "/retry"},
	} {
		if r := h.do(c.method, c.path, acmeKey, nil); r.status != http.StatusNotFound {
			t.Fatalf("%s %s with the acme key: %d, want 404: %s", c.method, c.path, r.status, r.body)
		}
	}

	// Lists show acme's data only.
	for _, d := range h.must(http.StatusOK, "GET", "/v1/destinations", acmeKey, nil).json(t)["data"].([]any) {
		if d.(map[string]any)["id"] != acmeID {
			t.Fatalf("acme lists a destination not its own: %v", d)
		}
	}
	for _, q := range []string{"", "?tenant=globex", "?tenant=", "?topic=case.status_updated"} {
		for _, e := range h.must(http.StatusOK, "GET", "/v1/events"+q, acmeKey, nil).json(t)["data"].([]any) {
			if e.(map[string]any)["tenant"] != "acme" {
				t.Fatalf("acme lists (%s) an event of another tenant: %v", q, e)
			}
		}
	}
	if n := len(h.must(http.StatusOK, "GET", "/v1/events?tenant=globex", acmeKey, nil).json(t)["data"].([]any)); n != 0 {
		t.Fatalf("acme sees %d globex events", n)
	}
	for _, q := range []string{"", "?destination=globex-hook", "?destination=" + globexID, "?destination=" + yamlHookName,
		"?event=" + globexEv, "?event=" + acmeEv, "?status=delivered"} {
		for _, d := range h.must(http.StatusOK, "GET", "/v1/deliveries"+q, acmeKey, nil).json(t)["data"].([]any) {
			if dest := d.(map[string]any)["destination"].(map[string]any); dest["id"] != acmeID || dest["name"] != "acme-hook" {
				t.Fatalf("acme lists (%s) a delivery to %v", q, dest)
			}
		}
	}
	if n := len(h.must(http.StatusOK, "GET", "/v1/deliveries", acmeKey, nil).json(t)["data"].([]any)); n != 1 {
		t.Fatalf("acme lists %d deliveries, want its one", n)
	}
	// acme's own event shows only the delivery to acme's destination.
	ev := h.must(http.StatusOK, "GET", "/v1/events/"+acmeEv, acmeKey, nil).json(t)
	if ds := ev["deliveries"].([]any); len(ds) != 1 || ds[0].(map[string]any)["destination"].(map[string]any)["name"] != "acme-hook" {
		t.Fatalf("acme's event shows deliveries %v", ds)
	}
	// The admin key sees both tenants.
	if n := len(h.must(http.StatusOK, "GET", "/v1/events/"+acmeEv, adminKey, nil).json(t)["deliveries"].([]any)); n != 2 {
		t.Fatalf("admin sees %d deliveries of acme's event, want 2", n)
	}

	// Nothing of globex's was changed by acme's attempts.
	g := h.must(http.StatusOK, "GET", "/v1/destinations/"+globexID, globexKey, nil).json(t)
	if g["enabled"] != true || g["updated_at"] != globex["updated_at"] {
		t.Fatalf("globex's destination changed: %v", g)
	}
	if len(rg.got("")) != 1 {
		t.Fatalf("globex's receiver got %d requests, want 1 (no test, retry or replay through acme)", len(rg.got("")))
	}
	// And acme can work with its own.
	h.must(http.StatusOK, "POST", "/v1/destinations/"+acmeID+"/disable", acmeKey, nil)
	h.must(http.StatusOK, "POST", "/v1/destinations/acme-hook/enable", acmeKey, nil)
	h.must(http.StatusNoContent, "DELETE", "/v1/destinations/"+acmeID, acmeKey, nil)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TestYAMLDestinationReadOnly: a YAML destination shows in the API but cannot be changed there; the 409
// names the config file.
func TestYAMLDestinationReadOnly(t *testing.T) {
	h := newHarness(t)
	d := h.must(http.StatusOK, "GET", "/v1/destinations/"+yamlHookName, readerKey, nil).json(t)
	if d["source"] != "config" || d["id"] != yamlHookName || d["enabled"] != true {
		t.Fatalf("YAML destination: %v", d)
	}
	for _, c := range []struct{ method, path, body string }{
		{"PATCH", "/v1/destinations/" + yamlHookName, `{"topics": ["order.*"]}`},
		{"DELETE", "/v1/destinations/" + yamlHookName, ""},
		{"POST", "/v1/destinations/" + yamlHookName + "/rotate-secret", ""},
	} {
		r := h.must(http.StatusConflict, c.method, c.path, adminKey, nilIfEmpty(c.body))
		e := r.json(t)["error"].(map[string]any)
		if !strings.Contains(e["message"].(string), testConfigFile) {
			t.Fatalf("%s %s: the 409 does not name the file: %s", c.method, c.path, r.body)
		}
	}
	// A name taken by the YAML destination cannot be reused over the API.
	h.must(http.StatusConflict, "POST", "/v1/destinations", adminKey, map[string]any{"name": yamlHookName, "type": "webhook",
		"topics": []string{"*"}, "config": map[string]any{"url": h.yaml.URL}})
	// Disabling over the API is operational state, allowed for YAML destinations too.
	h.must(http.StatusOK, "POST", "/v1/destinations/"+yamlHookName+"/disable", adminKey, `{"reason": "maintenance"}`)
	if d := h.must(http.StatusOK, "GET", "/v1/destinations/"+yamlHookName, adminKey, nil).json(t); d["enabled"] != false || d["disabled_reason"] != "maintenance" {
		t.Fatalf("after disable: %v", d)
	}
	h.must(http.StatusOK, "POST", "/v1/destinations/"+yamlHookName+"/enable", adminKey, nil)
}

// TestCreateValidation: invalid destinations answer 422 naming the field; a type change too.
func TestCreateValidation(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	hook := func(extra map[string]any) map[string]any {
		spec := map[string]any{"name": "v", "type": "webhook", "topics": []string{"*"}, "config": map[string]any{"url": rcv.URL}}
		for k, v := range extra {
			if v == nil {
				delete(spec, k)
			} else {
				spec[k] = v
			}
		}
		return spec
	}
	for _, c := range []struct {
		name  string
		body  any
		field string // the error's field must start with this
	}{
		{"missing config.url", hook(map[string]any{"config": map[string]any{}}), "config.url"},
		{"bad filter operator", hook(map[string]any{"filter": map[string]any{"data": map[string]any{"x": map[string]any{"$near": 1}}}}), "filter"},
		{"unknown key", hook(map[string]any{"colour": "blue"}), "colour"},
		{"unknown config key", hook(map[string]any{"config": map[string]any{"url": rcv.URL, "colour": "blue"}}), "config.colour"},
		{"unknown type", hook(map[string]any{"type": "carrier-pigeon"}), "type"},
		{"missing name", hook(map[string]any{"name": nil}), "name"},
		{"bad secret", hook(map[string]any{"config": map[string]any{"url": rcv.URL, "secrets": []string{"hunter2"}}}), "config.secrets"},
	} {
		r := h.do("POST", "/v1/destinations", adminKey, c.body)
		if r.status != http.StatusUnprocessableEntity {
			t.Fatalf("%s: %d, want 422: %s", c.name, r.status, r.body)
		}
		if _, field := r.err(t); !strings.HasPrefix(strings.TrimPrefix(field, "destination."), c.field) {
			t.Fatalf("%s: field %q, want %q…: %s", c.name, field, c.field, r.body)
		}
	}
	h.must(http.StatusBadRequest, "POST", "/v1/destinations", adminKey, "{not json")
	if n := len(h.must(http.StatusOK, "GET", "/v1/destinations", adminKey, nil).json(t)["data"].([]any)); n != 1 {
		t.Fatalf("%d destinations after refused creates, want only the YAML one", n)
	}

	d := h.createHook(adminKey, "v", rcv.URL, nil)
	r := h.must(http.StatusUnprocessableEntity, "PATCH", "/v1/destinations/"+d["id"].(string), adminKey, `{"type": "sqs"}`)
	if _, field := r.err(t); field != "type" {
		t.Fatalf("type change: field %q", field)
	}
	r = h.must(http.StatusUnprocessableEntity, "PATCH", "/v1/destinations/v", adminKey, `{"config": {"url": null}}`)
	if _, field := r.err(t); !strings.HasPrefix(strings.TrimPrefix(field, "destination."), "config.url") {
		t.Fatalf("patch removing config.url: field %q", field)
	}
	h.must(http.StatusNotFound, "PATCH", "/v1/destinations/nope", adminKey, `{}`)
}

// TestSecretsMasked: secrets show masked in every answer except the create answer of a generated one; a
// PATCH sending the masked value back keeps the secret; the store holds it sealed.
func TestSecretsMasked(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	masked := sinks.Mask(secretA)
	if !strings.HasPrefix(masked, "whsec_…") || !strings.HasSuffix(masked, secretA[len(secretA)-4:]) {
		t.Fatalf("mask: %q", masked)
	}
	noPlain := func(what string, r resp) {
		t.Helper()
		if bytes.Contains(r.body, []byte(secretA)) || bytes.Contains(r.body, []byte(strings.TrimPrefix(secretA, "whsec_"))) {
			t.Fatalf("%s shows the secret in full: %s", what, r.body)
		}
	}
	secretsOf := func(d map[string]any) []any { return d["config"].(map[string]any)["secrets"].([]any) }

	r := h.must(http.StatusCreated, "POST", "/v1/destinations", adminKey, map[string]any{"name": "m", "type": "webhook",
		"topics": []string{"case.*"}, "config": map[string]any{"url": rcv.URL, "secrets": []string{secretA}}})
	noPlain("create", r)
	d := r.json(t)
	id := d["id"].(string)
	if s := secretsOf(d); len(s) != 1 || s[0] != masked {
		t.Fatalf("create answer secrets: %v", s)
	}
	noPlain("get", h.must(http.StatusOK, "GET", "/v1/destinations/"+id, readerKey, nil))
	noPlain("list", h.must(http.StatusOK, "GET", "/v1/destinations", readerKey, nil))
	noPlain("disable", h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/disable", adminKey, nil))
	noPlain("enable", h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/enable", adminKey, nil))
	if yd := h.must(http.StatusOK, "GET", "/v1/destinations/"+yamlHookName, readerKey, nil); bytes.Contains(yd.body, []byte(secretA)) {
		t.Fatalf("the YAML destination shows its secret: %s", yd.body)
	}

	// PATCH with the masked value (as a client that GETs, edits, PUTs back would send it) keeps the secret.
	r = h.must(http.StatusOK, "PATCH", "/v1/destinations/"+id, adminKey, map[string]any{"topics": []string{"case.status_updated"},
		"config": map[string]any{"url": rcv.URL, "secrets": []string{masked}}})
	noPlain("patch", r)
	if s := secretsOf(r.json(t)); len(s) != 1 || s[0] != masked {
		t.Fatalf("patch answer secrets: %v", s)
	}
	ev := h.publish(adminKey, caseEvent(nil))
	waitFor(t, "the delivery after the patch", func() bool { return len(rcv.got(ev)) == 1 })
	q := rcv.got(ev)[0]
	if err := webhook.VerifyStandard([]string{secretA}, q.header, q.body, 0); err != nil {
		t.Fatalf("after a PATCH with the masked secret, the delivery does not verify with the original: %v", err)
	}

	// The store holds the spec sealed.
	recs, err := h.st.Destinations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if bytes.Contains(rec.Spec, []byte(secretA)) || bytes.Contains(rec.Spec, []byte(strings.TrimPrefix(secretA, "whsec_"))) {
			t.Fatalf("the stored spec of %s holds the plaintext secret: %s", rec.Name, rec.Spec)
		}
	}

	// A generated secret shows in full once, in the create answer.
	g := h.createHook(adminKey, "gen", rcv.URL, nil)
	gs := secretsOf(g)
	full, _ := gs[0].(string)
	if len(gs) != 1 || !strings.HasPrefix(full, "whsec_") || strings.Contains(full, "…") {
		t.Fatalf("create answer of a generated secret: %v", gs)
	}
	again := h.must(http.StatusOK, "GET", "/v1/destinations/gen", adminKey, nil)
	if bytes.Contains(again.body, []byte(strings.TrimPrefix(full, "whsec_"))) || secretsOf(again.json(t))[0] != sinks.Mask(full) {
		t.Fatalf("the generated secret shows again: %s", again.body)
	}
}

// TestRotateSecret: after a rotation, deliveries carry two v1 signatures, one made with the old secret and
// one with the new; the answer shows the new secret in full once.
func TestRotateSecret(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	d := h.createHook(adminKey, "rot", rcv.URL, map[string]any{"config": map[string]any{"url": rcv.URL, "secrets": []string{secretA}}})
	id := d["id"].(string)

	h.must(http.StatusBadRequest, "POST", "/v1/destinations/"+id+"/rotate-secret", adminKey, `{"secret": 5}`)
	r := h.must(http.StatusUnprocessableEntity, "POST", "/v1/destinations/"+id+"/rotate-secret", adminKey, `{"secret": "not-a-secret"}`)
	if _, field := r.err(t); field != "secret" {
		t.Fatalf("bad secret: field %q", field)
	}
	r = h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/rotate-secret", adminKey, map[string]any{"secret": secretB})
	out := r.json(t)
	dest := out["destination"].(map[string]any)
	if out["secret"] != secretB || dest["id"] != id || bytes.Contains(r.body, []byte(secretA)) {
		t.Fatalf("rotate answer: %s", r.body)
	}
	if s := dest["config"].(map[string]any)["secrets"].([]any); len(s) != 1 || s[0] != sinks.Mask(secretB) {
		t.Fatalf("rotated destination secrets: %v", s)
	}
	if rs, _ := dest["retiring_secrets"].([]any); len(rs) != 1 || rs[0].(map[string]any)["secret"] != sinks.Mask(secretA) {
		t.Fatalf("retiring secrets: %v", dest["retiring_secrets"])
	}

	ev := h.publish(adminKey, caseEvent(nil))
	waitFor(t, "the delivery after rotation", func() bool { return len(rcv.got(ev)) == 1 })
	sigs := verifyEach(t, rcv.got(ev)[0], secretA, secretB)
	if len(sigs) != 2 {
		t.Fatalf("%d v1 signatures after rotation, want 2: %q", len(sigs), rcv.got(ev)[0].header.Get(webhook.HeaderSignature))
	}
	var by []string
	for _, ok := range sigs {
		if len(ok) != 1 {
			t.Fatalf("a signature verifies with %v, want exactly one secret", ok)
		}
		by = append(by, ok[0])
	}
	if !slices.Contains(by, secretA) || !slices.Contains(by, secretB) {
		t.Fatalf("signatures verify with %v, want one with the old and one with the new secret", by)
	}

	// Without a body Sluice generates the new secret.
	out = h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/rotate-secret", adminKey, nil).json(t)
	if s, _ := out["secret"].(string); !strings.HasPrefix(s, "whsec_") || strings.Contains(s, "…") || s == secretB {
		t.Fatalf("generated secret: %v", out["secret"])
	}
	// A webhook that does not sign has nothing to rotate.
	h.createHook(adminKey, "unsigned", rcv.URL, map[string]any{"config": map[string]any{"url": rcv.URL, "signing": "none"}})
	h.must(http.StatusUnprocessableEntity, "POST", "/v1/destinations/unsigned/rotate-secret", adminKey, nil)
}

// TestTestEndpoint: /test sends the catalog example (or the body's event) now and answers with the attempt;
// the delivery shows test=true.
func TestTestEndpoint(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	d := h.createHook(adminKey, "t", rcv.URL, map[string]any{"topics": []string{"case.status_updated"}})
	id := d["id"].(string)

	out := h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/test", adminKey, nil).json(t)
	atts := out["attempts"].([]any)
	if out["test"] != true || out["status"] != "delivered" || len(atts) != 1 || atts[0].(map[string]any)["status_code"] != float64(204) {
		t.Fatalf("test answer: %v", out)
	}
	got := rcv.got(out["event_id"].(string))
	if len(got) != 1 || !bytes.Contains(got[0].body, []byte(`"c-9"`)) || !bytes.Contains(got[0].body, []byte("case.status_updated")) {
		t.Fatalf("the receiver got %d requests for the test event: %v", len(got), got)
	}
	again := h.delivery(out["id"].(string))
	if again["test"] != true || len(again["attempts"].([]any)) != 1 {
		t.Fatalf("GET of the test delivery: %v", again)
	}

	// An event in the body.
	out = h.must(http.StatusOK, "POST", "/v1/destinations/t/test", adminKey, `{"topic": "order.created", "data": {"n": 1}, "metadata": {"k": "v"}}`).json(t)
	if out["test"] != true || len(rcv.got(out["event_id"].(string))) != 1 {
		t.Fatalf("test with a body: %v", out)
	}
	// A failing receiver: the attempt says so.
	rcv.setStatus(http.StatusInternalServerError)
	out = h.must(http.StatusOK, "POST", "/v1/destinations/t/test", adminKey, nil).json(t)
	if a := out["attempts"].([]any)[0].(map[string]any); a["status_code"] != float64(500) {
		t.Fatalf("failed test attempt: %v", a)
	}
	rcv.setStatus(http.StatusNoContent)

	r := h.must(http.StatusBadRequest, "POST", "/v1/destinations/t/test", adminKey, `{"data": {}}`)
	if _, field := r.err(t); field != "topic" {
		t.Fatalf("test without topic: field %q", field)
	}
	r = h.must(http.StatusBadRequest, "POST", "/v1/destinations/t/test", adminKey, `{"topic": "x", "data": {}, "extra": 1}`)
	if _, field := r.err(t); field != "extra" {
		t.Fatalf("test with an unknown field: field %q", field)
	}
	h.must(http.StatusOK, "POST", "/v1/destinations/t/disable", adminKey, nil)
	h.must(http.StatusConflict, "POST", "/v1/destinations/t/test", adminKey, nil)
}

// TestRetryAndReplay: a failed delivery retried by hand and a destination's deliveries replayed reach the
// receiver again.
func TestRetryAndReplay(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	rcv.setStatus(http.StatusBadRequest) // permanent: the delivery fails at once
	d := h.createHook(adminKey, "rr", rcv.URL, map[string]any{"topics": []string{"case.*"}})
	id := d["id"].(string)

	ev := h.publish(adminKey, caseEvent(nil))
	dl := h.deliveryOf(ev, "rr")
	if dl == nil {
		t.Fatal("no delivery to rr")
	}
	did := dl["id"].(string)
	failed := h.waitStatus(did, store.Failed)
	if a := failed["attempts"].([]any); len(a) != 1 || failed["last_error"] == "" {
		t.Fatalf("failed delivery: %v", failed)
	}

	// The list filters.
	list := h.must(http.StatusOK, "GET", "/v1/deliveries?status=failed&destination="+id, readerKey, nil).json(t)["data"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != did || list[0].(map[string]any)["attempt_count"] != float64(1) {
		t.Fatalf("failed deliveries of rr: %v", list)
	}
	if _, has := list[0].(map[string]any)["attempts"]; has {
		t.Fatal("list items carry the attempt list; the document says attempt_count only")
	}
	h.must(http.StatusBadRequest, "GET", "/v1/deliveries?status=lost", readerKey, nil)

	rcv.setStatus(http.StatusNoContent)
	r := h.must(http.StatusAccepted, "POST", "/v1/deliveries/"+did+"/retry", adminKey, nil).json(t)
	if r["id"] != did || r["status"] != "pending" {
		t.Fatalf("retry answer: %v", r)
	}
	waitFor(t, "the retried delivery", func() bool { return len(rcv.got(ev)) == 2 })
	h.waitStatus(did, store.Delivered)
	h.must(http.StatusNotFound, "POST", "/v1/deliveries/999999/retry", adminKey, "")
	h.must(http.StatusNotFound, "POST", "/v1/deliveries/abc/retry", adminKey, "")

	// Replay: bad filters are 400 naming the field; a good one requeues and the receiver gets it again.
	for body, field := range map[string]string{
		`{"since": "yesterday"}`:        "since",
		`{"until": "2026-13-01"}`:       "until",
		`{"status": "lost"}`:            "status",
		`{"status": ["pending"]}`:       "status",
		`{"status": 3}`:                 "status",
		`{"since": "x", "surprise": 1}`: "surprise",
	} {
		r := h.must(http.StatusBadRequest, "POST", "/v1/destinations/"+id+"/replay", adminKey, body)
		if _, f := r.err(t); f != field {
			t.Fatalf("replay %s: field %q, want %q", body, f, field)
		}
	}
	out := h.must(http.StatusAccepted, "POST", "/v1/destinations/"+id+"/replay", adminKey, `{"status": ["delivered", "failed"], "since": "2000-01-01T00:00:00Z"}`).json(t)
	if out["requeued"] != float64(1) {
		t.Fatalf("replay: %v", out)
	}
	waitFor(t, "the replayed delivery", func() bool { return len(rcv.got(ev)) == 3 })
	h.waitStatus(did, store.Delivered)
	out = h.must(http.StatusAccepted, "POST", "/v1/destinations/"+id+"/replay", adminKey, nil).json(t)
	if out["requeued"] != float64(1) {
		t.Fatalf("replay without a body: %v", out)
	}
	waitFor(t, "the second replay", func() bool { return len(rcv.got(ev)) == 4 })
	out = h.must(http.StatusAccepted, "POST", "/v1/destinations/"+id+"/replay", adminKey, `{"status": "failed"}`).json(t)
	if out["requeued"] != float64(0) {
		t.Fatalf("replay of failed ones when none failed: %v", out)
	}
}

// TestEventPagination walks 120 events in pages of 50: every event once, in order, newest first.
func TestEventPagination(t *testing.T) {
	h := newHarness(t)
	var events []map[string]any
	for i := range 120 {
		events = append(events, map[string]any{"id": fmt.Sprintf("ev-%03d", i), "topic": "order.created", "data": map[string]any{"n": i}})
	}
	// In order, one per batch item, so received order is id order.
	for i := 0; i < len(events); i += 40 {
		res := h.must(http.StatusAccepted, "POST", "/v1/events/batch", publisherKey, map[string]any{"events": events[i : i+40]}).json(t)
		if res["accepted"] != float64(40) {
			t.Fatalf("batch: %v", res)
		}
	}
	seen := map[string]bool{}
	var order []string
	cursor, pages := "", 0
	for {
		path := "/v1/events?topic=order.created&limit=50"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		out := h.must(http.StatusOK, "GET", path, readerKey, nil).json(t)
		data := out["data"].([]any)
		pages++
		for _, e := range data {
			id := e.(map[string]any)["id"].(string)
			if seen[id] {
				t.Fatalf("event %s on two pages", id)
			}
			seen[id] = true
			order = append(order, id)
		}
		cursor = out["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if len(data) != 50 {
			t.Fatalf("page %d has %d events and a next cursor", pages, len(data))
		}
	}
	if pages != 3 || len(seen) != 120 {
		t.Fatalf("%d pages, %d distinct events; want 3 and 120", pages, len(seen))
	}
	if order[0] != "ev-119" || order[119] != "ev-000" {
		t.Fatalf("not newest first: %s … %s", order[0], order[119])
	}
	// Default page size.
	if n := len(h.must(http.StatusOK, "GET", "/v1/events", readerKey, nil).json(t)["data"].([]any)); n != 50 {
		t.Fatalf("default page: %d events, want 50", n)
	}
	// Bad parameters name themselves.
	for q, field := range map[string]string{
		"limit=0": "limit", "limit=1001": "limit", "limit=ten": "limit", "cursor=%21%21": "cursor",
		"cursor=" + "MTIz": "cursor", "since=monday": "since", "until=2026-01-01": "until", "since=2999-01-01T00:00:00Z": "since",
	} {
		for _, path := range []string{"/v1/events?", "/v1/deliveries?"} {
			r := h.must(http.StatusBadRequest, "GET", path+q, readerKey, nil)
			if _, f := r.err(t); f != field {
				t.Fatalf("%s%s: field %q, want %q", path, q, f, field)
			}
		}
	}
	// since/until bound the list.
	if n := len(h.must(http.StatusOK, "GET", "/v1/events?since=2200-01-01T00:00:00Z", readerKey, nil).json(t)["data"].([]any)); n != 0 {
		t.Fatalf("events since 2200: %d", n)
	}
	if n := len(h.must(http.StatusOK, "GET", "/v1/events?until=2000-01-01T00:00:00Z", readerKey, nil).json(t)["data"].([]any)); n != 0 {
		t.Fatalf("events until 2000: %d", n)
	}
}

// TestDeliveryPagination walks the delivery log a page at a time.
func TestDeliveryPagination(t *testing.T) {
	h := newHarness(t)
	for range 7 {
		h.publish(adminKey, caseEvent(nil))
	}
	seen := map[string]bool{}
	cursor := ""
	for {
		path := "/v1/deliveries?limit=3&destination=" + yamlHookName
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		out := h.must(http.StatusOK, "GET", path, readerKey, nil).json(t)
		for _, d := range out["data"].([]any) {
			id := d.(map[string]any)["id"].(string)
			if seen[id] {
				t.Fatalf("delivery %s twice", id)
			}
			seen[id] = true
		}
		if cursor = out["next_cursor"].(string); cursor == "" {
			break
		}
	}
	if len(seen) != 7 {
		t.Fatalf("%d deliveries walked, want 7", len(seen))
	}
	h.must(http.StatusNotFound, "GET", "/v1/deliveries/0", readerKey, nil)
	h.must(http.StatusNotFound, "GET", "/v1/deliveries/x", readerKey, nil)
	h.must(http.StatusNotFound, "GET", "/v1/events/nope", readerKey, nil)
}

// TestReadyzFailsWhenStoreUnusable: /readyz answers 503 naming the store once the store cannot be used.
func TestReadyzFailsWhenStoreUnusable(t *testing.T) {
	h := newHarness(t)
	h.must(http.StatusOK, "GET", "/readyz", "", nil)
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	r := h.must(http.StatusServiceUnavailable, "GET", "/readyz", readerKey, nil)
	if !strings.Contains(string(r.body), "store") {
		t.Fatalf("/readyz with a closed store does not name it: %s", r.body)
	}
	// Without a key the answer says only that it is not ready.
	r = h.must(http.StatusServiceUnavailable, "GET", "/readyz", "", nil)
	if strings.Contains(string(r.body), "store") || strings.Contains(string(r.body), "reason") {
		t.Fatalf("/readyz without a key tells why: %s", r.body)
	}
}

// TestDeliveriesByTenant: ?tenant= narrows the delivery log to that tenant's destinations; a tenant key asking
// for another tenant gets nothing.
func TestDeliveriesByTenant(t *testing.T) {
	h := newHarness(t)
	ra, rg := newReceiver(t), newReceiver(t)
	h.createHook(acmeKey, "acme-hook", ra.URL, nil)
	h.createHook(globexKey, "globex-hook", rg.URL, nil)
	h.publish(adminKey, map[string]any{"topic": "case.status_updated", "tenant": "acme", "data": map[string]any{}})
	h.publish(adminKey, map[string]any{"topic": "case.status_updated", "tenant": "globex", "data": map[string]any{}})
	names := func(key, query string) []string {
		var out []string
		for _, d := range h.must(http.StatusOK, "GET", "/v1/deliveries"+query, key, nil).json(t)["data"].([]any) {
			out = append(out, d.(map[string]any)["destination"].(map[string]any)["name"].(string))
		}
		return out
	}
	if got := names(adminKey, "?tenant=acme"); len(got) != 1 || got[0] != "acme-hook" {
		t.Fatalf("admin ?tenant=acme: %v", got)
	}
	if got := names(acmeKey, "?tenant=globex"); len(got) != 0 {
		t.Fatalf("acme key ?tenant=globex: %v", got)
	}
	if got := names(acmeKey, "?tenant=acme"); len(got) != 1 || got[0] != "acme-hook" {
		t.Fatalf("acme key ?tenant=acme: %v", got)
	}
}
