package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// The webhook sink passes the conformance suite against a verifying receiver behind a proxy that can cut it off.
func TestConformance(t *testing.T) {
	sinktest.Run(t, sinktest.Features{
		MaxBatch:       1,
		BadCredentials: true,
		Outage:         true,
		Reasons: map[string]string{
			sinktest.CaseOversized: "a webhook has no message size limit of its own; the receiver's 413 is a permanent 4xx (TestClassification)",
		},
	}, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			rc := newConformanceReceiver(t)
			proxy := sinktest.NewProxy(t, rc.Listener.Addr().String())
			s := newSink(t, "http://"+proxy.Addr()+"/hooks", nil, sinks.Env{})
			return sinktest.Target{
				Sink:  s,
				Read:  rc.read,
				Stop:  func(*testing.T) { proxy.Stop() },
				Start: func(*testing.T) { proxy.Start() },
			}
		},
		// A secret the receiver does not know: it answers 401, which is permanent.
		BadCredentials: func(t *testing.T) sinks.Sink {
			rc := newConformanceReceiver(t)
			return newSink(t, rc.URL, func(c *Config) { c.Secrets = []string{secretB} }, sinks.Env{})
		},
		CheckBody: func(t testing.TB, want *event.Event, got sinktest.Received) {
			t.Helper()
			var body struct {
				Type      string          `json:"type"`
				Timestamp string          `json:"timestamp"`
				Data      json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(got.Body, &body); err != nil {
				t.Fatalf("body %s: %v", got.Body, err)
			}
			wantData := want.Data
			if len(want.Body) > 0 {
				wantData = want.Body
			}
			if len(wantData) == 0 {
				wantData = json.RawMessage("null")
			}
			if body.Type != want.Topic || body.Timestamp != want.Time.UTC().Format(time.RFC3339Nano) ||
				string(body.Data) != string(wantData) {
				t.Errorf("body %s does not carry event %s", got.Body, want.ID)
			}
		},
		Secrets: []string{secretA, secretB},
	})
}

// conformanceReceiver verifies each request's signature (401 when it is wrong) and queues what it accepted.
type conformanceReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []sinktest.Received
}

func newConformanceReceiver(t *testing.T) *conformanceReceiver {
	rc := &conformanceReceiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := VerifyStandard([]string{secretA}, r.Header, body, 5*time.Minute); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var b struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(body, &b)
		rc.mu.Lock()
		rc.got = append(rc.got, sinktest.Received{ID: r.Header.Get(HeaderID), Topic: b.Type, Body: body})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *conformanceReceiver) read(context.Context) ([]sinktest.Received, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := rc.got
	rc.got = nil
	return out, nil
}
