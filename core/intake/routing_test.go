package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// recSink records what it was sent.
type recSink struct {
	mu  sync.Mutex
	got []event.Event
}

func (s *recSink) Send(_ context.Context, b []event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, b...)
	return nil
}
func (s *recSink) Close(context.Context) error { return nil }

func (s *recSink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.got {
		out = append(out, e.ID)
	}
	return out
}

type fixture struct {
	in    *Intake
	st    *embedded.Store
	disp  *dispatch.Dispatcher
	clock atomic.Int64 // unix nanos
	sinks sync.Map     // inline destination name → *recSink
	opts  Options
	once  sync.Once
}

// stop shuts the fixture down once (Dispatcher.Shutdown may not be called twice).
func (f *fixture) stop() {
	f.once.Do(func() {
		f.in.Close()
		_ = f.disp.Shutdown(context.Background())
		f.st.Close()
	})
}

// newFixture builds an intake over cfgYAML; tweak adjusts its options (inline subscriptions, catalog).
func newFixture(t *testing.T, dir, cfgYAML string, tweak func(*Options)) *fixture {
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
	f.clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, f.clock.Load()).UTC() }
	f.disp = dispatch.New(st, dispatch.Options{})
	var lanes []dispatch.Destination
	for _, d := range cfg.Destinations {
		lanes = append(lanes, dispatch.Destination{Name: d.Name, Sink: nopSink{}, Policy: dispatch.Policy{Timeout: time.Second}})
	}
	f.disp.Start(lanes)
	f.opts = Options{DedupeWindow: time.Hour, MaxBodyBytes: 1 << 20, Now: now, Topics: cfg.Topics, ValidateTopics: cfg.Intake.ValidateTopics,
		Inline: InlineOptions{TTL: time.Hour, MaxPerCorrelation: 2, Policy: dispatch.Policy{Timeout: time.Second},
			NewSink: func(sub store.Subscription) (sinks.Sink, error) {
				if strings.Contains(sub.URL, "bad") {
					return nil, errors.New("url: refused by the test")
				}
				s := &recSink{}
				f.sinks.Store(sub.Name, s)
				return s, nil
			}}}
	if tweak != nil {
		tweak(&f.opts)
	}
	f.in = New(st, f.disp, routerFor(cfg.Destinations), f.opts)
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) sink(name string) *recSink {
	s, _ := f.sinks.Load(name)
	r, _ := s.(*recSink)
	return r
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
	f := newFixture(t, t.TempDir(), testConfig, nil)
	ctx := context.Background()

	// Structured mode.
	w, out := send(f.in.HandleEvent, "application/cloudevents+json; charset=utf-8", nil, `{"specversion":"1.0","id":"ce-1",
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
	want := map[string]string{MetaCEID: "ce-1", MetaCESource: "urn:crm", MetaCESubject: "cases/c-1", MetaCETime: "2026-02-03T04:05:06Z", "ce_priority": "3"}
	if fmt.Sprint(ev.Metadata) != fmt.Sprint(want) {
		t.Fatalf("metadata %v, want %v", ev.Metadata, want)
	}
	if len(rec.Deliveries) != 4 { // all, cases, approved, acme-only
		t.Fatalf("routed to %d destinations", len(rec.Deliveries))
	}

	// Binary mode; text data becomes a JSON string; a CloudEvents id that is not a Sluice id is kept in metadata.
	w, out = send(f.in.HandleEvent, "text/plain", map[string]string{"ce-specversion": "1.0", "ce-id": "has space",
		"ce-source": "/src%20x", "ce-type": "note.added"}, "hello")
	if w.Code != 202 {
		t.Fatalf("binary: %d %s", w.Code, w.Body)
	}
	rec, _ = f.st.Event(ctx, out["id"].(string))
	if rec.Event.Topic != "note.added" || string(rec.Event.Data) != `"hello"` || rec.Event.Metadata[MetaCEID] != "has space" ||
		rec.Event.Metadata[MetaCESource] != "/src x" || rec.Event.Metadata[MetaCEContentType] != "text/plain" {
		t.Fatalf("binary stored: %+v", rec.Event)
	}
	w, _ = send(f.in.HandleEvent, "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "b2",
		"ce-source": "s", "ce-type": "x"}, `{"a":1}`)
	if rec, _ := f.st.Event(ctx, "b2"); w.Code != 202 || string(rec.Event.Data) != `{"a":1}` {
		t.Fatalf("binary json: %d %s", w.Code, w.Body)
	}

	// Batch mode, on both routes.
	batch := `[{"specversion":"1.0","id":"k1","source":"s","type":"a","data":1},{"specversion":"1.0","id":"k2","source":"s"},
		{"specversion":"1.0","id":"k3","source":"s","type":"b","data_base64":"eyJ4Ijp0cnVlfQ=="}]`
	for _, h := range []http.HandlerFunc{f.in.HandleEvent, f.in.HandleBatch} {
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
		{"specversion", ceStructured, nil, `{"specversion":"0.3","id":"x","source":"s","type":"t"}`, 400, "specversion"},
		{"no source", ceStructured, nil, `{"specversion":"1.0","id":"x","type":"t"}`, 400, "source"},
		{"pattern type", ceStructured, nil, `{"specversion":"1.0","id":"x","source":"s","type":"a.*"}`, 400, "type"},
		{"object attribute", ceStructured, nil, `{"specversion":"1.0","id":"x","source":"s","type":"t","ext":{}}`, 400, "ext"},
		{"bad time", ceStructured, nil, `{"specversion":"1.0","id":"x","source":"s","type":"t","time":"now"}`, 400, "time"},
		{"not an object", ceStructured, nil, `[1]`, 400, ""},
		{"data and base64", ceStructured, nil, `{"specversion":"1.0","id":"x","source":"s","type":"t","data":1,"data_base64":"MQ=="}`, 400, "data_base64"},
		{"binary missing type", "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s"}, `{}`, 400, "ce-type"},
		{"binary bad json", "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s", "ce-type": "t"}, `{`, 400, "data"},
		{"binary octets", "application/octet-stream", map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "s", "ce-type": "t"}, "\x00", 415, "data"},
	}
	for _, c := range bad {
		w, out := send(f.in.HandleEvent, c.ct, c.hdr, c.body)
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
	f := newFixture(t, t.TempDir(), catalogConfig, nil)
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
		{"cloudevent too", ceStructured, `{"specversion":"1.0","id":"c","source":"s","type":"case.status_updated","data":{"case":{"status":1}}}`, 422, "data", "/case/status"},
	}
	for _, c := range cases {
		w, out := send(f.in.HandleEvent, c.ct, nil, c.body)
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
	f.in.HandleBatch(w, r)
	if !strings.Contains(w.Body.String(), `"accepted":1`) || !strings.Contains(w.Body.String(), `"pointer":"/case"`) ||
		!strings.Contains(w.Body.String(), `"field":"events[1].data"`) {
		t.Fatalf("batch: %s", w.Body)
	}
	if got := f.in.Topics(); len(got) != 2 || got[0].CompiledSchema == nil {
		t.Fatalf("Topics(): %+v", got)
	}
}

func TestInlineSubscriptions(t *testing.T) {
	dir := t.TempDir()
	on := func(o *Options) { o.Inline.Enabled = true }
	f := newFixture(t, dir, testConfig, on)
	ctx := context.Background()
	if err := f.in.StartInline(ctx); err != nil {
		t.Fatal(err)
	}
	pub := func(body string) (*httptest.ResponseRecorder, map[string]any) {
		return send(f.in.HandleEvent, "application/json", nil, body)
	}
	sub := `"subscriptions":[{"url":"https://example.com/run","topics":["case.*"]}]`
	name := subscriptionName("run-1", "", "https://example.com/run", []string{"case.*"})

	w, out := pub(`{"id":"s1","topic":"case.created","correlation_id":"run-1","data":{},` + sub + `}`)
	if w.Code != 202 || out["deliveries"] != 3.0 { // all, cases, the subscription
		t.Fatalf("register: %d %s", w.Code, w.Body)
	}
	// Later events of the run reach it without carrying it; other runs, topics and tenants do not.
	for _, c := range []struct {
		body  string
		reach bool
	}{
		{`{"id":"s2","topic":"case.updated","correlation_id":"run-1","data":{}}`, true},
		{`{"id":"s3","topic":"user.created","correlation_id":"run-1","data":{}}`, false},
		{`{"id":"s4","topic":"case.updated","correlation_id":"run-2","data":{}}`, false},
		{`{"id":"s5","topic":"case.updated","correlation_id":"run-1","tenant":"acme","data":{}}`, false},
		{`{"id":"s6","topic":"case.updated","data":{}}`, false},
	} {
		if w, _ := pub(c.body); w.Code != 202 {
			t.Fatalf("%s: %d %s", c.body, w.Code, w.Body)
		}
	}
	waitUntil(t, "the subscription's lane delivers s1 and s2", func() bool {
		s := f.sink(name)
		return s != nil && fmt.Sprint(s.ids()) == "[s1 s2]"
	})
	time.Sleep(50 * time.Millisecond)
	if got := fmt.Sprint(f.sink(name).ids()); got != "[s1 s2]" {
		t.Fatalf("subscription received %s", got)
	}

	// Sending the same subscription again is the same destination; the cap counts distinct ones.
	if w, _ := pub(`{"topic":"case.x","correlation_id":"run-1","data":{},` + sub + `}`); w.Code != 202 {
		t.Fatalf("re-send: %d %s", w.Code, w.Body)
	}
	if w, _ := pub(`{"topic":"case.x","correlation_id":"run-1","data":{},"subscriptions":[{"url":"https://example.com/2","topics":["*"]}]}`); w.Code != 202 {
		t.Fatalf("second: %d %s", w.Code, w.Body)
	}
	w, out = pub(`{"topic":"case.x","correlation_id":"run-1","data":{},"subscriptions":[{"url":"https://example.com/3","topics":["*"]}]}`)
	if field, _ := errField(out); w.Code != 422 || field != "subscriptions[0]" {
		t.Fatalf("cap: %d %s", w.Code, w.Body)
	}
	subs, _ := f.st.Subscriptions(ctx)
	if len(subs) != 2 {
		t.Fatalf("stored %d subscriptions, want 2", len(subs))
	}

	for _, c := range []struct{ body, field string }{
		{`{"topic":"a","data":{},` + sub + `}`, "correlation_id"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://bad.example.com","topics":["*"]}]}`, "subscriptions[0]"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://x.example.com","topics":["a*"]}]}`, "subscriptions[0].topics"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"topics":["*"]}]}`, "subscriptions[0].url"},
		{`{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"https://x.example.com","topics":["*"],"colour":1}]}`, "subscriptions"},
	} {
		w, out := pub(c.body)
		if field, _ := errField(out); w.Code != 400 || field != c.field {
			t.Errorf("%s: %d %s, want 400 on %s", c.body, w.Code, w.Body, c.field)
		}
	}

	// A restart restores the subscriptions from the store.
	f.stop()
	var ended []string
	g := newFixture(t, dir, testConfig, func(o *Options) {
		on(o)
		o.Inline.OnEnded = func(name string) { ended = append(ended, name) }
	})
	g.clock.Store(f.clock.Load())
	if err := g.in.StartInline(ctx); err != nil {
		t.Fatal(err)
	}
	if w, out := send(g.in.HandleEvent, "", nil, `{"id":"s7","topic":"case.updated","correlation_id":"run-1","data":{}}`); w.Code != 202 || out["deliveries"] != 4.0 {
		t.Fatalf("after restart: %d %s", w.Code, w.Body)
	}
	waitUntil(t, "the restored subscription delivers s7", func() bool {
		s := g.sink(name)
		return s != nil && fmt.Sprint(s.ids()) == "[s7]"
	})

	// Past the TTL the subscription ends: no more routing, its row is gone.
	g.clock.Add(int64(2 * time.Hour))
	if w, out := send(g.in.HandleEvent, "", nil, `{"id":"s8","topic":"case.updated","correlation_id":"run-1","data":{}}`); w.Code != 202 || out["deliveries"] != 2.0 {
		t.Fatalf("expired subscription still routed: %d %s", w.Code, w.Body)
	}
	g.in.inline.expire(ctx)
	if subs, _ := g.st.Subscriptions(ctx); len(subs) != 0 {
		t.Fatalf("expired subscriptions still stored: %+v", subs)
	}
	if g.disp.Accepting(name) {
		t.Fatal("the expired subscription's lane still runs")
	}
	if !slices.Contains(ended, name) {
		t.Fatalf("OnEnded heard of %v, not of the expired %s", ended, name)
	}

	// With the feature off, subscriptions are refused.
	h := newFixture(t, t.TempDir(), testConfig, nil)
	if w, out := send(h.in.HandleEvent, "", nil, `{"topic":"a","correlation_id":"r","data":{},`+sub+`}`); w.Code != 400 || !strings.Contains(w.Body.String(), "inline_subscriptions.enabled") {
		t.Fatalf("off: %d %v", w.Code, out)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
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
			r.Header.Set("Content-Type", ceStructured)
		case 1:
			r.Header.Set("Content-Type", ceBatch)
		case 2:
			r.Header.Set("Content-Type", ct)
			r.Header.Set("ce-specversion", "1.0")
			r.Header.Set("ce-id", "fz")
			r.Header.Set("ce-source", "fuzz")
			r.Header.Set("ce-type", "fuzz.bin")
		}
		w := httptest.NewRecorder()
		in.HandleEvent(w, r)
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
