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
	t.Run("single", func(t *testing.T) { conformance(t, false) })
	t.Run("batched", func(t *testing.T) { conformance(t, true) })
}

func conformance(t *testing.T, batched bool) {
	maxBatch := 1
	var edit func(c *Config)
	if batched {
		maxBatch = 10
		edit = func(c *Config) { c.Batch = &Batch{MaxEvents: 10} }
	}
	sinktest.Run(t, sinktest.Features{
		MaxBatch:       maxBatch,
		BadCredentials: true,
		Outage:         true,
		Reasons: map[string]string{
			sinktest.CaseOversized: "a webhook has no message size limit of its own; the receiver's 413 is a permanent 4xx (TestClassification)",
		},
	}, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			rc := newConformanceReceiver(t)
			proxy := sinktest.NewProxy(t, rc.Listener.Addr().String())
			s := newSink(t, "http://"+proxy.Addr()+"/hooks", edit, sinks.Env{})
			return sinktest.Target{
				Sink:  s,
				Read:  rc.read,
				Stop:  func(*testing.T) { proxy.Stop() },
				Start: func(*testing.T) { proxy.Start() },
			}
		},
		// The receiver refuses a poisoned event in its 207 answer (batched) or with a 400 (single).
		Poison: func(ev *event.Event) { ev.Data = json.RawMessage(`{"poison":true}`) },
		// A secret the receiver does not know: it answers 401, which is permanent.
		BadCredentials: func(t *testing.T) sinks.Sink {
			rc := newConformanceReceiver(t)
			return newSink(t, rc.URL, func(c *Config) {
				if edit != nil {
					edit(c)
				}
				c.Secrets = []string{secretB}
			}, sinks.Env{})
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
		type elem struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Data struct {
				Poison bool `json:"poison"`
			} `json:"data"`
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		var elems []json.RawMessage
		if json.Unmarshal(body, &elems) == nil {
			// A batch: each element is one event, carrying its id; poisoned ones are refused in a 207.
			var res BatchResults
			for _, el := range elems {
				var b elem
				_ = json.Unmarshal(el, &b)
				if b.Data.Poison {
					res.Results = append(res.Results, BatchResult{ID: b.ID, Status: http.StatusBadRequest})
					continue
				}
				res.Results = append(res.Results, BatchResult{ID: b.ID, Status: http.StatusOK})
				rc.got = append(rc.got, sinktest.Received{ID: b.ID, Topic: b.Type, Body: el})
			}
			w.WriteHeader(http.StatusMultiStatus)
			_ = json.NewEncoder(w).Encode(res)
			return
		}
		var b elem
		_ = json.Unmarshal(body, &b)
		if b.Data.Poison {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rc.got = append(rc.got, sinktest.Received{ID: r.Header.Get(HeaderID), Topic: b.Type, Body: body})
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
