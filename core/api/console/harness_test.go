package console_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/api"
	"github.com/sluicehq/sluice/core/api/console"
	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// Keys of the test config, one per role and tenant.
const (
	adminKey      = "console-admin-key"
	readerKey     = "console-reader-key"
	acmeKey       = "console-acme-admin-key"
	acmeReaderKey = "console-acme-reader-key"
	globexKey     = "console-globex-admin-key"
)

var portalSecret = bytes.Repeat([]byte{9}, 32)

// receiver is a webhook endpoint that counts what it gets and answers status.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	ids    []string
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{status: http.StatusNoContent}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.ids = append(r.ids, req.Header.Get(webhook.HeaderID))
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

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// harness is a real in-process Sluice (embedded store, dispatcher, intake, destination manager) behind the
// API server, with the console mounted as `sluice serve` mounts it.
type harness struct {
	t        *testing.T
	st       *embedded.Store
	disp     *dispatch.Dispatcher
	in       *intake.Intake
	mgr      *destinations.Manager
	srv      *api.Server
	http     *httptest.Server
	activity *console.Activity
	nums     *seal.Numbers // hides delivery ids in URLs, as serve does under store.encryption_key
	// skew moves the dispatcher's clock ahead of the wall clock (nanoseconds), for tests of time windows.
	skew   atomic.Int64
	hook   *receiver // the tenant-less YAML destination
	acme   *receiver
	globex *receiver
}

const configTemplate = `
server: {listen: "127.0.0.1:0"}
auth:
  keys:
    - {name: admin, key: %[1]s, role: admin}
    - {name: reader, key: %[2]s, role: reader}
    - {name: acme-admin, key: %[3]s, role: admin, tenant: acme}
    - {name: acme-reader, key: %[4]s, role: reader, tenant: acme}
    - {name: globex-admin, key: %[5]s, role: admin, tenant: globex}
store: {encryption_key: "%[6]s"}
delivery:
  retry: {schedule: [1h], jitter: 0}
  network: {allow_cidrs: [127.0.0.0/8]}
console: {enabled: true, session_ttl: 1h%[10]s}
topics:
  - name: case.status_updated
    description: A case moved from one status to another.
    schema: {type: object, required: [case], properties: {case: {type: object}}}
    example: {case: {id: c-9, status: approved}}
  - name: order.created
    example: {order: {id: o-1}}
destinations:
  - name: yaml-hook
    type: webhook
    topics: ["case.*"]
    config: {url: %[7]s, secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}
  - name: acme-hook
    type: webhook
    tenant: acme
    topics: ["case.*", "order.*"]
    config: {url: %[8]s, secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}
  - name: globex-hook
    type: webhook
    tenant: globex
    topics: ["case.*", "order.*"]
    config: {url: %[9]s, secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}
`

type harnessOption func(extra *string)

func withFrameAncestors(list string) harnessOption {
	return func(extra *string) { *extra += ", frame_ancestors: " + list }
}

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, hook: newReceiver(t), acme: newReceiver(t), globex: newReceiver(t), activity: console.NewActivity()}
	extra := ""
	for _, o := range opts {
		o(&extra)
	}
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	src := fmt.Sprintf(configTemplate, adminKey, readerKey, acmeKey, acmeReaderKey, globexKey, key,
		h.hook.URL, h.acme.URL, h.globex.URL, extra)
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(file, []byte(src), func(string) (string, bool) { return "", false }, sinks.NewRegistry(webhook.Spec))
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
	h.nums = seal.NewNumbers(keys)
	box, err := seal.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	h.disp = dispatch.New(st, dispatch.Options{Poll: 50 * time.Millisecond, Observer: h.activity,
		Now:        func() time.Time { return time.Now().Add(time.Duration(h.skew.Load())) },
		OnDisabled: func(name, reason string) { h.mgr.OnDisabled(name, reason) },
		OnFailed:   func(j store.Job, a store.Attempt) { h.mgr.OnFailed(j, a) },
	})
	allow, _ := netguard.ParseCIDRs(cfg.Delivery.Network.AllowCIDRs)
	h.mgr = destinations.New(destinations.Options{Store: st, Dispatcher: h.disp, Lanes: destinations.NewLanes(netguard.New(allow), ""), Box: box})
	h.in = intake.New(st, h.disp, nil, intake.Options{DedupeWindow: time.Hour, MaxBodyBytes: 1 << 20,
		Subscriptions: h.mgr.Subscriptions(), Topics: cfg.Topics, OnAccepted: h.activity.Accepted})
	if err := h.mgr.Start(context.Background(), cfg, h.in); err != nil {
		t.Fatal(err)
	}
	h.srv = api.New(api.Options{Store: st, Intake: h.in, Keys: api.NewKeys(cfg.Auth.Keys), Destinations: h.mgr,
		Console: cfg.Console, Sinks: cfg.Registry, Activity: h.activity, PortalSecret: portalSecret, Numbers: h.nums})
	h.srv.SetReady(true)
	h.http = httptest.NewServer(h.srv)
	t.Cleanup(func() {
		h.http.CloseClientConnections()
		h.http.Close()
		h.in.Close()
		_ = h.disp.Shutdown(context.Background())
		_ = st.Close()
	})
	return h
}

// publish stores one event through intake (as POST /v1/events does) and returns its id.
func (h *harness) publish(topic, tenant, data string) string {
	h.t.Helper()
	res, err := h.in.Publish(context.Background(), []event.Event{{Topic: topic, Tenant: tenant, Data: json.RawMessage(data)}})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		h.t.Fatalf("publish: %v %+v", err, res)
	}
	return res[0].ID
}

// waitFor polls cond (the store or a receiver, which say nothing when they change) until it holds.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliveryOf returns the delivery of event id to destination.
func (h *harness) deliveryOf(id, destination string) store.DeliveryRecord {
	h.t.Helper()
	rec, err := h.st.Event(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	// Deliveries follow the destination's id; tests name destinations by name.
	v, err := h.mgr.Get(destination, "")
	if err != nil {
		h.t.Fatal(err)
	}
	for _, d := range rec.Deliveries {
		if d.Destination == v.ID {
			return d
		}
	}
	h.t.Fatalf("event %s has no delivery to %s", id, destination)
	return store.DeliveryRecord{}
}

// client is one browser-like session: a cookie jar, no redirects followed (tests look at them).
type client struct {
	h    *harness
	c    *http.Client
	csrf string
}

func (h *harness) client() *client {
	jar, _ := cookiejar.New(nil)
	return &client{h: h, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type page struct {
	status int
	header http.Header
	body   string
}

func (c *client) do(req *http.Request) page {
	c.h.t.Helper()
	res, err := c.c.Do(req)
	if err != nil {
		c.h.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	p := page{status: res.StatusCode, header: res.Header, body: string(b)}
	if m := csrfInput.FindStringSubmatch(p.body); m != nil {
		c.csrf = m[1]
	}
	return p
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) get(path string) page {
	c.h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.h.http.URL+path, nil)
	return c.do(req)
}

// post sends a form with the session's CSRF token (unless form sets csrf itself).
func (c *client) post(path string, form url.Values) page {
	c.h.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if !form.Has("csrf") {
		form.Set("csrf", c.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, c.h.http.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

// signIn opens a session with key and loads the overview (which sets the CSRF token).
func (h *harness) signIn(key string) *client {
	h.t.Helper()
	c := h.client()
	c.get("/console/login")
	p := c.post("/console/login", url.Values{"key": {key}})
	if p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/" {
		h.t.Fatalf("sign in with %q: %d %s", key, p.status, p.body)
	}
	if p := c.get("/console/"); p.status != http.StatusOK {
		h.t.Fatalf("overview after sign-in: %d", p.status)
	}
	return c
}

// apiPost calls the /v1 API with a bearer key.
func (h *harness) apiPost(path, key, body string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.http.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func (h *harness) destID(name string) string {
	h.t.Helper()
	v, err := h.mgr.Get(name, "")
	if err != nil {
		h.t.Fatal(err)
	}
	return v.ID
}

// did is a delivery id as the console shows it.
func (h *harness) did(id int64) string { return h.nums.Hide(id, seal.KindDelivery) }
