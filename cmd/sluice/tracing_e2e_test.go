package main

import (
	"bytes"
	"encoding/hex"
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

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is what the stand-in collector keeps of a span.
type otlpSpan struct {
	name, traceID, spanID, parentID string
}

// otlpCollector is a small OTLP/HTTP trace receiver on loopback: POST /v1/traces with a protobuf
// ExportTraceServiceRequest, as the real binary's exporter sends.
type otlpCollector struct {
	addr  string
	mu    sync.Mutex
	spans []otlpSpan
}

func newOTLPCollector(t *testing.T) *otlpCollector {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &otlpCollector{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, otlpSpan{s.Name, hex.EncodeToString(s.TraceId), hex.EncodeToString(s.SpanId),
						hex.EncodeToString(s.ParentSpanId)})
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

func (c *otlpCollector) find(name, traceID string) (otlpSpan, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.spans {
		if s.name == name && s.traceID == traceID {
			return s, true
		}
	}
	return otlpSpan{}, false
}

// TestTraceSpansPublisherSluiceReceiver runs the real binary with OTEL_EXPORTER_OTLP_ENDPOINT set: an event
// published with a traceparent reaches the receiver with a traceparent of the same trace, whose parent is the
// attempt span the collector received; a batched destination on the same config loads and delivers an array.
func TestTraceSpansPublisherSluiceReceiver(t *testing.T) {
	dir := t.TempDir()
	hooks, batched := newCapture(t), newCapture(t)
	collector := newOTLPCollector(t)
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`server: {listen: %s}
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store: {path: %s}
delivery:
  network: {allow_cidrs: [127.0.0.0/8]}
telemetry:
  log: {level: warn}
destinations:
  - name: traced
    type: webhook
    topics: ["case.*"]
    config: {url: "http://%s/hooks/{tenant:-none}", secrets: ["%s"], headers: {X-Case: "{data.case.id}"}}
  - name: batched
    type: webhook
    topics: ["case.*"]
    config: {url: "http://%s/batch", secrets: ["%s"], batch: {max_events: 10, max_bytes: 1MB, max_wait: 50ms}}
`, addr, filepath.Join(dir, "data"), hooks.addr, e2eSecret, batched.addr, e2eSecret)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(dir, "sluice.log"))
	cmd := exec.Command(sluiceBinary(t), "serve", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+collector.addr, "OTEL_BSP_SCHEDULE_DELAY=50",
		"OTEL_TRACES_EXPORTER=", "OTEL_SDK_DISABLED=")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sluice log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	waitFor(t, "sluice ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const publisherSpan = "00f067aa0ba902b7"
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/events",
		bytes.NewReader([]byte(`{"id":"traced-1","topic":"case.created","data":{"case":{"id":"c-9"}}}`)))
	req.Header.Set("Authorization", "Bearer e2e-key")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+publisherSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %d", resp.StatusCode)
	}

	var got capturedReq
	waitFor(t, "the receiver to get the event", func() bool {
		var ok bool
		got, ok = hooks.get("traced-1")
		return ok
	})
	parts := strings.Split(got.header.Get("traceparent"), "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == publisherSpan {
		t.Fatalf("receiver's traceparent %q: want trace %s with Sluice's attempt span as parent", got.header.Get("traceparent"), traceID)
	}
	if got.header.Get("X-Case") != "c-9" {
		t.Fatalf("templated header X-Case %q", got.header.Get("X-Case"))
	}
	var attempt otlpSpan
	waitFor(t, "the collector to get the attempt and publish spans", func() bool {
		a, ok1 := collector.find("sluice.webhook.attempt", traceID)
		_, ok2 := collector.find("sluice.publish", traceID)
		_, ok3 := collector.find("sluice.store.commit", traceID)
		attempt = a
		return ok1 && ok2 && ok3 && a.spanID == parts[2]
	})
	if attempt.parentID != publisherSpan {
		t.Fatalf("attempt span's parent %s, want the publisher's %s", attempt.parentID, publisherSpan)
	}

	waitFor(t, "the batched receiver to get an array", func() bool {
		batched.mu.Lock()
		defer batched.mu.Unlock()
		for id, r := range batched.got {
			var elems []map[string]any
			if strings.HasPrefix(id, "batch_") && json.Unmarshal(r.body, &elems) == nil && len(elems) == 1 && elems[0]["id"] == "traced-1" {
				return true
			}
		}
		return false
	})
}
