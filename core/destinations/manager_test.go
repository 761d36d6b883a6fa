package destinations_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
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

// receiver is a webhook endpoint that records what it gets and answers status.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	got    []http.Header
	topics []string
	bodies [][]byte
}

func newReceiver(t testing.TB, status int) *receiver {
	r := &receiver{status: status}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var env struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(b, &env)
		r.mu.Lock()
		r.got = append(r.got, req.Header.Clone())
		r.topics = append(r.topics, env.Type)
		r.bodies = append(r.bodies, b)
		st := r.status
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) count(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.topics {
		if topic == "" || t == topic {
			n++
		}
	}
	return n
}

func (r *receiver) last() (http.Header, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return nil, nil
	}
	return r.got[len(r.got)-1], r.bodies[len(r.bodies)-1]
}

func (r *receiver) setStatus(s int) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}

type stack struct {
	t       testing.TB
	mu      sync.Mutex
	removed []string
	dir     string
	st      *embedded.Store
	disp    *dispatch.Dispatcher
	in      *intake.Intake
	mgr     *destinations.Manager
	cfg     *config.Config
}

var testKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

func parse(t testing.TB, dir, src string) *config.Config {
	t.Helper()
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(file, []byte(src), func(string) (string, bool) { return "", false },
		sinks.NewRegistry(webhook.Spec))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func lanes() *destinations.Lanes {
	allow, _ := netguard.ParseCIDRs([]string{"127.0.0.0/8"})
	l := destinations.NewLanes(netguard.New(allow), "")
	// Per-run subscriptions have their own allow list (intake.inline_subscriptions.allow_cidrs).
	l.SetNetwork(netguard.NewDialer(netguard.New(allow), nil), netguard.NewDialer(netguard.New(allow), nil))
	return l
}

// start runs a store, dispatcher, intake and manager over cfg in dir; keys seal secrets.
func start(t testing.TB, dir string, cfg *config.Config, keys ...[]byte) *stack {
	t.Helper()
	return startAt(t, dir, cfg, nil, keys...)
}

// startAt is start with a clock (nil: the real one).
func startAt(t testing.TB, dir string, cfg *config.Config, now func() time.Time, keys ...[]byte) *stack {
	t.Helper()
	st, err := embedded.Open(filepath.Join(dir, "data"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, st: st, cfg: cfg}
	box, err := seal.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	s.disp = dispatch.New(st, dispatch.Options{Poll: 50 * time.Millisecond,
		OnDisabled: func(name, reason string) { s.mgr.OnDisabled(name, reason) },
		OnFailed:   func(j store.Job, a store.Attempt) { s.mgr.OnFailed(j, a) },
	})
	s.mgr = destinations.New(destinations.Options{Store: st, Dispatcher: s.disp, Lanes: lanes(), Box: box, Now: now,
		OnRemoved: func(name string) { s.mu.Lock(); s.removed = append(s.removed, name); s.mu.Unlock() }})
	s.in = intake.New(st, s.disp, nil, intake.Options{DedupeWindow: time.Hour, Now: now, Subscriptions: s.mgr.Subscriptions()})
	if err := s.mgr.Start(context.Background(), cfg, s.in); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

func (s *stack) close() {
	if s.st == nil {
		return
	}
	s.in.Close()
	s.mgr.Close()
	_ = s.disp.Shutdown(context.Background())
	_ = s.st.Close()
	s.st = nil
}

func (s *stack) publish(topic string) string {
	s.t.Helper()
	res, err := s.in.Publish(context.Background(), []event.Event{{Topic: topic, Data: json.RawMessage(`{"case":{"id":"c-1","status":"approved"}}`)}})
	if err != nil || res[0].Err != nil {
		s.t.Fatalf("publish: %v %v", err, res)
	}
	return res[0].ID
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

func (s *stack) statusOf(eventID, dest string) store.Status {
	rec, err := s.st.Event(context.Background(), eventID)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, d := range rec.Deliveries {
		if d.Destination == dest {
			return d.Status
		}
	}
	return ""
}

const base = `
server: {listen: "127.0.0.1:0"}
auth: {keys: [{name: admin, key: k, role: admin}]}
store: {encryption_key: "%s"}
delivery:
  retry: {schedule: [%s], jitter: 0}
  auto_disable_after: %d
  rotation_overlap: %s
topics:
  - {name: case.status_updated, example: {case: {id: c-9, status: approved}}}
destinations:
%s`

func yamlDest(name, url string, topics string) string {
	return fmt.Sprintf("  - {name: %s, type: webhook, topics: [%q], config: {url: %q, secrets: [%q]}}\n", name, topics, url, secretA)
}

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

func conf(t testing.TB, dir, schedule string, autoDisable int, overlap string, dests ...string) *config.Config {
	return parse(t, dir, fmt.Sprintf(base, testKey, schedule, autoDisable, overlap, strings.Join(dests, "")))
}

// TestApplyReload: a reload replaces a changed destination's lane, starts a new one, and stops a removed one
// whose pending deliveries end as skipped; a reload whose sink cannot be built changes nothing.
func TestApplyReload(t *testing.T) {
	dir := t.TempDir()
	a1, a2, b, c := newReceiver(t, 204), newReceiver(t, 204), newReceiver(t, 503), newReceiver(t, 204)
	s := start(t, dir, conf(t, dir, "1h", 0, "1h", yamlDest("a", a1.URL, "*"), yamlDest("b", b.URL, "*")), bytes.Repeat([]byte{1}, 32))
	first := s.publish("case.status_updated")
	waitFor(t, "a's first delivery and b's failed attempt", func() bool { return a1.count("") == 1 && b.count("") == 1 })
	if st := s.statusOf(first, "b"); st != store.Pending {
		t.Fatalf("b's delivery is %s, want pending (retry in 1h)", st)
	}

	next := conf(t, dir, "1h", 0, "1h", yamlDest("a", a2.URL, "*"), yamlDest("c", c.URL, "*"))
	if err := s.mgr.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if st := s.statusOf(first, "b"); st != store.Skipped {
		t.Fatalf("the removed destination's pending delivery is %s, want skipped", st)
	}
	s.mu.Lock()
	if fmt.Sprint(s.removed) != "[b]" {
		t.Errorf("OnRemoved heard of %v, want [b]", s.removed)
	}
	s.mu.Unlock()
	s.publish("case.status_updated")
	waitFor(t, "delivery to the changed and the new destination", func() bool { return a2.count("") == 1 && c.count("") == 1 })
	if a1.count("") != 1 || b.count("") != 1 {
		t.Fatalf("old targets got events after the reload: a1=%d b=%d", a1.count(""), b.count(""))
	}

	// A reload that cannot be applied (a name clash with an API destination) leaves everything as it was.
	if _, err := s.mgr.Create(context.Background(), []byte(fmt.Sprintf(`{"name":"api-d","type":"webhook","topics":["*"],"config":{"url":%q}}`, c.URL)), ""); err != nil {
		t.Fatal(err)
	}
	clash := conf(t, dir, "1h", 0, "1h", yamlDest("a", a2.URL, "*"), yamlDest("api-d", c.URL, "*"))
	if err := s.mgr.Apply(context.Background(), clash); err == nil || !strings.Contains(err.Error(), "api-d") {
		t.Fatalf("Apply with a clashing name: %v", err)
	}
	s.publish("case.status_updated")
	waitFor(t, "delivery with the old config after a refused reload", func() bool { return a2.count("") == 2 && c.count("") == 3 })
	if names := s.mgr.Names(""); strings.Join(names, ",") != "a,c,api-d" {
		t.Fatalf("destinations after a refused reload: %v", names)
	}
}

// TestSecretsSealedAtRest: an API destination's secret is sealed in the store, masked in views, and survives a
// restart; after a key rotation (new key, old one listed as previous) the manager re-seals it under the new key.
func TestSecretsSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	r := newReceiver(t, 204)
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	cfg := conf(t, dir, "1h", 0, "1h")
	s := start(t, dir, cfg, k1)
	v, err := s.mgr.Create(context.Background(), []byte(fmt.Sprintf(`{"name":"sealed","type":"webhook","topics":["case.*"],"config":{"url":%q,"secrets":[%q]}}`, r.URL, secretB)), "")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(v)
	if strings.Contains(string(raw), secretB) || !strings.Contains(string(raw), sinks.Mask(secretB)) {
		t.Fatalf("create view shows the secret or not its mask: %s", raw)
	}
	recs, _ := s.st.Destinations(context.Background())
	if len(recs) != 1 || bytes.Contains(recs[0].Spec, []byte(strings.TrimPrefix(secretB, "whsec_"))) {
		t.Fatalf("the stored spec holds the plaintext secret: %s", recs[0].Spec)
	}
	s.close()

	// Restart under a new key with the old one as previous: deliveries sign with the same secret.
	s = start(t, dir, cfg, k2, k1)
	s.publish("case.status_updated")
	waitFor(t, "a delivery after restart", func() bool { return r.count("") == 1 })
	h, body := r.last()
	if err := webhook.VerifyStandard([]string{secretB}, h, body, time.Minute); err != nil {
		t.Fatalf("delivery after restart is not signed with the stored secret: %v", err)
	}
	s.close()
	// The restart re-sealed it: the new key alone opens it now.
	s = start(t, dir, cfg, k2)
	s.publish("case.status_updated")
	waitFor(t, "a delivery under the new key alone", func() bool { return r.count("") == 2 })
	s.close()
	// Without any key that opens it, the manager refuses to start and says why.
	st, _ := embedded.Open(filepath.Join(dir, "data"), embedded.Options{})
	defer st.Close()
	box, _ := seal.New([][]byte{k1})
	disp := dispatch.New(st, dispatch.Options{})
	defer disp.Shutdown(context.Background())
	m := destinations.New(destinations.Options{Store: st, Dispatcher: disp, Lanes: lanes(), Box: box})
	in := intake.New(st, disp, nil, intake.Options{})
	if err := m.Start(context.Background(), cfg, in); err == nil || !strings.Contains(err.Error(), "previous_encryption_keys") {
		t.Fatalf("Start with the wrong key: %v", err)
	}
}

// TestAutoDisableEmitsOperatorEvents: a destination whose deliveries fail (retries used up) auto_disable_after
// times in a row is disabled, its
// pending deliveries are skipped, and a destination subscribed to sluice.* receives
// sluice.delivery.failed and sluice.destination.disabled.
func TestAutoDisableEmitsOperatorEvents(t *testing.T) {
	dir := t.TempDir()
	bad, ops := newReceiver(t, 500), newReceiver(t, 204)
	s := start(t, dir, conf(t, dir, "10ms", 3, "1h", yamlDest("bad", bad.URL, "case.*"), yamlDest("ops", ops.URL, "sluice.*")))
	var ids []string
	for range 5 {
		ids = append(ids, s.publish("case.status_updated"))
	}
	waitFor(t, "sluice.destination.disabled at the operator destination", func() bool {
		return ops.count(destinations.TopicDestinationDisabled) == 1
	})
	v, err := s.mgr.Get("bad", "")
	if err != nil || v.Enabled || !strings.Contains(v.DisabledReason, "consecutive") {
		t.Fatalf("bad after auto-disable: enabled=%v reason=%q err=%v", v.Enabled, v.DisabledReason, err)
	}
	waitFor(t, "every delivery to bad to end", func() bool {
		for _, id := range ids {
			if s.statusOf(id, "bad") == store.Pending {
				return false
			}
		}
		return true
	})
	waitFor(t, "sluice.delivery.failed at the operator destination", func() bool {
		return ops.count(destinations.TopicDeliveryFailed) > 0
	})
	// The state survives a restart, and enabling over the API brings it back.
	s.close()
	s = start(t, dir, conf(t, dir, "10ms", 3, "1h", yamlDest("bad", bad.URL, "case.*"), yamlDest("ops", ops.URL, "sluice.*")))
	if v, _ := s.mgr.Get("bad", ""); v.Enabled {
		t.Fatal("auto-disabled destination came back enabled after a restart")
	}
	bad.setStatus(204)
	if _, err := s.mgr.SetEnabled(context.Background(), "bad", "", true, ""); err != nil {
		t.Fatal(err)
	}
	before := bad.count("")
	s.publish("case.status_updated")
	waitFor(t, "delivery after enabling", func() bool { return bad.count("") == before+1 })
}

// TestRotateSecretOverlap: after a rotation both secrets sign until the overlap ends, then only the new one.
func TestRotateSecretOverlap(t *testing.T) {
	dir := t.TempDir()
	r := newReceiver(t, 204)
	s := start(t, dir, conf(t, dir, "1h", 0, "1s"), bytes.Repeat([]byte{1}, 32))
	v, err := s.mgr.Create(context.Background(), []byte(fmt.Sprintf(`{"name":"rot","type":"webhook","topics":["*"],"config":{"url":%q,"secrets":[%q]}}`, r.URL, secretA)), "")
	if err != nil {
		t.Fatal(err)
	}
	_, newSecret, err := s.mgr.RotateSecret(context.Background(), v.ID, "", "")
	if err != nil || !strings.HasPrefix(newSecret, "whsec_") {
		t.Fatalf("rotate: %q %v", newSecret, err)
	}
	s.publish("case.status_updated")
	waitFor(t, "a delivery during the overlap", func() bool { return r.count("") == 1 })
	h, body := r.last()
	if sigs := strings.Fields(h.Get("webhook-signature")); len(sigs) != 2 {
		t.Fatalf("signatures during the overlap: %q", h.Get("webhook-signature"))
	}
	for _, sec := range []string{secretA, newSecret} {
		if err := webhook.VerifyStandard([]string{sec}, h, body, time.Minute); err != nil {
			t.Fatalf("a receiver holding only one of the secrets cannot verify: %v", err)
		}
	}
	waitFor(t, "the old secret to be dropped", func() bool {
		got, _ := s.mgr.Get(v.ID, "")
		return len(got.Retiring) == 0
	})
	s.publish("case.status_updated")
	waitFor(t, "a delivery after the overlap", func() bool { return r.count("") == 2 })
	h, body = r.last()
	if sigs := strings.Fields(h.Get("webhook-signature")); len(sigs) != 1 {
		t.Fatalf("signatures after the overlap: %q", h.Get("webhook-signature"))
	}
	if err := webhook.VerifyStandard([]string{secretA}, h, body, time.Minute); err == nil {
		t.Fatal("the rotated-out secret still verifies after the overlap")
	}
}

// TestPatchKeepsMaskedSecret: sending the masked secret back keeps the stored one; type and name are fixed.
func TestPatchKeepsMaskedSecret(t *testing.T) {
	dir := t.TempDir()
	r := newReceiver(t, 204)
	s := start(t, dir, conf(t, dir, "1h", 0, "1h"), bytes.Repeat([]byte{1}, 32))
	v, err := s.mgr.Create(context.Background(), []byte(fmt.Sprintf(`{"name":"p","type":"webhook","topics":["x.*"],"config":{"url":%q,"secrets":[%q]}}`, r.URL, secretA)), "")
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"topics":["case.*"],"config":{"secrets":[%q]}}`, sinks.Mask(secretA))
	if _, err := s.mgr.Patch(context.Background(), v.ID, "", []byte(patch)); err != nil {
		t.Fatal(err)
	}
	s.publish("case.status_updated")
	waitFor(t, "a delivery after the patch", func() bool { return r.count("") == 1 })
	h, body := r.last()
	if err := webhook.VerifyStandard([]string{secretA}, h, body, time.Minute); err != nil {
		t.Fatalf("the patched destination lost its secret: %v", err)
	}
	for _, bad := range []string{`{"type":"sqs"}`, `{"name":"other"}`, `{"config":{"url":"ftp://x"}}`} {
		_, err := s.mgr.Patch(context.Background(), v.ID, "", []byte(bad))
		var e *destinations.Error
		if !errors.As(err, &e) || !errors.Is(err, destinations.ErrInvalid) || e.Field == "" {
			t.Fatalf("patch %s: %v", bad, err)
		}
	}
}
