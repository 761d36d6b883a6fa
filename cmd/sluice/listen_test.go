package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// listenBuffer is an io.Writer the test can read while runListen writes to it.
type listenBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *listenBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *listenBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor polls until the output contains want.
func (w *listenBuffer) waitFor(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := w.String(); strings.Contains(s, want) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("output never contained %q:\n%s", want, w.String())
	return ""
}

// startListen runs `sluice listen` on a free port and returns its base URL and output. The listener stops,
// and runListen's exit code is checked, when the test ends.
func startListen(t *testing.T, args ...string) (string, *listenBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &listenBuffer{}, &listenBuffer{}
	done := make(chan int, 1)
	go func() { done <- runListen(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("runListen exited %d; stderr:\n%s", code, stderr)
			}
		case <-time.After(5 * time.Second):
			t.Error("runListen did not stop after cancellation")
		}
	})
	out := stdout.waitFor(t, "\n")
	first, _, _ := strings.Cut(out, "\n")
	base, ok := strings.CutPrefix(first, "listening on ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") || strings.HasSuffix(base, ":0") {
		t.Fatalf("first line %q: want listening on http://ADDR with the real port", first)
	}
	return base, stdout
}

func post(t *testing.T, url string, header http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func standardHeaders(t *testing.T, secrets []string, id, body string) http.Header {
	t.Helper()
	ts := time.Now().Unix()
	sig, err := webhook.SignStandard(secrets, id, ts, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return http.Header{"webhook-id": {id}, "webhook-timestamp": {strconv.FormatInt(ts, 10)},
		"webhook-signature": {sig}, "Content-Type": {"application/json"}}
}

func TestListenUnsigned(t *testing.T) {
	base, out := startListen(t)
	resp, _ := post(t, base+"/hooks?x=1", http.Header{"webhook-id": {"evt_1"}}, `{"a":1,"b":[true]}`)
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := out.waitFor(t, "→ 204")
	for _, want := range []string{"not verifying signatures", "POST /hooks?x=1", "webhook-id=evt_1",
		"not verified (no --secret)", "{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestListenStandard(t *testing.T) {
	a, _ := webhook.NewSecret()
	b, _ := webhook.NewSecret()
	other, _ := webhook.NewSecret()
	base, out := startListen(t, "--secret", a+","+b)
	body := `{"type":"case.created","timestamp":"2026-01-02T03:04:05Z","data":{}}`

	resp, _ := post(t, base+"/ok", standardHeaders(t, []string{b}, "evt_ok", body), body)
	if resp.StatusCode != 204 {
		t.Fatalf("signed with the second secret: status %d", resp.StatusCode)
	}
	out.waitFor(t, "✓ verified (standard webhooks, secret 2 of 2)  → 204")

	resp, text := post(t, base+"/bad", standardHeaders(t, []string{other}, "evt_bad", body), body)
	if resp.StatusCode != 401 || !strings.Contains(text, "no matching signature") {
		t.Fatalf("wrong secret: status %d %q", resp.StatusCode, text)
	}
	out.waitFor(t, "webhook-id=evt_bad  ✗ no matching signature")

	h := standardHeaders(t, []string{a}, "evt_old", body)
	h["webhook-timestamp"] = []string{strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)}
	resp, _ = post(t, base+"/old", h, body)
	if resp.StatusCode != 401 {
		t.Fatalf("old timestamp: status %d", resp.StatusCode)
	}
	out.waitFor(t, "✗ timestamp too old")

	resp, _ = post(t, base+"/unsigned", nil, body)
	if resp.StatusCode != 401 {
		t.Fatalf("unsigned: status %d", resp.StatusCode)
	}
	out.waitFor(t, "✗ unsigned: no webhook-signature or X-Signature header")
}

func TestListenHex(t *testing.T) {
	base, out := startListen(t, "--secret", "plain-one", "--secret", "plain-two", "--signature-header",
		"X-Hub-Signature", "--status", "200")
	body := `{"n":1}`
	resp, _ := post(t, base+"/", http.Header{"X-Hub-Signature": {webhook.SignHex([]string{"plain-two"},
		[]byte(body))}}, body)
	if resp.StatusCode != 200 {
		t.Fatalf("hex: status %d", resp.StatusCode)
	}
	out.waitFor(t, "✓ verified (X-Hub-Signature hmac-sha256-hex, secret 2 of 2)  → 200")

	resp, _ = post(t, base+"/", http.Header{"X-Hub-Signature": {webhook.SignHex([]string{"nope"},
		[]byte(body))}}, body)
	if resp.StatusCode != 401 {
		t.Fatalf("wrong hex secret: status %d", resp.StatusCode)
	}
	out.waitFor(t, "✗ no matching signature")
}

func TestListenFailFirst(t *testing.T) {
	base, out := startListen(t, "--fail-first", "2", "--retry-after", "7", "--status", "202", "--quiet")
	answers := func(id string) []string {
		var got []string
		for i := 0; i < 3; i++ {
			resp, _ := post(t, base+"/", http.Header{"webhook-id": {id}}, `{}`)
			got = append(got, strconv.Itoa(resp.StatusCode)+" "+resp.Header.Get("Retry-After"))
		}
		return got
	}
	want := []string{"503 7", "503 7", "202 "}
	for _, id := range []string{"evt_a", "evt_b"} {
		if got := answers(id); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%s answers %q, want %q", id, got, want)
		}
	}
	got := out.waitFor(t, "webhook-id=evt_b  – not verified (no --secret)  → 202 (attempt 3)")
	if !strings.Contains(got, "→ 503 (attempt 1, failing 1 of 2)") {
		t.Fatalf("output:\n%s", got)
	}
	if strings.Contains(got, "{}") {
		t.Fatalf("--quiet printed a body:\n%s", got)
	}
}

// The webhook sink against the listener: the first attempt is told to come back later, the second is
// verified and delivered. This is the local loop `sluice listen` exists for.
func TestListenReceivesFromSink(t *testing.T) {
	secret, _ := webhook.NewSecret()
	base, out := startListen(t, "--secret", secret, "--fail-first", "1", "--retry-after", "3")
	cfg := webhook.NewConfig()
	cfg.URL = base + "/hooks"
	cfg.Secrets = []string{secret}
	s, err := webhook.New(context.Background(), cfg, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	e := event.Event{ID: "evt_sink", Topic: "case.created", Time: time.Now(), Data: json.RawMessage(`{"k":"v"}`)}

	var rep sinks.Report
	err = s.Send(sinks.WithReport(context.Background(), &rep), []event.Event{e})
	if class, after := sinks.Classify(err); err == nil || class != sinks.ClassRetryable || after != 3*time.Second {
		t.Fatalf("first attempt: %v (class %v, after %v)", err, class, after)
	}
	if rep.StatusCode != 503 || !strings.Contains(string(rep.Response), "fail-first") {
		t.Fatalf("report %d %q", rep.StatusCode, rep.Response)
	}
	if err := s.Send(context.Background(), []event.Event{e}); err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	got := out.waitFor(t, "→ 204 (attempt 2)")
	if !strings.Contains(got, "webhook-id=evt_sink  ✓ verified (standard webhooks, secret 1 of 1)  → 204") ||
		!strings.Contains(got, `"type": "case.created"`) {
		t.Fatalf("output:\n%s", got)
	}
}

func TestListenBodyPrinting(t *testing.T) {
	base, out := startListen(t)
	post(t, base+"/esc", http.Header{"webhook-id": {"evt_esc"}}, "plain \x1b]0;pwned\x07 text\nline two")
	got := out.waitFor(t, "line two")
	if strings.ContainsAny(got, "\x1b\x07") || !strings.Contains(got, `plain \u001b]0;pwned\u0007 text`) {
		t.Fatalf("control characters reached the terminal:\n%q", got)
	}

	big := `{"k":"` + strings.Repeat("z", 70<<10) + `"}`
	post(t, base+"/big", http.Header{"webhook-id": {"evt_big"}}, big)
	got = out.waitFor(t, "more bytes not shown")
	if !strings.Contains(got, "… ("+strconv.Itoa(len(big)-64<<10)+" more bytes not shown)") {
		t.Fatalf("truncation note missing:\n%s", got[len(got)-200:])
	}

	post(t, base+"/bin", http.Header{"webhook-id": {"evt_bin"}}, "\xff\xfe\x00binary")
	out.waitFor(t, "(9 bytes, not text)")
	post(t, base+"/empty", http.Header{"webhook-id": {"evt_empty"}}, "")
	out.waitFor(t, "(empty body)")
}

func TestListenBadFlags(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"--status", "42"},
		{"--status", "600"},
		{"--fail-first", "-1"},
		{"--retry-after", "-3"},
		{"--nope"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runListen(ctx, args, &stdout, &stderr); code != 2 || stderr.Len() == 0 {
			t.Errorf("runListen(%q) = %d, stderr %q; want 2 with a message", args, code, stderr.String())
		}
	}

	// An address in use is an error at startup, not a hang.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stdout, stderr bytes.Buffer
	if code := runListen(ctx, []string{"--addr", ln.Addr().String()}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("address in use: %d %q", code, stderr.String())
	}

	var out bytes.Buffer
	if code := runListen(ctx, []string{"-h"}, &out, &out); code != 0 || !strings.Contains(out.String(), "--fail-first") &&
		!strings.Contains(out.String(), "-fail-first") {
		t.Errorf("-h: %d %q", code, out.String())
	}
}

func TestListenWarnsAboutBadWhsec(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &listenBuffer{}, &listenBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- runListen(ctx, []string{"--addr", "127.0.0.1:0", "--secret", "whsec_tooshort"}, stdout, stderr)
	}()
	stdout.waitFor(t, "listening on")
	cancel()
	<-done
	if got := stderr.String(); !strings.Contains(got, "--secret 1:") || strings.Contains(got, "tooshort") {
		t.Fatalf("stderr %q: want a warning naming the secret by position, not by value", got)
	}
}
