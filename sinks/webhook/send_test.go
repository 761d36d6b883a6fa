package webhook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
)

// captured is one request a test receiver saw.
type captured struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// receiver records requests and answers each with answer (204 when nil).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []captured
	conns  atomic.Int32
	answer func(w http.ResponseWriter, r *http.Request)
}

func newReceiver(t testing.TB, answer func(w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, captured{r.Method, r.URL.RequestURI(), r.Header.Clone(), body})
		rc.mu.Unlock()
		if rc.answer != nil {
			rc.answer(w, r)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	rc.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			rc.conns.Add(1)
		}
	}
	rc.Start()
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []captured {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]captured(nil), rc.reqs...)
}

func (rc *receiver) last(t *testing.T) captured {
	t.Helper()
	reqs := rc.requests()
	if len(reqs) == 0 {
		t.Fatal("the receiver got no request")
	}
	return reqs[len(reqs)-1]
}

func testEvent() event.Event {
	return event.Event{
		ID:    "01936f6e-7a55-7cc6-9c2b-6f1c3a8f0a11",
		Topic: "case.status_updated",
		Time:  time.Date(2026, 1, 2, 3, 4, 5, 123000000, time.FixedZone("x", 3600)),
		Data:  json.RawMessage(`{"case": {"id": "c-1", "status": "approved", "note": "<b>&</b>"}}`),
	}
}

func newSink(t testing.TB, url string, edit func(c *Config), env sinks.Env) *Sink {
	t.Helper()
	c := NewConfig()
	c.URL = url
	c.Secrets = []string{secretA}
	if edit != nil {
		edit(c)
	}
	s, err := New(context.Background(), c, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func sendOne(t testing.TB, s *Sink, e event.Event) (sinks.Report, error) {
	t.Helper()
	var rep sinks.Report
	ctx, cancel := context.WithTimeout(sinks.WithReport(context.Background(), &rep), 10*time.Second)
	defer cancel()
	err := s.Send(ctx, []event.Event{e})
	return rep, err
}

func TestWireStandard(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL+"/hooks?token=abc", func(c *Config) {
		c.Secrets = []string{secretA, secretB}
		c.Headers = map[string]string{"Authorization": "Bearer t0k"}
	}, sinks.Env{UserAgent: "Sluice/1.2.3"})
	e := testEvent()
	before := time.Now().Unix()
	if rep, err := sendOne(t, s, e); err != nil || rep.StatusCode != 204 {
		t.Fatalf("send: %v (status %d)", err, rep.StatusCode)
	}
	got := rc.last(t)
	if got.Method != "POST" || got.Path != "/hooks?token=abc" {
		t.Fatalf("request %s %s", got.Method, got.Path)
	}
	wantBody := `{"type":"case.status_updated","timestamp":"2026-01-02T02:04:05.123Z",` +
		`"data":{"case": {"id": "c-1", "status": "approved", "note": "<b>&</b>"}}}`
	if string(got.Body) != wantBody {
		t.Fatalf("body\n got %s\nwant %s", got.Body, wantBody)
	}
	h := got.Header
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Fatalf("webhook-timestamp %q is not this attempt's unix seconds", h.Get("webhook-timestamp"))
	}
	for name, want := range map[string]string{
		"webhook-id":    e.ID,
		"content-type":  "application/json",
		"user-agent":    "Sluice/1.2.3",
		"authorization": "Bearer t0k",
	} {
		if vs := h.Values(name); len(vs) != 1 || vs[0] != want {
			t.Errorf("header %s = %q, want exactly %q", name, vs, want)
		}
	}
	sig := h.Get("webhook-signature")
	if parts := strings.Split(sig, " "); len(parts) != 2 || !strings.HasPrefix(parts[0], "v1,") ||
		!strings.HasPrefix(parts[1], "v1,") {
		t.Fatalf("webhook-signature %q: want two space-separated v1 entries", sig)
	}
	// Each secret alone verifies with the official library.
	for _, secret := range []string{secretA, secretB} {
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.Verify(got.Body, h); err != nil {
			t.Errorf("official library: %v", err)
		}
	}
	if h.Get("X-Signature") != "" {
		t.Error("standard signing also sent X-Signature")
	}
}

// The webhook-* names go on the wire in the spec's lowercase; read the raw request to see it.
func TestWireHeaderNamesLowercase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		var got []string
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
			got = append(got, strings.TrimSpace(l))
		}
		_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		lines <- got
	}()
	s := newSink(t, "http://"+ln.Addr().String()+"/", nil, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	raw := strings.Join(<-lines, "\n")
	for _, prefix := range []string{"webhook-id: ", "webhook-timestamp: ", "webhook-signature: v1,",
		"Content-Type: application/json", "User-Agent: Sluice/dev"} {
		if !strings.Contains(raw, "\n"+prefix) {
			t.Errorf("raw request lacks a line starting %q:\n%s", prefix, raw)
		}
	}
	if strings.Count(strings.ToLower(raw), "user-agent:") != 1 {
		t.Errorf("user-agent sent more than once:\n%s", raw)
	}
}

func TestWireRaw(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, func(c *Config) { c.Format = FormatRaw; c.Method = "put" }, sinks.Env{})
	e := testEvent()
	if _, err := sendOne(t, s, e); err != nil {
		t.Fatal(err)
	}
	got := rc.last(t)
	if got.Method != "PUT" || string(got.Body) != string(e.Data) {
		t.Fatalf("raw: %s %s", got.Method, got.Body)
	}
	wh, _ := standardwebhooks.NewWebhook(secretA)
	if err := wh.Verify(got.Body, got.Header); err != nil {
		t.Fatalf("raw body signature: %v", err)
	}
	e.Data = nil
	if _, err := sendOne(t, s, e); err != nil {
		t.Fatal(err)
	}
	if got := rc.last(t); string(got.Body) != "null" {
		t.Fatalf("raw body of empty data = %q, want null", got.Body)
	}
	e.Data = nil
	s2 := newSink(t, rc.URL, nil, sinks.Env{})
	if _, err := sendOne(t, s2, e); err != nil {
		t.Fatal(err)
	}
	if got := rc.last(t); !strings.HasSuffix(string(got.Body), `"data":null}`) {
		t.Fatalf("standard body of empty data = %s", got.Body)
	}
}

func TestWireHex(t *testing.T) {
	rc := newReceiver(t, nil)
	body := func(c captured) []byte { return c.Body }
	for _, tt := range []struct {
		name    string
		header  string
		secrets []string
	}{
		{"default header", "", []string{"s3cret"}},
		{"custom header, two secrets", "X-Hub-Signature-256", []string{"whsec_used-as-is", "older"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSink(t, rc.URL, func(c *Config) {
				c.Signing, c.Secrets = SigningHex, tt.secrets
				if tt.header != "" {
					c.SignatureHeader = tt.header
				}
			}, sinks.Env{})
			if _, err := sendOne(t, s, testEvent()); err != nil {
				t.Fatal(err)
			}
			got := rc.last(t)
			name := tt.header
			if name == "" {
				name = "X-Signature"
			}
			var sigs []string
			for _, sec := range tt.secrets {
				sigs = append(sigs, hexHMAC(sec, body(got)))
			}
			if want := "v0=" + strings.Join(sigs, ","); got.Header.Get(name) != want {
				t.Fatalf("%s = %q, want %q", name, got.Header.Get(name), want)
			}
			if got.Header.Get("webhook-signature") != "" {
				t.Error("hex signing also sent webhook-signature")
			}
			if got.Header.Get("webhook-id") == "" || got.Header.Get("webhook-timestamp") == "" {
				t.Error("webhook-id and webhook-timestamp are sent in every mode")
			}
		})
	}
}

func TestWireNone(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, func(c *Config) { c.Signing, c.Secrets = SigningNone, nil }, sinks.Env{})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatal(err)
	}
	h := rc.last(t).Header
	if h.Get("webhook-signature") != "" || h.Get("X-Signature") != "" {
		t.Fatalf("signing none sent a signature: %v", h)
	}
	if h.Get("webhook-id") != testEvent().ID {
		t.Fatal("webhook-id missing")
	}
}

// Every attempt is signed with its own timestamp; the id stays the event's.
func TestTimestampPerAttempt(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, nil, sinks.Env{})
	clock := time.Unix(1767323045, 0)
	s.now = func() time.Time { return clock }
	sendOne(t, s, testEvent())
	clock = clock.Add(5 * time.Minute)
	sendOne(t, s, testEvent())
	reqs := rc.requests()
	if reqs[0].Header.Get("webhook-timestamp") != "1767323045" || reqs[1].Header.Get("webhook-timestamp") != "1767323345" {
		t.Fatalf("timestamps %q %q", reqs[0].Header.Get("webhook-timestamp"), reqs[1].Header.Get("webhook-timestamp"))
	}
	if reqs[0].Header.Get("webhook-signature") == reqs[1].Header.Get("webhook-signature") ||
		reqs[0].Header.Get("webhook-id") != reqs[1].Header.Get("webhook-id") {
		t.Fatal("retry must keep the id and re-sign")
	}
	if err := VerifyStandard([]string{secretA}, reqs[1].Header, reqs[1].Body, 0); err != nil {
		t.Fatal(err)
	}
}

func TestClassification(t *testing.T) {
	var redirectTargetHit atomic.Bool
	target := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { redirectTargetHit.Store(true) })
	httpDate := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		status int
		header map[string]string
		class  sinks.Class // meaningful when !ok
		ok     bool
		after  time.Duration // expected lower bound of After (0 means exactly 0)
		msg    string
	}{
		{status: 200, ok: true},
		{status: 201, ok: true},
		{status: 204, ok: true},
		{status: 301, header: map[string]string{"Location": target.URL}, class: sinks.ClassPermanent,
			msg: "http 301: redirects are not followed"},
		{status: 302, class: sinks.ClassPermanent, msg: "http 302: redirects are not followed"},
		{status: 307, header: map[string]string{"Location": target.URL + "/next"}, class: sinks.ClassPermanent,
			msg: "redirects are not followed; update the url if"},
		{status: 400, class: sinks.ClassPermanent, msg: "http 400 Bad Request"},
		{status: 401, class: sinks.ClassPermanent, msg: "http 401 Unauthorized"},
		{status: 404, class: sinks.ClassPermanent, msg: "http 404 Not Found"},
		{status: 408, class: sinks.ClassRetryable, msg: "http 408 Request Timeout"},
		{status: 410, class: sinks.ClassGone, msg: "http 410 Gone"},
		{status: 413, class: sinks.ClassPermanent, msg: "http 413"},
		{status: 422, class: sinks.ClassPermanent, msg: "http 422"},
		{status: 425, class: sinks.ClassRetryable, msg: "http 425 Too Early"},
		{status: 429, header: map[string]string{"Retry-After": "120"}, class: sinks.ClassRetryable,
			after: 120 * time.Second, msg: "http 429 Too Many Requests (retry-after 2m0s)"},
		{status: 429, header: map[string]string{"Retry-After": httpDate}, class: sinks.ClassRetryable,
			after: 85 * time.Second, msg: "http 429"},
		{status: 429, class: sinks.ClassRetryable, msg: "http 429"},
		{status: 500, class: sinks.ClassRetryable, msg: "http 500 Internal Server Error"},
		{status: 501, class: sinks.ClassRetryable, msg: "http 501"},
		{status: 502, class: sinks.ClassRetryable, msg: "http 502"},
		{status: 503, header: map[string]string{"Retry-After": "7"}, class: sinks.ClassRetryable,
			after: 7 * time.Second, msg: "http 503 Service Unavailable"},
		{status: 504, class: sinks.ClassRetryable, msg: "http 504"},
		{status: 599, class: sinks.ClassRetryable, msg: "http 599"},
	}
	for _, tt := range tests {
		name := strconv.Itoa(tt.status)
		if ra := tt.header["Retry-After"]; ra != "" {
			name += " retry-after " + ra
		}
		t.Run(name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, "answer "+strconv.Itoa(tt.status))
			})
			s := newSink(t, rc.URL, nil, sinks.Env{})
			rep, err := sendOne(t, s, testEvent())
			if rep.StatusCode != tt.status {
				t.Errorf("report status %d, want %d", rep.StatusCode, tt.status)
			}
			if tt.status != 204 && string(rep.Response) != "answer "+strconv.Itoa(tt.status) {
				t.Errorf("report response %q", rep.Response)
			}
			if tt.ok {
				if err != nil {
					t.Fatalf("status %d: %v, want delivered", tt.status, err)
				}
				return
			}
			var se *sinks.Error
			if !errors.As(err, &se) {
				t.Fatalf("status %d: error %v is not classified", tt.status, err)
			}
			class, after := sinks.Classify(err)
			if class != tt.class {
				t.Fatalf("status %d: class %v, want %v (%v)", tt.status, class, tt.class, err)
			}
			if tt.after == 0 && after != 0 || tt.after != 0 && (after < tt.after || after > tt.after+10*time.Second) {
				t.Fatalf("status %d: after %v, want about %v", tt.status, after, tt.after)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("status %d: error %q lacks %q", tt.status, err, tt.msg)
			}
		})
	}
	if redirectTargetHit.Load() {
		t.Fatal("a redirect was followed")
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s := newSink(t, "http://"+addr+"/hooks/secret-token", nil, sinks.Env{})
	rep, err := sendOne(t, s, testEvent())
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassRetryable {
		t.Fatalf("connection refused: %v, want retryable", err)
	}
	var se *sinks.Error
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error %v: want a classified error saying connection refused", err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("error shows the URL path: %v", err)
	}
	if rep.StatusCode != 0 {
		t.Fatalf("report of a request without answer: %+v", rep)
	}
}

func TestAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	s := newSink(t, rc.URL, func(c *Config) { c.Timeout = sinks.Duration(100 * time.Millisecond) }, sinks.Env{})
	_, err := sendOne(t, s, testEvent())
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassRetryable ||
		!strings.Contains(err.Error(), "no answer within 100ms") {
		t.Fatalf("timeout: %v", err)
	}
	var se *sinks.Error
	if !errors.As(err, &se) {
		t.Fatalf("timeout error is not classified: %v", err)
	}
}

func TestCancelPassesThrough(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	s := newSink(t, rc.URL, nil, sinks.Env{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	err := s.Send(ctx, []event.Event{testEvent()})
	var se *sinks.Error
	if !errors.Is(err, context.Canceled) || errors.As(err, &se) {
		t.Fatalf("cancelled send = %v, want bare context.Canceled", err)
	}
	if err := s.Send(ctx, []event.Event{testEvent()}); err != context.Canceled {
		t.Fatalf("send on a cancelled context = %v", err)
	}
}

func TestResponseExcerptCapped(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, big)
	})
	s := newSink(t, rc.URL, nil, sinks.Env{})
	rep, err := sendOne(t, s, testEvent())
	if class, _ := sinks.Classify(err); class != sinks.ClassPermanent {
		t.Fatalf("class %v", class)
	}
	if rep.StatusCode != 400 || len(rep.Response) != 4096 || string(rep.Response) != big[:4096] {
		t.Fatalf("report status %d, %d bytes", rep.StatusCode, len(rep.Response))
	}
}

// Bodies are drained, so steady traffic to one receiver reuses one connection.
func TestConnectionReuse(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("y", 10<<10))
	})
	s := newSink(t, rc.URL, nil, sinks.Env{})
	for i := 0; i < 20; i++ {
		if _, err := sendOne(t, s, testEvent()); err != nil {
			t.Fatal(err)
		}
	}
	if n := rc.conns.Load(); n != 1 {
		t.Fatalf("20 sequential sends opened %d connections, want 1", n)
	}
}

func TestBatch(t *testing.T) {
	var n atomic.Int32
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 2 {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(204)
	})
	s := newSink(t, rc.URL, nil, sinks.Env{})
	batch := []event.Event{testEvent(), testEvent(), testEvent()}
	for i := range batch {
		batch[i].ID = "evt_" + strconv.Itoa(i)
	}
	err := s.Send(context.Background(), batch)
	var be *sinks.BatchError
	if !errors.As(err, &be) || len(be.Errs) != 3 {
		t.Fatalf("batch error %v", err)
	}
	if be.Errs[0] != nil || be.Errs[2] != nil || be.Errs[1] == nil {
		t.Fatalf("per-event errors %v", be.Errs)
	}
	if class, _ := sinks.Classify(be.Errs[1]); class != sinks.ClassRetryable {
		t.Fatalf("class %v", class)
	}
	if len(rc.requests()) != 3 {
		t.Fatalf("%d requests", len(rc.requests()))
	}
	n.Store(10)
	if err := s.Send(context.Background(), batch); err != nil {
		t.Fatalf("all delivered: %v", err)
	}
	if err := s.Send(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

// Sends share one Sink across the dispatcher's workers; -race checks the signer pools and shared headers.
func TestConcurrentSend(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, func(c *Config) {
		c.Secrets = []string{secretA, secretB}
		c.Headers = map[string]string{"X-Tenant": "acme", "User-Agent": "custom/1"}
	}, sinks.Env{})
	var wg sync.WaitGroup
	errs := make(chan error, 16*5)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				e := testEvent()
				e.ID = "evt_" + strconv.Itoa(w) + "_" + strconv.Itoa(i)
				if err := s.Send(context.Background(), []event.Event{e}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	reqs := rc.requests()
	if len(reqs) != 80 {
		t.Fatalf("%d requests, want 80", len(reqs))
	}
	for _, r := range reqs {
		if err := VerifyStandard([]string{secretB}, r.Header, r.Body, time.Minute); err != nil {
			t.Fatalf("request %s: %v", r.Header.Get("webhook-id"), err)
		}
		if r.Header.Get("User-Agent") != "custom/1" || r.Header.Get("X-Tenant") != "acme" {
			t.Fatalf("headers %v", r.Header)
		}
	}
}

// Through a guard with no allow list, every internal target fails permanently with the guard's reason, and
// none is connected: literal addresses are refused before a socket exists, names at connect time.
func TestSSRF(t *testing.T) {
	guard := netguard.New(nil)
	var dialled []string
	var mu sync.Mutex
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, address)
		mu.Unlock()
		return guard.DialContext(ctx, network, address)
	}
	tests := []struct {
		url    string
		reason string
	}{
		{"http://127.0.0.1:1/x", "address 127.0.0.1 is loopback"},
		{"http://10.0.0.1/x", "address 10.0.0.1 is private (RFC 1918)"},
		{"http://169.254.169.254/latest", "address 169.254.169.254 is a cloud metadata endpoint"},
		{"http://[::1]:1/x", "address ::1 is loopback"},
		{"http://localhost:1/x", "(resolved from localhost) is loopback"},
		{"https://10.0.0.1/x", "address 10.0.0.1 is private"},
		{"http://[::ffff:10.0.0.1]/x", "is private"},
		{"http://[fd00:ec2::254]/latest", "cloud metadata endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			s := newSink(t, tt.url, nil, sinks.Env{Dial: dial})
			start := time.Now()
			rep, err := sendOne(t, s, testEvent())
			if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent {
				t.Fatalf("%s: %v, want a permanent failure", tt.url, err)
			}
			var be *netguard.BlockedError
			if !errors.As(err, &be) {
				t.Fatalf("%s: error %v does not carry the guard's *BlockedError", tt.url, err)
			}
			for _, want := range []string{tt.reason, "prevent SSRF", "delivery.network.allow_cidrs"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("%s: error %q lacks %q", tt.url, err, want)
				}
			}
			if time.Since(start) > 2*time.Second || rep.StatusCode != 0 {
				t.Fatalf("%s: the refusal took %v / got an answer %d", tt.url, time.Since(start), rep.StatusCode)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialled) == 0 {
		t.Fatal("the guard was never asked")
	}

	// And allowing loopback lets a real loopback receiver through the same guard.
	rc := newReceiver(t, nil)
	allowed := netguard.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	s := newSink(t, rc.URL, nil, sinks.Env{Dial: allowed.DialContext})
	if _, err := sendOne(t, s, testEvent()); err != nil {
		t.Fatalf("allowed loopback: %v", err)
	}
}

func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(204)
	}))
	defer srv.Close()
	guard := netguard.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	s := newSink(b, srv.URL, nil, sinks.Env{Dial: guard.DialContext})
	batch := []event.Event{testEvent()}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Send(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// An attempt error never shows the URL's userinfo or query, whether the connection failed or the guard
// refused it.
func TestAttemptErrorHidesURLSecrets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// (userinfo is refused by Validate: auth.basic carries credentials)
	url := "http://" + addr + "/x?token=qtoken-secret&sig=hookpass-1"
	strict := netguard.NewDialer(netguard.New(nil), nil)
	for name, env := range map[string]sinks.Env{"refused connection": {}, "guard": {Network: strict}} {
		s := newSink(t, url, nil, env)
		_, err := sendOne(t, s, testEvent())
		if err == nil {
			t.Fatalf("%s: delivered", name)
		}
		for _, secret := range []string{"hookpass-1", "qtoken-secret"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the attempt error shows %q: %v", name, secret, err)
			}
		}
	}
}

// One delivery as the dispatcher makes it (the attempt's context carries the destination's timeout), in a
// fan-out: ten destinations with the same secret, each sent every event in turn. Compare with benchstat.
func BenchmarkSendFanout(b *testing.B) { benchFanout(b, testEvent()) }

// The same with 1 KiB of data, as intake hands it over (checked: event.DataChecked) and as a claim reads it back
// from the store (unchecked: each destination checks it is JSON).
func BenchmarkSendFanoutKiB(b *testing.B) {
	ev := testEvent()
	var data strings.Builder
	data.WriteString(`{"case":{"id":"c-1","status":"approved"},"items":[`)
	for i := 0; data.Len() < 1000; i++ {
		if i > 0 {
			data.WriteByte(',')
		}
		data.WriteString(`{"name":"document","kind":"passport","score":0.93,"ok":true}`)
	}
	data.WriteString(`]}`)
	ev.Data = json.RawMessage(data.String())
	b.Run("unchecked", func(b *testing.B) { benchFanout(b, ev) })
	ev.DataChecked = true
	b.Run("checked", func(b *testing.B) { benchFanout(b, ev) })
}

func benchFanout(b *testing.B, ev event.Event) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(204)
	}))
	defer srv.Close()
	guard := netguard.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	var ss []*Sink
	for range 10 {
		ss = append(ss, newSink(b, srv.URL, nil, sinks.Env{Dial: guard.DialContext, Timeout: 15 * time.Second}))
	}
	batch := []event.Event{ev}
	b.ReportAllocs()
	cpu0 := processCPU()
	i := 0
	for b.Loop() {
		if i%len(ss) == 0 {
			batch[0].ID = fmt.Sprintf("evt_%d", i)
		}
		// As the dispatcher calls it.
		ctx := sinks.NewAttempt(context.Background(), nil, time.Now().Add(15*time.Second))
		err := ss[i%len(ss)].Send(ctx, batch)
		ctx.Release()
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	// CPU time, unlike ns/op, does not grow while other processes hold the cores (the receiver's share is in
	// it too, the same on both sides of a comparison).
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A request made for a url fixed per sink is the request http.NewRequestWithContext makes: the same bytes on
// the wire, the same context, a body that can be had again for a retry, and of the kind net/http knows to be in
// memory (see newRequest).
func TestNewRequestAsNewRequestWithContext(t *testing.T) {
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, 1)
	for _, tc := range []struct{ method, url, body string }{
		{"POST", "http://127.0.0.1:9/hook?x=1", `{"a":1}`},
		{"PUT", "https://receiver.test/a%20b", "data"},
		{"POST", "http://127.0.0.1:9/", ""},
	} {
		s := newSink(t, tc.url, func(c *Config) { c.Method = tc.method }, sinks.Env{})
		ev := testEvent()
		r, err := s.route(&ev)
		if err != nil || r.parsed == nil {
			t.Fatalf("%s: route %+v, %v: want a url parsed once", tc.url, r, err)
		}
		got, err := s.newRequest(ctx, r, []byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		want, err := http.NewRequestWithContext(ctx, tc.method, tc.url, body)
		if err != nil {
			t.Fatal(err)
		}
		if got.Context() != ctx || got.ContentLength != want.ContentLength || got.Host != want.Host ||
			got.URL.String() != want.URL.String() {
			t.Errorf("%s: request %+v, want %+v", tc.url, got, want)
		}
		again, err := got.GetBody()
		if err != nil {
			t.Fatal(err)
		}
		var gotWire, wantWire strings.Builder
		got.Header, want.Header = http.Header{"X-A": {"1"}}, http.Header{"X-A": {"1"}}
		if err := got.Write(&gotWire); err != nil {
			t.Fatal(err)
		}
		if err := want.Write(&wantWire); err != nil {
			t.Fatal(err)
		}
		if gotWire.String() != wantWire.String() {
			t.Errorf("%s: on the wire\n%q\nwant\n%q", tc.url, gotWire.String(), wantWire.String())
		}
		if b, _ := io.ReadAll(again); string(b) != tc.body {
			t.Errorf("%s: GetBody after the body was sent gives %q, want %q", tc.url, b, tc.body)
		}

		// net/http's transport writes a body it knows to be in memory with the request's head.
		if tc.body == "" {
			if got.Body != http.NoBody {
				t.Errorf("%s: empty body %T, want http.NoBody", tc.url, got.Body)
			}
			continue
		}
		if fmt.Sprintf("%T", got.Body) != fmt.Sprintf("%T", io.NopCloser(bytes.NewReader(nil))) {
			t.Errorf("%s: body %T, want a NopCloser of a bytes.Reader", tc.url, got.Body)
		}
	}
}

// Data not known to be JSON is checked before it is sent, and refused for good when it is not JSON; data intake
// parsed (event.DataChecked) is sent without a second check. A transform's result is always checked: the mark
// speaks only of the data.
func TestInvalidDataIsPermanent(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSink(t, rc.URL, func(c *Config) { c.Format = FormatRaw }, sinks.Env{})
	broken := testEvent()
	broken.Data = json.RawMessage(`{"a":`)
	_, err := sendOne(t, s, broken)
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("unchecked broken data: %v, want a permanent error saying it is not JSON", err)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("%d requests for broken data", n)
	}

	trusted := broken
	trusted.DataChecked = true // intake's word, taken as given (it parsed the data)
	if _, err := sendOne(t, s, trusted); err != nil {
		t.Fatalf("checked data: %v", err)
	}
	if got := string(rc.last(t).Body); got != `{"a":` {
		t.Fatalf("sent %q, want the data as it is", got)
	}

	shaped := trusted
	shaped.Body = json.RawMessage(`[1,`)
	_, err = sendOne(t, s, shaped)
	if class, _ := sinks.Classify(err); err == nil || class != sinks.ClassPermanent {
		t.Fatalf("broken transform result on checked data: %v, want a permanent error", err)
	}
}
