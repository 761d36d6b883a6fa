package api_test

import (
	"bufio"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The adversarial suite (DESIGN §9): two tenants, acme and globex, each with its own keys, attack each other
// through the /v1 routes. Each test names the attack and asserts the refusal or the harmless outcome.

func TestTenantAdminCannotPatchTenantToReceiveOthersEvents(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	d := h.createHook(acmeKey, "acme-hook", rcv.URL, nil)
	id := d["id"].(string)
	for _, tenant := range []any{nil, "", "globex"} {
		r := h.must(http.StatusUnprocessableEntity, "PATCH", "/v1/destinations/"+id, acmeKey, map[string]any{"tenant": tenant})
		if _, field := r.err(t); field != "tenant" {
			t.Fatalf("PATCH tenant %v: field %q, want tenant", tenant, field)
		}
	}
	// A tenant-less admin cannot move it either.
	h.must(http.StatusUnprocessableEntity, "PATCH", "/v1/destinations/"+id, adminKey, map[string]any{"tenant": nil})
	if got := h.must(http.StatusOK, "GET", "/v1/destinations/"+id, adminKey, nil).json(t)["tenant"]; got != "acme" {
		t.Fatalf("tenant after the refused patches: %v", got)
	}
	// globex's event never reaches acme's endpoint; acme's own does.
	h.publish(globexKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	mine := h.publish(acmeKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	waitFor(t, "acme's own event", func() bool { return len(rcv.got(mine)) == 1 })
	if n := len(rcv.got("")); n != 1 {
		t.Fatalf("acme's endpoint got %d requests, want only acme's own event", n)
	}
}

func TestTenantAdminReusingDeletedNameCannotSeeRetryOrReplayPredecessorDeliveries(t *testing.T) {
	h := newHarness(t)
	old := newReceiver(t)
	g := h.createHook(globexKey, "hook", old.URL, nil)
	ev := h.publish(globexKey, map[string]any{"topic": "order.created", "data": map[string]any{"secret": "globex"}})
	waitFor(t, "globex's delivery", func() bool { return len(old.got(ev)) == 1 })
	dl := h.deliveryOf(ev, "hook")
	h.must(http.StatusNoContent, "DELETE", "/v1/destinations/"+g["id"].(string), globexKey, nil)

	a := h.createHook(acmeKey, "hook", newReceiver(t).URL, nil)
	if a["id"] == g["id"] {
		t.Fatal("the new destination got the deleted one's id")
	}
	for _, q := range []string{"?destination=hook", "?destination=" + a["id"].(string), "?destination=" + g["id"].(string), ""} {
		if rows := h.must(http.StatusOK, "GET", "/v1/deliveries"+q, acmeKey, nil).json(t)["data"].([]any); len(rows) != 0 {
			t.Fatalf("acme lists %d deliveries with %q, want none of its predecessor's", len(rows), q)
		}
	}
	h.must(http.StatusNotFound, "GET", "/v1/deliveries/"+dl["id"].(string), acmeKey, nil)
	h.must(http.StatusNotFound, "POST", "/v1/deliveries/"+dl["id"].(string)+"/retry", acmeKey, nil)
	h.must(http.StatusNotFound, "GET", "/v1/events/"+ev, acmeKey, nil)
	r := h.must(http.StatusAccepted, "POST", "/v1/destinations/"+a["id"].(string)+"/replay", acmeKey, map[string]any{}).json(t)
	if r["requeued"] != float64(0) {
		t.Fatalf("replay on the reused name requeued %v", r["requeued"])
	}
}

func TestTenantCannotDeduplicateOrReadOtherTenantsEventIDs(t *testing.T) {
	h := newHarness(t)
	h.publish(globexKey, map[string]any{"id": "ev-1", "topic": "order.created", "data": map[string]any{"who": "globex"}})
	r := h.must(http.StatusAccepted, "POST", "/v1/events", acmeKey, map[string]any{"id": "ev-1", "topic": "order.created", "data": map[string]any{"who": "acme"}}).json(t)
	if r["duplicate"] != false {
		t.Fatalf("acme's ev-1 answered duplicate of globex's: %v", r)
	}
	for key, who := range map[string]string{acmeKey: "acme", globexKey: "globex"} {
		ev := h.must(http.StatusOK, "GET", "/v1/events/ev-1", key, nil).json(t)
		if ev["tenant"] != who || ev["data"].(map[string]any)["who"] != who {
			t.Fatalf("%s reads ev-1 as %v", who, ev)
		}
	}
	if ev := h.must(http.StatusOK, "GET", "/v1/events/ev-1?tenant=globex", adminKey, nil).json(t); ev["tenant"] != "globex" {
		t.Fatalf("admin with ?tenant=globex reads %v", ev["tenant"])
	}
}

func TestTenantProbingForeignIDsGets404Never403(t *testing.T) {
	h := newHarness(t)
	g := h.createHook(globexKey, "globex-hook", newReceiver(t).URL, nil)
	id := g["id"].(string)
	ev := h.publish(globexKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/destinations/" + id}, {"PATCH", "/v1/destinations/" + id}, {"DELETE", "/v1/destinations/" + id},
		{"POST", "/v1/destinations/" + id + "/enable"}, {"POST", "/v1/destinations/" + id + "/disable"},
		{"POST", "/v1/destinations/" + id + "/test"}, {"POST", "/v1/destinations/" + id + "/rotate-secret"},
		{"POST", "/v1/destinations/" + id + "/replay"}, {"GET", "/v1/destinations/globex-hook"},
		{"GET", "/v1/events/" + ev},
	} {
		var body any
		if rt.method == "PATCH" {
			body = map[string]any{}
		}
		h.must(http.StatusNotFound, rt.method, rt.path, acmeKey, body)
	}
	if d := h.deliveryOf(ev, "globex-hook"); d != nil {
		h.must(http.StatusNotFound, "GET", "/v1/deliveries/"+d["id"].(string), acmeKey, nil)
		h.must(http.StatusNotFound, "POST", "/v1/deliveries/"+d["id"].(string)+"/retry", acmeKey, nil)
	}
}

func TestTenantListFiltersCannotProbeOtherTenants(t *testing.T) {
	h := newHarness(t)
	g := h.createHook(globexKey, "globex-hook", newReceiver(t).URL, nil)
	h.publish(globexKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	for _, q := range []string{"/v1/deliveries?tenant=globex", "/v1/deliveries?destination=" + g["id"].(string),
		"/v1/deliveries?destination=globex-hook", "/v1/events?tenant=globex", "/v1/events"} {
		if rows := h.must(http.StatusOK, "GET", q, acmeReaderKey, nil).json(t)["data"].([]any); len(rows) != 0 {
			t.Fatalf("%s shows acme %d of globex's rows", q, len(rows))
		}
	}
	if list := h.must(http.StatusOK, "GET", "/v1/destinations", acmeReaderKey, nil).json(t)["data"].([]any); len(list) != 0 {
		t.Fatalf("acme lists %d destinations, want none of globex's (nor the YAML one)", len(list))
	}
}

func TestTenantKeyCannotCreateSinkTypesOrBucketsTheOperatorDidNotAllow(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	r := h.must(http.StatusForbidden, "POST", "/v1/destinations", acmeKey, map[string]any{"name": "b", "type": "bucket",
		"topics": []string{"*"}, "config": map[string]any{"url": "file://" + dir}})
	if _, field := r.err(t); field != "type" {
		t.Fatalf("field %q, want type", field)
	}
	store, _ := filepath.Abs("data")
	r = h.must(http.StatusForbidden, "POST", "/v1/destinations", adminKey, map[string]any{"name": "b", "type": "bucket",
		"topics": []string{"*"}, "config": map[string]any{"url": "file://" + filepath.Join(store, "x")}})
	if _, field := r.err(t); field != "config.url" {
		t.Fatalf("bucket into the store directory: field %q, want config.url", field)
	}
	r = h.must(http.StatusUnprocessableEntity, "POST", "/v1/destinations", adminKey, map[string]any{"name": "b", "type": "bucket",
		"topics": []string{"*"}, "config": map[string]any{"url": "s3://bucket?region=eu-west-1"}})
	if _, field := r.err(t); field != "config.access_key_id" {
		t.Fatalf("bucket on the gateway's ambient credentials: field %q, want config.access_key_id", field)
	}
}

func TestTenantKeyCannotMakeTheGatewayReadItsOwnFilesAsTLSMaterial(t *testing.T) {
	h := newHarness(t)
	for _, field := range []string{"ca", "client_cert", "client_key"} {
		tlsBlock := map[string]any{field: "/etc/passwd"}
		if field != "ca" {
			// a client certificate needs its key and the other way round; the other half is inline PEM
			other := map[string]string{"client_cert": "client_key", "client_key": "client_cert"}[field]
			tlsBlock[other] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}
		r := h.must(http.StatusForbidden, "POST", "/v1/destinations", acmeKey, map[string]any{"name": "tls-" + field,
			"type": "webhook", "topics": []string{"*"}, "config": map[string]any{"url": "https://example.com/hook", "tls": tlsBlock}})
		if _, got := r.err(t); got != "config.tls."+field {
			t.Fatalf("tls.%s as a host path: field %q, want config.tls.%s", field, got, field)
		}
	}
	// The operator's tenant-less admin key may name files on its own host.
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeTestCA(t, ca)
	h.must(http.StatusCreated, "POST", "/v1/destinations", adminKey, map[string]any{"name": "tls-admin",
		"type": "webhook", "topics": []string{"*"}, "config": map[string]any{"url": "https://example.com/hook", "tls": map[string]any{"ca": ca}}})
}

func TestTenantPoisonEventsCannotAutoDisableSharedDestination(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	d := h.createHook(adminKey, "shared", rcv.URL, map[string]any{"transform": "{n: abs(data.n)}", "auto_disable_after": 2})
	var poison []string
	for i := 0; i < 3; i++ {
		poison = append(poison, h.publish(acmeKey, map[string]any{"topic": "order.created", "data": map[string]any{"n": "not a number"}}))
	}
	for _, ev := range poison {
		waitFor(t, "the poison delivery to fail", func() bool {
			dl := h.deliveryOf(ev, "shared")
			return dl != nil && dl["status"] == "failed"
		})
	}
	if got := h.must(http.StatusOK, "GET", "/v1/destinations/"+d["id"].(string), adminKey, nil).json(t); got["enabled"] != true {
		t.Fatalf("poison events disabled the shared destination: %v", got["disabled_reason"])
	}
	good := h.publish(globexKey, map[string]any{"topic": "order.created", "data": map[string]any{"n": -2}})
	waitFor(t, "globex's event", func() bool { return len(rcv.got(good)) == 1 })
}

func TestUnauthenticatedSlowBodyIsRefusedWithoutReadingIt(t *testing.T) {
	h := newHarness(t)
	u, _ := url.Parse(h.http.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers promise a megabyte that never comes: the answer must not wait for it.
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{")
	// A guard against hanging forever, not a timed assertion.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
}

func TestPublisherCannotSmuggleHeadersThroughMetadata(t *testing.T) {
	h := newHarness(t)
	for _, v := range []string{"a\r\nX-Injected: 1", "a\nb", "nul\x00"} {
		r := h.must(http.StatusBadRequest, "POST", "/v1/events", publisherKey, map[string]any{"topic": "order.created",
			"data": map[string]any{}, "metadata": map[string]string{"trace": v}})
		if _, field := r.err(t); field != "metadata.trace" {
			t.Fatalf("metadata %q: field %q, want metadata.trace", v, field)
		}
	}
}

// TestTenantPatchWaitingOnItsInFlightAttemptDoesNotFreezeOtherTenants: acme's endpoint hangs mid-attempt and
// acme patches its destination (the lane swap waits for that attempt); globex's requests are answered
// meanwhile.
func TestTenantPatchWaitingOnItsInFlightAttemptDoesNotFreezeOtherTenants(t *testing.T) {
	h := newHarness(t)
	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	var once sync.Once
	slow := newReceiver(t)
	slow.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-release
		w.WriteHeader(http.StatusNoContent)
	})
	defer once.Do(func() { close(release) })
	d := h.createHook(acmeKey, "acme-slow", slow.URL, map[string]any{"timeout": "5m"})
	h.publish(acmeKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	<-arrived
	patched := make(chan int, 1)
	go func() {
		r := h.do("PATCH", "/v1/destinations/"+d["id"].(string), acmeKey, map[string]any{"topics": []string{"order.*"}})
		patched <- r.status
	}()
	// While acme's attempt is still in flight (release not closed), globex works normally.
	h.must(http.StatusOK, "GET", "/v1/destinations", globexKey, nil)
	g := h.createHook(globexKey, "globex-hook", newReceiver(t).URL, nil)
	h.must(http.StatusOK, "PATCH", "/v1/destinations/"+g["id"].(string), globexKey, map[string]any{"topics": []string{"order.*"}})
	once.Do(func() { close(release) })
	if st := <-patched; st != http.StatusOK {
		t.Fatalf("acme's patch: %d", st)
	}
}

func TestReaderCannotMakeOneListRequestCostGigabytes(t *testing.T) {
	h := newHarness(t)
	big := strings.Repeat("x", 900<<10)
	for i := 0; i < 12; i++ {
		h.publish(publisherKey, map[string]any{"topic": "order.created", "data": map[string]any{"blob": big}})
	}
	// Summaries by default: no data at all.
	sum := h.must(http.StatusOK, "GET", "/v1/events?limit=1000", readerKey, nil)
	if len(sum.body) > 64<<10 || strings.Contains(string(sum.body), `"data":{`) {
		t.Fatalf("a summary list is %d bytes / carries data", len(sum.body))
	}
	// With data, pages stop near 8 MB and the cursor walks the rest without gaps or repeats.
	seen, pages, cursor := map[string]bool{}, 0, ""
	for {
		r := h.must(http.StatusOK, "GET", "/v1/events?include=data&limit=1000&cursor="+cursor, readerKey, nil)
		if len(r.body) > 9<<20 {
			t.Fatalf("a page of %d bytes", len(r.body))
		}
		out := r.json(t)
		for _, e := range out["data"].([]any) {
			id := e.(map[string]any)["id"].(string)
			if seen[id] {
				t.Fatalf("event %s on two pages", id)
			}
			seen[id] = true
		}
		pages++
		if cursor = out["next_cursor"].(string); cursor == "" {
			break
		}
	}
	if len(seen) != 12 || pages < 2 {
		t.Fatalf("walked %d events in %d pages, want 12 in more than one", len(seen), pages)
	}
	h.must(http.StatusBadRequest, "GET", "/v1/events?include=everything", readerKey, nil)
}

func TestEventsPublishedWhileDisabledAreKeptForReplay(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	d := h.createHook(acmeKey, "acme-hook", rcv.URL, map[string]any{"topics": []string{"order.*"}})
	id := d["id"].(string)
	h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/disable", acmeKey, nil)
	ev := h.publish(acmeKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	dl := h.deliveryOf(ev, "acme-hook")
	if dl == nil || dl["status"] != "skipped" || dl["last_error"] != "destination disabled" {
		t.Fatalf("delivery while disabled: %v, want skipped (destination disabled)", dl)
	}
	h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/enable", acmeKey, nil)
	r := h.must(http.StatusAccepted, "POST", "/v1/destinations/"+id+"/replay", acmeKey, map[string]any{"status": "skipped"}).json(t)
	if r["requeued"] != float64(1) {
		list := h.must(http.StatusOK, "GET", "/v1/deliveries?destination="+id, acmeKey, nil)
		t.Fatalf("replay requeued %v, want 1: %s", r["requeued"], list.body)
	}
	waitFor(t, "the replayed event", func() bool { return len(rcv.got(ev)) == 1 })
}

func TestTenantCannotLearnOtherTenantsDestinationNamesFromAClash(t *testing.T) {
	h := newHarness(t)
	g := h.createHook(globexKey, "hook", newReceiver(t).URL, nil)
	// acme may use the same name: no 409 tells it globex has one.
	a := h.createHook(acmeKey, "hook", newReceiver(t).URL, nil)
	if a["id"] == g["id"] {
		t.Fatal("two tenants' destinations share an id")
	}
	// Within a tenant a name is still unique.
	h.must(http.StatusConflict, "POST", "/v1/destinations", acmeKey, map[string]any{"name": "hook", "type": "webhook",
		"topics": []string{"*"}, "config": map[string]any{"url": "http://127.0.0.1:1/x"}})
	// Each finds its own by name.
	for key, id := range map[string]any{acmeKey: a["id"], globexKey: g["id"]} {
		if got := h.must(http.StatusOK, "GET", "/v1/destinations/hook", key, nil).json(t)["id"]; got != id {
			t.Fatalf("GET /v1/destinations/hook found %v, want the key's own %v", got, id)
		}
	}
}

// writeTestCA writes a real CA certificate (a TLS test server's) as PEM to path.
func writeTestCA(t *testing.T, path string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTenantCannotCountOtherTenantsRowsFromDeliveryIDsOrCursors(t *testing.T) {
	h := newHarness(t)
	h.createHook(acmeKey, "acme-hook", newReceiver(t).URL, nil)
	h.createHook(globexKey, "globex-hook", newReceiver(t).URL, nil)
	first := h.publish(acmeKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	for range 5 {
		h.publish(globexKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	}
	second := h.publish(acmeKey, map[string]any{"topic": "order.created", "data": map[string]any{}})
	plain := regexp.MustCompile(`^(v1:)?[0-9]+$`)
	for _, ev := range []string{first, second} {
		d := h.deliveryOf(ev, "acme-hook")
		if d == nil {
			t.Fatalf("event %s has no delivery to acme-hook", ev)
		}
		id := d["id"].(string)
		if plain.MatchString(id) {
			t.Fatalf("delivery id %q is the store's sequence: two of them count every tenant's deliveries between", id)
		}
		if got := h.must(http.StatusOK, "GET", "/v1/deliveries/"+id, acmeKey, nil).json(t); got["id"] != id {
			t.Fatalf("GET /v1/deliveries/%s answers id %v", id, got["id"])
		}
	}
	// A guessed sequence number is no id.
	h.must(http.StatusNotFound, "GET", "/v1/deliveries/1", acmeKey, nil)
	// A cursor is no position either, yet it pages.
	page := h.must(http.StatusOK, "GET", "/v1/events?limit=1", acmeKey, nil).json(t)
	cur, _ := page["next_cursor"].(string)
	raw, err := base64.RawURLEncoding.DecodeString(cur)
	if cur == "" || plain.MatchString(cur) || (err == nil && plain.Match(raw)) {
		t.Fatalf("next_cursor %q (%q) is empty or shows the store's position", cur, raw)
	}
	rows := h.must(http.StatusOK, "GET", "/v1/events?limit=1&cursor="+url.QueryEscape(cur), acmeKey, nil).json(t)["data"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["id"] != first {
		t.Fatalf("the second page is %v, want acme's first event %s", rows, first)
	}
	// Another kind of token is not a cursor.
	h.must(http.StatusBadRequest, "GET", "/v1/events?cursor="+h.deliveryOf(first, "acme-hook")["id"].(string), acmeKey, nil)
}
