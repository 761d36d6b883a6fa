package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/sluicehq/sluice/core/api"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/bucket"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// API keys of the test config, one per role and tenant.
const (
	adminKey       = "admin-key"
	readerKey      = "reader-key"
	publisherKey   = "publisher-key"
	acmeKey        = "acme-admin-key"
	acmeReaderKey  = "acme-reader-key"
	globexKey      = "globex-admin-key"
	secretA        = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB        = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	yamlHookName   = "yaml-hook"
	testConfigFile = "sluice.yaml"
)

var encryptionKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

// receiver is a webhook endpoint that records what it gets and answers status.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	reqs   []received
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{status: http.StatusNoContent}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, received{header: req.Header.Clone(), body: b})
		st := r.status
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) setStatus(s int) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

// got returns the requests received for an event id (webhook-id), or all with id "".
func (r *receiver) got(id string) []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []received
	for _, q := range r.reqs {
		if id == "" || q.header.Get(webhook.HeaderID) == id {
			out = append(out, q)
		}
	}
	return out
}

// harness is a real in-process Sluice: embedded store, dispatcher, intake, destination manager and the API,
// served over HTTP. Every response it sees is validated against the OpenAPI document.
type harness struct {
	t    *testing.T
	st   *embedded.Store
	disp *dispatch.Dispatcher
	in   *intake.Intake
	mgr  *destinations.Manager
	srv  *api.Server
	http *httptest.Server
	yaml *receiver // the YAML destination's endpoint

	oa *openAPI
}

const configTemplate = `
server: {listen: "127.0.0.1:0"}
auth:
  keys:
    - {name: admin, key: %[1]s, role: admin}
    - {name: reader, key: %[2]s, role: reader}
    - {name: publisher, key: %[3]s, role: publisher}
    - {name: acme-admin, key: %[4]s, role: admin, tenant: acme}
    - {name: acme-reader, key: %[5]s, role: reader, tenant: acme}
    - {name: globex-admin, key: %[6]s, role: admin, tenant: globex}
store: {encryption_key: "%[7]s"}
delivery:
  retry: {schedule: [1h], jitter: 0}
  rotation_overlap: 1h
topics:
  - name: case.status_updated
    description: A case moved from one status to another.
    example: {case: {id: c-9, status: approved}}
  - name: order.created
    example: {order: {id: o-1}}
destinations:
  - name: %[8]s
    type: webhook
    topics: ["case.*"]
    config:
      url: %[9]s
      secrets: ["%[10]s"]
`

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, yaml: newReceiver(t), oa: loadOpenAPI(t)}
	src := fmt.Sprintf(configTemplate, adminKey, readerKey, publisherKey, acmeKey, acmeReaderKey, globexKey,
		encryptionKey, yamlHookName, h.yaml.URL, secretA)
	file := filepath.Join(dir, testConfigFile)
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(file, []byte(src), func(string) (string, bool) { return "", false }, sinks.NewRegistry(webhook.Spec, bucket.Spec))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	st, err := embedded.Open(filepath.Join(dir, "data"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	keys, err := cfg.Store.EncryptionKeys()
	if err != nil {
		t.Fatal(err)
	}
	box, err := seal.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	h.disp = dispatch.New(st, dispatch.Options{Poll: 50 * time.Millisecond,
		OnDisabled: func(name, reason string) { h.mgr.OnDisabled(name, reason) },
		OnFailed:   func(j store.Job, a store.Attempt) { h.mgr.OnFailed(j, a) },
	})
	h.mgr = destinations.New(destinations.Options{Store: st, Dispatcher: h.disp, Lanes: lanes(), Box: box})
	h.in = intake.New(st, h.disp, nil, intake.Options{DedupeWindow: time.Hour, MaxBodyBytes: 1 << 20, Subscriptions: h.mgr.Subscriptions(),
		Topics: cfg.Topics})
	if err := h.mgr.Start(context.Background(), cfg, h.in); err != nil {
		t.Fatal(err)
	}
	h.srv = api.New(api.Options{Store: st, Intake: h.in, Keys: api.NewKeys(cfg.Auth.Keys), Destinations: h.mgr,
		Numbers: seal.NewNumbers(keys)})
	h.srv.SetReady(true)
	h.http = httptest.NewServer(h.srv)
	t.Cleanup(func() {
		h.http.Close()
		h.in.Close()
		_ = h.disp.Shutdown(context.Background())
		_ = st.Close()
	})
	return h
}

// lanes builds lanes as `sluice serve` does, with a network guard that allows loopback (the receivers are
// httptest servers).
func lanes() *destinations.Lanes {
	allow, _ := netguard.ParseCIDRs([]string{"127.0.0.0/8"})
	l := destinations.NewLanes(netguard.New(allow), "")
	// Per-run subscriptions have their own allow list (intake.inline_subscriptions.allow_cidrs).
	l.SetNetwork(netguard.NewDialer(netguard.New(allow), nil), netguard.NewDialer(netguard.New(allow), nil))
	return l
}

// resp is one API answer.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value.
func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// errField returns the error's field and code.
func (r resp) err(t *testing.T) (code, field string) {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	if e == nil {
		t.Fatalf("no error object in %s", r.body)
	}
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	return code, field
}

// do sends a request with key ("" = none) and body (string, []byte, nil, or a value to encode), and
// validates the answer against the OpenAPI document.
func (h *harness) do(method, path, key string, body any) resp {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, h.http.URL+path, bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	out := resp{status: res.StatusCode, header: res.Header, body: b}
	h.oa.check(h.t, method, path, out)
	return out
}

// must sends a request and fails unless it answers want.
func (h *harness) must(want int, method, path, key string, body any) resp {
	h.t.Helper()
	r := h.do(method, path, key, body)
	if r.status != want {
		h.t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

// publish posts an event and returns its id.
func (h *harness) publish(key string, ev map[string]any) string {
	h.t.Helper()
	r := h.must(http.StatusAccepted, "POST", "/v1/events", key, ev)
	id, _ := r.json(h.t)["id"].(string)
	return id
}

// createHook creates an API webhook destination and returns its JSON.
func (h *harness) createHook(key, name, url string, extra map[string]any) map[string]any {
	h.t.Helper()
	spec := map[string]any{"name": name, "type": "webhook", "topics": []string{"*"}, "config": map[string]any{"url": url}}
	for k, v := range extra {
		spec[k] = v
	}
	return h.must(http.StatusCreated, "POST", "/v1/destinations", key, spec).json(h.t)
}

// delivery returns GET /v1/deliveries/{id}.
func (h *harness) delivery(id string) map[string]any {
	h.t.Helper()
	return h.must(http.StatusOK, "GET", "/v1/deliveries/"+id, adminKey, nil).json(h.t)
}

// deliveryOf finds the delivery of an event to a destination name via GET /v1/events/{id}.
func (h *harness) deliveryOf(eventID, dest string) map[string]any {
	h.t.Helper()
	ev := h.must(http.StatusOK, "GET", "/v1/events/"+eventID, adminKey, nil).json(h.t)
	list, _ := ev["deliveries"].([]any)
	for _, d := range list {
		dm := d.(map[string]any)
		if dm["destination"].(map[string]any)["name"] == dest {
			return dm
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openAPI validates responses against core/api/openapi.json and records which operations and statuses
// were validated, so a test can insist that every route was covered.
type openAPI struct {
	doc    *openapi3.T
	router routers.Router

	mu      sync.Mutex
	checked map[string]bool // "operationId status"
}

var (
	openAPIOnce sync.Once
	openAPIDoc  *openapi3.T
	openAPIErr  error
)

func loadOpenAPI(t *testing.T) *openAPI {
	t.Helper()
	openAPIOnce.Do(func() {
		loader := openapi3.NewLoader()
		openAPIDoc, openAPIErr = loader.LoadFromData(api.OpenAPI())
		if openAPIErr == nil {
			openAPIErr = openAPIDoc.Validate(loader.Context)
		}
	})
	if openAPIErr != nil {
		t.Fatalf("openapi.json: %v", openAPIErr)
	}
	router, err := gorillamux.NewRouter(openAPIDoc)
	if err != nil {
		t.Fatalf("openapi router: %v", err)
	}
	return &openAPI{doc: openAPIDoc, router: router, checked: map[string]bool{}}
}

// openAPIServer is the document's server URL; routes are looked up as if requests went there.
const openAPIServer = "http://127.0.0.1:8080"

// check validates one answer. Paths the document does not describe (a 404 for an unknown route, a 405 for
// a wrong method) have no operation to validate against; they are checked for the error shape instead.
func (o *openAPI) check(t *testing.T, method, path string, r resp) {
	t.Helper()
	req, err := http.NewRequest(method, openAPIServer+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := o.router.FindRoute(req)
	if err != nil {
		if r.status != http.StatusNotFound && r.status != http.StatusMethodNotAllowed && r.status != http.StatusUnauthorized {
			t.Fatalf("%s %s answered %d but the OpenAPI document has no such operation: %v", method, path, r.status, err)
		}
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(r.body, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("%s %s: %d without an error body: %s", method, path, r.status, r.body)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status:  r.status,
		Header:  r.header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(r.body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Fatalf("%s %s: the %d answer does not match the OpenAPI document: %v\nbody: %s", method, path, r.status, err,
			truncate(r.body))
	}
	o.mu.Lock()
	o.checked[fmt.Sprintf("%s %d", route.Operation.OperationID, r.status)] = true
	o.mu.Unlock()
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

// covered lists the validated "operationId status" pairs.
func (o *openAPI) covered() map[string]bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]bool, len(o.checked))
	for k := range o.checked {
		out[k] = true
	}
	return out
}

// verifyEach checks each v1 entry of a webhook-signature separately: which of the secrets verifies it.
func verifyEach(t *testing.T, q received, secrets ...string) [][]string {
	t.Helper()
	var out [][]string
	for _, entry := range strings.Fields(q.header.Get(webhook.HeaderSignature)) {
		if !strings.HasPrefix(entry, "v1,") {
			continue
		}
		one := q.header.Clone()
		one.Set(webhook.HeaderSignature, entry)
		var ok []string
		for _, s := range secrets {
			if webhook.VerifyStandard([]string{s}, one, q.body, 0) == nil {
				ok = append(ok, s)
			}
		}
		out = append(out, ok)
	}
	return out
}
