package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// capture is a loopback webhook receiver that keeps every request's headers and body by webhook-id.
type capture struct {
	addr string
	mu   sync.Mutex
	got  map[string]capturedReq
}

type capturedReq struct {
	header http.Header
	body   []byte
}

func newCapture(t *testing.T) *capture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{addr: ln.Addr().String(), got: map[string]capturedReq{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.got[r.Header.Get("webhook-id")] = capturedReq{r.Header.Clone(), b}
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

func (c *capture) get(id string) (capturedReq, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.got[id]
	return r, ok
}

// TestRoutingThroughTheGateway runs the real binary with a topic catalog, transforms, CloudEvents output and
// per-run subscriptions, including a SIGKILL and restart that the subscription must survive.
func TestRoutingThroughTheGateway(t *testing.T) {
	dir := t.TempDir()
	raw, ce, run := newCapture(t), newCapture(t), newCapture(t)
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`server: {listen: %s}
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store: {path: %s}
intake:
  validate_topics: true
  inline_subscriptions: {enabled: true, ttl: 1h, max_per_correlation: 3, allow_cidrs: [127.0.0.0/8]}
delivery:
  retry: {schedule: [100ms, 200ms], jitter: 0.1}
  network: {allow_cidrs: [127.0.0.0/8]}
telemetry:
  log: {level: warn}
topics:
  - name: case.status_updated
    description: A case moved.
    schema:
      type: object
      required: [case]
      properties:
        case:
          type: object
          properties: {status: {enum: [open, approved]}, n: {type: number}}
    example: {case: {id: c-1, status: approved}}
destinations:
  - name: shaped
    type: webhook
    topics: ["case.*"]
    transform: "{case_id: data.case.id, status: data.case.status, len: length(data.case.id)}"
    config: {url: "http://%s/raw", format: raw, signing: none}
  - name: cloud
    type: webhook
    topics: ["case.*"]
    config: {url: "http://%s/ce", format: cloudevents, secrets: ["%s"]}
`, addr, filepath.Join(dir, "data"), raw.addr, ce.addr, e2eSecret)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(dir, "sluice.log"))
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(sluiceBinary(t), "serve", "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "sluice ready", func() bool {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	t.Cleanup(func() {
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sluice log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	call := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, "http://"+addr+path, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer e2e-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	start()

	// The catalog is served and enforced.
	code, out := call("GET", "/v1/topics", "")
	topics, _ := out["data"].([]any)
	if code != 200 || len(topics) != 1 || topics[0].(map[string]any)["schema"] == nil || topics[0].(map[string]any)["example"] == nil {
		t.Fatalf("GET /v1/topics: %d %v", code, out)
	}
	if code, out := call("POST", "/v1/events", `{"topic":"case.unknown","data":{}}`); code != 400 {
		t.Fatalf("unknown topic: %d %v", code, out)
	}
	code, out = call("POST", "/v1/events", `{"topic":"case.status_updated","data":{"case":{"status":"lost"}}}`)
	if e, _ := out["error"].(map[string]any); code != 422 || e["pointer"] != "/case/status" {
		t.Fatalf("schema violation: %d %v", code, out)
	}

	// A transform shapes the raw body; the CloudEvents destination gets binary mode; a subscription registers.
	code, out = call("POST", "/v1/events", `{"id":"e-1","topic":"case.status_updated","correlation_id":"run-1",
		"data":{"case":{"id":"c-1","status":"approved"}},
		"subscriptions":[{"url":"http://`+run.addr+`/run","topics":["case.*"]}]}`)
	if code != 202 || out["deliveries"] != 3.0 {
		t.Fatalf("publish: %d %v", code, out)
	}
	waitFor(t, "e-1 at all three receivers", func() bool {
		_, a := raw.get("e-1")
		_, b := ce.get("e-1")
		_, c := run.get("e-1")
		return a && b && c
	})
	if r, _ := raw.get("e-1"); string(r.body) != `{"case_id":"c-1","len":3,"status":"approved"}` {
		t.Fatalf("transformed raw body: %s", r.body)
	}
	if r, _ := ce.get("e-1"); r.header.Get("ce-type") != "case.status_updated" || r.header.Get("ce-source") != "sluice" ||
		r.header.Get("ce-specversion") != "1.0" || string(r.body) != `{"case":{"id":"c-1","status":"approved"}}` {
		t.Fatalf("cloudevents request: %v %s", r.header, r.body)
	}

	// A transform that fails at runtime fails that delivery permanently, with the reason recorded.
	if code, out := call("POST", "/v1/events", `{"id":"e-2","topic":"case.status_updated","data":{"case":{"id":5,"status":"open"}}}`); code != 202 {
		t.Fatalf("publish e-2: %d %v", code, out)
	}
	waitFor(t, "e-2's shaped delivery failed with the transform's reason", func() bool {
		_, ev := call("GET", "/v1/events/e-2", "")
		for _, d := range ev["deliveries"].([]any) {
			dm := d.(map[string]any)
			if dm["destination"].(map[string]any)["name"] == "shaped" {
				return dm["status"] == "failed" && strings.Contains(fmt.Sprint(dm["last_error"], dm["attempts"]), "transform")
			}
		}
		return false
	})

	// The subscription survives SIGKILL: a later event of the run reaches it after the restart.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	cmd = nil
	start()
	if code, out := call("POST", "/v1/events", `{"id":"e-3","topic":"case.status_updated","correlation_id":"run-1","data":{"case":{"id":"c-1","status":"open"}}}`); code != 202 || out["deliveries"] != 3.0 {
		t.Fatalf("publish e-3: %d %v", code, out)
	}
	waitFor(t, "e-3 at the restored subscription", func() bool { _, ok := run.get("e-3"); return ok })
	if code, out := call("POST", "/v1/events", `{"id":"e-4","topic":"case.status_updated","correlation_id":"run-2","data":{"case":{"id":"c-2","status":"open"}}}`); code != 202 || out["deliveries"] != 2.0 {
		t.Fatalf("another run must not reach the subscription: %d %v", code, out)
	}
}
