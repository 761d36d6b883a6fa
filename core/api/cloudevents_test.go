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
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

type fixture struct {
	in   *intake.Intake
	srv  *Server
	st   *embedded.Store
	disp *dispatch.Dispatcher
}

// newFixture builds the API over an intake over cfgYAML.
func newFixture(t *testing.T, dir, cfgYAML string) *fixture {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(cfgYAML), func(string) (string, bool) { return "", false }, sinks.NewRegistry(webhook.Spec))
	if err != nil {
		t.Fatal(err)
	}
	st, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st}
	f.disp = dispatch.New(st, dispatch.Options{})
	var lanes []dispatch.Destination
	for _, d := range cfg.Destinations {
		lanes = append(lanes, dispatch.Destination{Name: d.Name, Sink: nopSink{}, Policy: dispatch.Policy{Timeout: time.Second}})
	}
	f.disp.Start(lanes)
	f.in = intake.New(st, f.disp, routerFor(cfg.Destinations), intake.Options{DedupeWindow: time.Hour, MaxBodyBytes: 1 << 20,
		Topics: cfg.Topics, ValidateTopics: cfg.Intake.ValidateTopics})
	f.srv = New(Options{Store: st, Intake: f.in})
	t.Cleanup(func() {
		f.in.Close()
		_ = f.disp.Shutdown(context.Background())
		f.st.Close()
	})
	return f
}

func send(h http.HandlerFunc, ct string, hdr map[string]string, body string) (*httptest.ResponseRecorder, map[string]any) {
	r := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
	if ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h(w, r)
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	return w, out
}

func errField(out map[string]any) (field, msg string) {
	e, _ := out["error"].(map[string]any)
	field, _ = e["field"].(string)
	msg, _ = e["message"].(string)
	return
}

func TestCloudEventsIn(t *testing.T) {
	f := newFixture(t, t.TempDir(), testConfig)
	ctx := context.Background()

	// Structured mode.
	w, out := send(f.srv.handleEvent, "application/cloudevents+json; charset=utf-8", nil, `{"specversion":"1.0","id":"ce-1",
		"source":"urn:crm","type":"case.status_updated","subject":"cases/c-1","time":"2026-02-03T04:05:06Z",
		"datacontenttype":"application/json","tenant":"acme","correlationid":"run-7","priority":3,
		"data":{"case":{"status":"approved"}}}`)
	if w.Code != 202 || out["id"] != "ce-1" {
		t.Fatalf("structured: %d %s", w.Code, w.Body)
	}
	rec, err := f.st.Event(ctx, "ce-1")
	if err != nil {
		t.Fatal(err)
	}
	ev := rec.Event
	if ev.Topic != "case.status_updated" || !ev.Time.Equal(time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)) || ev.Tenant != "acme" ||
		ev.CorrelationID != "run-7" || string(ev.Data) != `{"case":{"status":"approved"}}` {
		t.Fatalf("stored: %+v", ev)
	}
	want := map[string]string{intake.MetaCEID: "ce-1", intake.MetaCESource: "urn:crm", intake.MetaCESubject: "cases/c-1", intake.MetaCETime: "2026-02-03T04:05:06Z", "ce_priority": "3"}
	if fmt.Sprint(ev.Metadata) != fmt.Sprint(want) {
		t.Fatalf("metadata %v, want %v", ev.Metadata, want)
	}
	if len(rec.Deliveries) != 4 { // all, cases, approved, acme-only
		t.Fatalf("routed to %d destinations", len(rec.Deliveries))
	}

	// Binary mode; text data becomes a JSON string; a CloudEvents id that is not a Sluice id is kept in metadata.
	w, out = send(f.srv.handleEvent, "text/plain", map[string]string{"ce-specversion": "1.0", "ce-id": "has space",
		"ce-source": "/src%20x", "ce-type": "note.added"}, "hello")
	if w.Code != 202 {
		t.Fatalf("binary: %d %s", w.Code, w.Body)
	}
	rec, _ = f.st.Event(ctx, out["id"].(string))
	if rec.Event.Topic != "note.added" || string(rec.Event.Data) != `"hello"` || rec.Event.Metadata[intake.MetaCEID] != "has space" ||
		rec.Event.Metadata[intake.MetaCESource] != "/src x" || rec.Event.Metadata[intake.MetaCEContentType] != "text/plain" {
		t.Fatalf("binary stored: %+v", rec.Event)
	}
	w, _ = send(f.srv.handleEvent, "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "b2",
		"ce-source": "s", "ce-type": "x"}, `{"a":1}`)
	if rec, _ := f.st.Event(ctx, "b2"); w.Code != 202 || string(rec.Event.Data) != `{"a":1}` {
		t.Fatalf("binary json: %d %s", w.Code, w.Body)
	}

	// Batch mode, on both routes.
	batch := `[{"specversion":"1.0","id":"k1","source":"s","type":"a","data":1},{"specversion":"1.0","id":"k2","source":"s"},
		{"specversion":"1.0","id":"k3","source":"s","type":"b","data_base64":"eyJ4Ijp0cnVlfQ=="}]`
	for _, h := range []http.HandlerFunc{f.srv.handleEvent, f.srv.handleBatch} {
		w, out = send(h, "application/cloudevents-batch+json", nil, batch)
		if w.Code != 202 || out["accepted"] != 2.0 || out["rejected"] != 1.0 {
			t.Fatalf("batch: %d %s", w.Code, w.Body)
		}
		res := out["results"].([]any)
		if e := res[1].(map[string]any)["error"].(map[string]any); e["field"] != "[1].type" {
			t.Fatalf("batch error: %v", e)
		}
	}
	if rec, _ := f.st.Event(ctx, "k3"); string(rec.Event.Data) != `{"x":true}` {
		t.Fatalf("data_base64: %s", rec.Event.Data)
	}

	bad := []struct {
		name, ct string
		hdr      map[string]string
		body     string
		code     int
		field    string
	}{
		{"specversion", intake.MediaCloudEvent, nil, `{"specversion":"0.3","id":"x","source":"s","type":"t"}`, 400, "specversion"},
		{"no source", intake.MediaCloudEvent, nil, `{"specversion":"1.0","id":"x","type":"t"}`, 400, "source"},
		{"pattern type", intake.MediaCloudEvent, nil, `{"specversion":"1.0","id":"x","source":"s","type":"a.*"}`, 400, "type"},
		{"object attribute", intake.MediaCloudEvent, nil, `{"specversion":"1.0","id":"x","source":"s","type":"t","ext":{}}`, 400, "ext"},
		{"bad time", intake.MediaCloudEvent, nil, `{"specversion":"1.0","id":"x","source":"s","type":"t","time":"now"}`, 400, "time"},
		{"not an object", intake.MediaCloudEvent, nil, `[1]`, 400, ""},
		{"data and base64", intake.MediaCloudEvent, nil, `{"specversion":"1.0","id":"x","source":"s","type":"t","data":1,"data_base64":"MQ=="}`, 400, "data_base64"},
		{"binary missing type", "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s"}, `{}`, 400, "ce-type"},
		{"binary bad json", "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s", "ce-type": "t"}, `{`, 400, "data"},
		{"binary octets", "application/octet-stream", map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s", "ce-type": "t"}, "\x00", 415, "data"},
	}
	for _, c := range bad {
		w, out := send(f.srv.handleEvent, c.ct, c.hdr, c.body)
		if field, msg := errField(out); w.Code != c.code || field != c.field || msg == "" {
			t.Errorf("%s: %d %s, want %d on field %q", c.name, w.Code, w.Body, c.code, c.field)
		}
	}
}

const catalogConfig = `auth: {keys: [{name: a, key: k, role: admin}]}
intake: {validate_topics: true}
topics:
  - name: case.status_updated
    schema:
      type: object
      required: [case]
      properties:
        case: {type: object, properties: {status: {enum: [open, approved]}}}
  - name: free.form
destinations:
  - {name: all, type: webhook, topics: ["*"], config: {url: "https://example.com/a", signing: none}}
`

func TestTopicCatalogValidation(t *testing.T) {
	f := newFixture(t, t.TempDir(), catalogConfig)
	cases := []struct {
		name, ct, body string
		code           int
		field, ptr     string
	}{
		{"valid", "", `{"topic":"case.status_updated","data":{"case":{"status":"open"}}}`, 202, "", ""},
		{"no schema", "", `{"topic":"free.form","data":[1]}`, 202, "", ""},
		{"unknown topic", "", `{"topic":"case.deleted","data":{}}`, 400, "topic", ""},
		{"enum", "", `{"topic":"case.status_updated","data":{"case":{"status":"lost"}}}`, 422, "data", "/case/status"},
		{"required", "", `{"topic":"case.status_updated","data":{}}`, 422, "data", "/case"},
		{"root type", "", `{"topic":"case.status_updated","data":5}`, 422, "data", ""},
		{"cloudevent too", intake.MediaCloudEvent, `{"specversion":"1.0","id":"c","source":"s","type":"case.status_updated","data":{"case":{"status":1}}}`, 422, "data", "/case/status"},
	}
	for _, c := range cases {
		w, out := send(f.srv.handleEvent, c.ct, nil, c.body)
		if w.Code != c.code {
			t.Fatalf("%s: %d %s", c.name, w.Code, w.Body)
		}
		if c.code == 202 {
			continue
		}
		e := out["error"].(map[string]any)
		if e["field"] != c.field {
			t.Errorf("%s: field %v, want %q", c.name, e["field"], c.field)
		}
		if c.code == 422 {
			if p, ok := e["pointer"].(string); !ok || p != c.ptr || e["code"] != "schema_mismatch" {
				t.Errorf("%s: pointer %v, want %q (%v)", c.name, e["pointer"], c.ptr, e)
			}
		}
		if c.code == 400 && (e["code"] != "unknown_topic" || !strings.Contains(e["message"].(string), "case.status_updated")) {
			t.Errorf("%s: %v", c.name, e)
		}
	}
	// In a batch each event is judged on its own.
	r := httptest.NewRequest("POST", "/v1/events/batch", strings.NewReader(`{"events":[{"topic":"free.form","data":1},{"topic":"case.status_updated","data":{"case":[]}}]}`))
	w := httptest.NewRecorder()
	f.srv.handleBatch(w, r)
	if !strings.Contains(w.Body.String(), `"accepted":1`) || !strings.Contains(w.Body.String(), `"pointer":"/case"`) ||
		!strings.Contains(w.Body.String(), `"field":"events[1].data"`) {
		t.Fatalf("batch: %s", w.Body)
	}
	if got := f.in.Topics(); len(got) != 2 || got[0].CompiledSchema == nil {
		t.Fatalf("Topics(): %+v", got)
	}
}

// FuzzCloudEvents feeds arbitrary structured, batch and binary CloudEvents to intake: it must answer with a
// client error or 202, never panic, and anything accepted must be stored with the CloudEvent's type as topic.
func FuzzCloudEvents(f *testing.F) {
	f.Add(uint8(0), `{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"x":1}}`, "")
	f.Add(uint8(0), `{"specversion":"1.0","id":"a b","source":"s","type":"t","data_base64":"e30=","datacontenttype":"application/json","ext":true}`, "")
	f.Add(uint8(1), `[{"specversion":"1.0","id":"a","source":"s","type":"t"},{}]`, "")
	f.Add(uint8(2), `{"a":1}`, "application/json")
	f.Add(uint8(2), `hi`, "text/plain; charset=utf-8")
	f.Add(uint8(2), "\x00", "image/png")
	f.Add(uint8(0), `{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2026-01-01T00:00:00.5+02:00","tenant":"x","correlationid":"r"}`, "")
	in, st := newIntakeF(f)
	f.Fuzz(func(t *testing.T, mode uint8, body, ct string) {
		r := httptest.NewRequest("POST", "/v1/events", bytes.NewReader([]byte(body)))
		switch mode % 3 {
		case 0:
			r.Header.Set("Content-Type", intake.MediaCloudEvent)
		case 1:
			r.Header.Set("Content-Type", intake.MediaCloudEventBatch)
		case 2:
			r.Header.Set("Content-Type", ct)
			r.Header.Set("ce-specversion", "1.0")
			r.Header.Set("ce-id", "fz")
			r.Header.Set("ce-source", "fuzz")
			r.Header.Set("ce-type", "fuzz.bin")
		}
		w := httptest.NewRecorder()
		in.handleEvent(w, r)
		switch w.Code {
		case 202:
			var res struct {
				ID      string
				Results []struct{ ID string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			if mode%3 == 1 {
				return
			}
			rec, err := st.Event(context.Background(), res.ID)
			if err != nil {
				t.Fatalf("acknowledged but not stored: %v", err)
			}
			if mode%3 == 0 {
				var ce struct{ Type string }
				_ = json.Unmarshal([]byte(body), &ce)
				if rec.Event.Topic != ce.Type {
					t.Fatalf("topic %q, CloudEvent type %q", rec.Event.Topic, ce.Type)
				}
			}
			if !json.Valid(rec.Event.Data) {
				t.Fatalf("stored data is not JSON: %q", rec.Event.Data)
			}
		case 400, 409, 413, 415:
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
	})
}
