package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

type nopSink struct{}

func (nopSink) Send(context.Context, []event.Event) error { return nil }
func (nopSink) Close(context.Context) error               { return nil }

const testConfig = `auth: {keys: [{name: a, key: k, role: admin}]}
destinations:
  - {name: all, type: webhook, topics: ["*"], config: {url: "https://example.com/a", signing: none}}
  - {name: cases, type: webhook, topics: ["case.*"], config: {url: "https://example.com/b", signing: none}}
  - name: approved
    type: webhook
    topics: ["case.*"]
    filter: {data: {case: {status: {$in: [approved, rejected]}}}}
    config: {url: "https://example.com/c", signing: none}
  - {name: acme-only, type: webhook, tenant: acme, topics: ["*"], config: {url: "https://example.com/d", signing: none}}
  - {name: wf-1, type: webhook, scope: {workflow_definition_id: wf-1}, topics: ["*"], config: {url: "https://example.com/e", signing: none}}
`

// routerFor routes to a config's enabled destinations, as core/destinations does.
func routerFor(dests []config.Destination) *match.Router {
	var routes []match.Route
	for _, d := range dests {
		if d.IsEnabled() {
			routes = append(routes, match.Route{Name: d.Name, Topics: d.TopicsMatch, Filter: d.FilterMatch,
				Tenant: d.Tenant, Scope: d.Scope, OrderingKey: d.OrderingKey})
		}
	}
	return match.NewRouter(routes)
}

// pubFixture is the API over one intake, for the intake routes' handlers.
type pubFixture struct {
	*Server
	in *intake.Intake
}

func newPub(st store.Store, in *intake.Intake) *pubFixture {
	return &pubFixture{Server: New(Options{Store: st, Intake: in}), in: in}
}

func newIntake(t *testing.T, maxBody int64) (*pubFixture, *embedded.Store) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(testConfig), func(string) (string, bool) { return "", false },
		sinks.NewRegistry(webhook.Spec))
	if err != nil {
		t.Fatal(err)
	}
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	disp := dispatch.New(st, dispatch.Options{})
	var lanes []dispatch.Destination
	for _, d := range cfg.Destinations {
		lanes = append(lanes, dispatch.Destination{Name: d.Name, Sink: nopSink{}, Policy: dispatch.Policy{Timeout: time.Second}})
	}
	disp.Start(lanes)
	t.Cleanup(func() { _ = disp.Shutdown(context.Background()) })
	return newPub(st, intake.New(st, disp, routerFor(cfg.Destinations), intake.Options{DedupeWindow: time.Hour, MaxBodyBytes: maxBody})), st
}

func post(h http.HandlerFunc, body string) (*httptest.ResponseRecorder, map[string]any) {
	r := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h(w, r)
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return w, out
}

func TestRouting(t *testing.T) {
	in, st := newIntake(t, 1<<20)
	cases := []struct {
		body string
		want []string
	}{
		{`{"id":"r1","topic":"user.created","data":{}}`, []string{"all"}},
		{`{"id":"r2","topic":"case.status_updated","data":{"case":{"status":"approved"}}}`, []string{"all", "cases", "approved"}},
		{`{"id":"r3","topic":"case.status_updated","data":{"case":{"status":"pending"}}}`, []string{"all", "cases"}},
		{`{"id":"r4","topic":"Case.x","data":{}}`, []string{"all"}},
		{`{"id":"r5","topic":"x","tenant":"acme","data":{}}`, []string{"all", "acme-only"}},
		{`{"id":"r6","topic":"x","tenant":"other","data":{}}`, []string{"all"}},
		{`{"id":"r7","topic":"x","scope":{"workflow_definition_id":"wf-1","run":"9"},"data":{}}`, []string{"all", "wf-1"}},
		{`{"id":"r8","topic":"x","scope":{"workflow_definition_id":"wf-2"},"data":{}}`, []string{"all"}},
	}
	for _, c := range cases {
		w, out := post(in.handleEvent, c.body)
		if w.Code != 202 {
			t.Fatalf("%s: %d %s", c.body, w.Code, w.Body)
		}
		if int(out["deliveries"].(float64)) != len(c.want) {
			t.Errorf("%s: %v deliveries, want %v", c.body, out["deliveries"], c.want)
		}
		rec, err := st.Event(context.Background(), out["id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range rec.Deliveries {
			got = append(got, d.Destination)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: routed to %v, want %v", c.body, got, c.want)
		}
	}
}

func TestHandleEventAnswers(t *testing.T) {
	in, st := newIntake(t, 512)
	cases := []struct {
		name, body string
		code       int
		field, msg string
	}{
		{"ok with generated id", `{"topic":"case.created","data":{"a":1}}`, 202, "", ""},
		{"malformed", `{"topic":`, 400, "", "malformed JSON"},
		{"not json", `hello`, 400, "", "malformed JSON"},
		{"empty", ``, 400, "", "empty"},
		{"missing topic", `{"data":{}}`, 400, "topic", "is required"},
		{"topic not string", `{"topic":5,"data":{}}`, 400, "topic", "must be a string"},
		{"pattern topic", `{"topic":"case.*","data":{}}`, 400, "topic", "no spaces or '*'"},
		{"missing data", `{"topic":"a"}`, 400, "data", "is required"},
		{"unknown field", `{"topic":"a","data":{},"colour":1}`, 400, "colour", "unknown field"},
		{"bad time", `{"topic":"a","data":{},"time":"yesterday"}`, 400, "time", "RFC 3339"},
		{"metadata not strings", `{"topic":"a","data":{},"metadata":{"a":1}}`, 400, "metadata", "an object of string values"},
		{"bad id", `{"id":"has space","topic":"a","data":{}}`, 400, "id", "printable"},
		{"two objects", `{"topic":"a","data":{}} {}`, 400, "", "single JSON object"},
		{"too large", `{"topic":"a","data":"` + strings.Repeat("x", 600) + `"}`, 413, "", "max_body_bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, out := post(in.handleEvent, c.body)
			if w.Code != c.code {
				t.Fatalf("status %d, want %d: %s", w.Code, c.code, w.Body)
			}
			if c.code == 202 {
				if _, err := st.Event(context.Background(), out["id"].(string)); err != nil {
					t.Fatalf("acknowledged event is not stored: %v", err)
				}
				if out["duplicate"] != false {
					t.Fatalf("duplicate must be false: %v", out)
				}
				return
			}
			e := out["error"].(map[string]any)
			if f, _ := e["field"].(string); f != c.field {
				t.Errorf("field %q, want %q (%v)", f, c.field, e)
			}
			if !strings.Contains(e["message"].(string), c.msg) {
				t.Errorf("message %q lacks %q", e["message"], c.msg)
			}
		})
	}
}

func TestDuplicate(t *testing.T) {
	in, _ := newIntake(t, 1<<20)
	body := `{"id":"same","topic":"case.created","data":{}}`
	_, first := post(in.handleEvent, body)
	w, second := post(in.handleEvent, body)
	if w.Code != 202 || first["duplicate"] != false || second["duplicate"] != true || second["deliveries"] != first["deliveries"] {
		t.Fatalf("first %v, second %d %v", first, w.Code, second)
	}
}

func TestBatch(t *testing.T) {
	in, st := newIntake(t, 1<<20)
	body := `{"events":[{"id":"b1","topic":"a","data":{}},{"topic":""},{"id":"b1","topic":"a","data":{}},{"id":"b3","topic":"case.x","data":1}, 7]}`
	r := httptest.NewRequest("POST", "/v1/events/batch", strings.NewReader(body))
	w := httptest.NewRecorder()
	in.handleBatch(w, r)
	if w.Code != 202 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	var out struct {
		Accepted, Rejected int
		Results            []struct {
			Status     int
			ID         string
			Duplicate  bool
			Deliveries int
			Error      *problem
		}
	}
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Accepted != 3 || out.Rejected != 2 || len(out.Results) != 5 {
		t.Fatalf("%s", w.Body)
	}
	if out.Results[1].Status != 400 || out.Results[1].Error.Field != "events[1].topic" {
		t.Fatalf("result 1: %+v", out.Results[1])
	}
	if !out.Results[2].Duplicate || out.Results[0].Duplicate {
		t.Fatalf("the repeated id in one batch must be a duplicate: %s", w.Body)
	}
	if out.Results[4].Status != 400 || out.Results[4].Error.Field != "events[4]" {
		t.Fatalf("result 4: %+v", out.Results[4])
	}
	if _, err := st.Event(context.Background(), "b3"); err != nil {
		t.Fatal(err)
	}

	w = httptest.NewRecorder()
	in.handleBatch(w, httptest.NewRequest("POST", "/v1/events/batch", strings.NewReader(`{"events":[]}`)))
	if w.Code != 400 {
		t.Fatalf("empty batch: %d", w.Code)
	}
}

func TestTenantKeyConfinesEvents(t *testing.T) {
	in, _ := newIntake(t, 1<<20)
	req := func(body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
		r = r.WithContext(intake.WithTenant(r.Context(), "acme"))
		w := httptest.NewRecorder()
		in.handleEvent(w, r)
		return w
	}
	if w := req(`{"topic":"x","data":{}}`); w.Code != 202 || !strings.Contains(w.Body.String(), `"deliveries":2`) {
		t.Fatalf("tenant key's event must take its tenant (reaching acme-only): %d %s", w.Code, w.Body)
	}
	if w := req(`{"topic":"x","tenant":"globex","data":{}}`); w.Code != 403 {
		t.Fatalf("publishing for another tenant: %d %s", w.Code, w.Body)
	}
}

func TestClosedIntakeAnswers503(t *testing.T) {
	in, _ := newIntake(t, 1<<20)
	in.in.Close()
	w, _ := post(in.handleEvent, `{"topic":"a","data":{}}`)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
}

// FuzzDecodeEvent feeds arbitrary bodies to the intake handler: it must answer 202, 400 or 413, never panic,
// and anything it acknowledged must be stored.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{`{"topic":"a","data":{}}`, `{"id":"x","topic":"case.x","data":[1,2],"metadata":{"k":"v"},"time":"2026-01-01T00:00:00Z"}`,
		`{"topic":null}`, `[]`, `{"topic":"a","data":{},"scope":{"a":"b"},"tenant":"t"}`, "\x00"} {
		f.Add([]byte(s))
	}
	in, st := newIntakeF(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/v1/events", bytes.NewReader(body))
		w := httptest.NewRecorder()
		in.handleEvent(w, r)
		switch w.Code {
		case 202:
			var out intake.Result
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Event(context.Background(), out.ID); err != nil {
				t.Fatalf("acknowledged but not stored: %v", err)
			}
		case 400, 409, 413:
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
	})
}

func newIntakeF(f *testing.F) (*pubFixture, store.Store) {
	cfg, err := config.Parse("t.yaml", []byte(testConfig), func(string) (string, bool) { return "", false },
		sinks.NewRegistry(webhook.Spec))
	if err != nil {
		f.Fatal(err)
	}
	st, err := embedded.Open(f.TempDir(), embedded.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	return newPub(st, intake.New(st, dispatch.New(st, dispatch.Options{}), routerFor(cfg.Destinations), intake.Options{DedupeWindow: time.Hour, MaxBodyBytes: 4096})), st
}
