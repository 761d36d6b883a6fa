package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// TestCloudEventsDecodeWithSDK sends events in both CloudEvents modes and decodes each request with the
// official sdk-go, as a receiver would; the Standard Webhooks signature must verify as well.
func TestCloudEventsDecodeWithSDK(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)
	plain := event.Event{ID: "evt-1", Topic: "case.status_updated", Time: at, Data: json.RawMessage(`{"case":{"id":"c-1"}}`)}
	fromCE := plain
	fromCE.ID = "evt-2"
	fromCE.Metadata = map[string]string{MetaSource: "urn:crm", MetaSubject: "cases/c-1"}
	transformed := plain
	transformed.ID = "evt-3"
	transformed.Body = json.RawMessage(`{"status":"approved"}`)

	cases := []struct {
		name, format, source string
		ev                   event.Event
		wantMode             binding.Encoding
		wantSource, wantSub  string
		wantData             string
		wantContentType      string
	}{
		{"binary", FormatCloudEvents, "", plain, binding.EncodingBinary, "sluice", "", `{"case":{"id":"c-1"}}`, "application/json"},
		{"structured", FormatCloudEventsStructured, "", plain, binding.EncodingStructured, "sluice", "", `{"case":{"id":"c-1"}}`, "application/cloudevents+json"},
		{"binary keeps the incoming source and subject", FormatCloudEvents, "", fromCE, binding.EncodingBinary, "urn:crm", "cases/c-1", `{"case":{"id":"c-1"}}`, "application/json"},
		{"structured with configured source", FormatCloudEventsStructured, "urn:sluice:prod", fromCE, binding.EncodingStructured, "urn:sluice:prod", "cases/c-1", `{"case":{"id":"c-1"}}`, "application/cloudevents+json"},
		{"transform result is the data", FormatCloudEvents, "", transformed, binding.EncodingBinary, "sluice", "", `{"status":"approved"}`, "application/json"},
		{"transform result in structured", FormatCloudEventsStructured, "", transformed, binding.EncodingStructured, "sluice", "", `{"status":"approved"}`, "application/cloudevents+json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := newReceiver(t, nil)
			cfg := NewConfig()
			cfg.URL, cfg.Secrets, cfg.Format, cfg.Source = rc.URL+"/hooks", []string{secretA}, c.format, c.source
			s, err := New(context.Background(), cfg, sinks.Env{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(context.Background(), []event.Event{c.ev}); err != nil {
				t.Fatal(err)
			}
			got := rc.last(t)
			if err := VerifyStandard([]string{secretA}, got.Header, got.Body, time.Minute); err != nil {
				t.Fatalf("signature: %v", err)
			}
			req := httptest.NewRequest("POST", "/hooks", bytes.NewReader(got.Body))
			req.Header = got.Header.Clone()
			msg := cehttp.NewMessageFromHttpRequest(req)
			if mode := msg.ReadEncoding(); mode != c.wantMode {
				t.Fatalf("encoding %v, want %v (content-type %q)", mode, c.wantMode, got.Header.Get("Content-Type"))
			}
			ce, err := binding.ToEvent(context.Background(), msg)
			if err != nil {
				t.Fatalf("sdk-go cannot decode the request: %v\nheaders %v\nbody %s", err, got.Header, got.Body)
			}
			if err := ce.Validate(); err != nil {
				t.Fatalf("invalid CloudEvent: %v", err)
			}
			if ce.SpecVersion() != "1.0" || ce.ID() != c.ev.ID || ce.Type() != c.ev.Topic || ce.Source() != c.wantSource ||
				ce.Subject() != c.wantSub || !ce.Time().Equal(at) || ce.DataContentType() != "application/json" {
				t.Fatalf("attributes: %s", ce)
			}
			if string(ce.Data()) != c.wantData {
				t.Fatalf("data %s, want %s", ce.Data(), c.wantData)
			}
			if ct := got.Header.Get("Content-Type"); len(ct) < len(c.wantContentType) || ct[:len(c.wantContentType)] != c.wantContentType {
				t.Fatalf("content-type %q, want %q", ct, c.wantContentType)
			}
			if got.Header.Get("webhook-id") != c.ev.ID {
				t.Fatalf("webhook-id %q", got.Header.Get("webhook-id"))
			}
		})
	}
}

// TestTransformBody checks a transform's result replaces the data in standard and is the whole body in raw.
func TestTransformBody(t *testing.T) {
	ev := event.Event{ID: "e", Topic: "t", Time: time.Unix(0, 0).UTC(), Data: json.RawMessage(`{"a":1}`), Body: json.RawMessage(`[1,2]`)}
	for format, want := range map[string]string{
		FormatRaw:      `[1,2]`,
		FormatStandard: `{"type":"t","timestamp":"1970-01-01T00:00:00Z","data":[1,2]}`,
	} {
		s := &Sink{cfg: Config{Format: format}}
		got, err := s.body(&ev)
		if err != nil || string(got) != want {
			t.Errorf("%s: %s %v, want %s", format, got, err, want)
		}
	}
}
