package intake

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// kinds are every kind a refusal may have.
var kinds = []error{ErrInvalid, ErrForbidden, ErrUnknownTopic, ErrSchemaMismatch, ErrTooLarge, ErrUnsupportedMedia, ErrLimit, ErrUnavailable}

// refusedWell reports whether err is an *Error of a known kind with a message.
func refusedWell(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Msg == "" {
		return false
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// FuzzDecode feeds arbitrary bytes to every decoder, as every transport does: each either decodes an event
// with a topic and JSON data, or refuses with an *Error of a known kind, and never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"topic":"a","data":{}}`, `{"id":"x","topic":"case.x","data":[1],"metadata":{"k":"v"},"time":"2026-01-01T00:00:00Z"}`,
		`{"events":[{"topic":"a","data":1},7]}`, `{"specversion":"1.0","id":"a","source":"s","type":"t","data_base64":"e30="}`,
		`[{"specversion":"1.0","id":"a","source":"s","type":"t"}]`, `{"topic":"a","correlation_id":"r","data":{},"subscriptions":[{"url":"u","topics":["*"]}]}`,
		"\x00", ``} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte("hi"), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		ctx := WithTenant(context.Background(), "acme")
		check := func(what string, it Item, err error) {
			if err != nil {
				if !refusedWell(err) {
					t.Fatalf("%s: a refusal that is not an *Error of a known kind: %#v", what, err)
				}
				return
			}
			if it.Event.Topic == "" || !json.Valid(it.Event.Data) || it.Event.Tenant != "acme" {
				t.Fatalf("%s: decoded %+v", what, it.Event)
			}
		}
		it, err := DecodeEvent(ctx, body)
		check("event", it, err)
		if raws, err := DecodeBatch(body); err != nil {
			check("batch", Item{}, err)
		} else {
			for _, raw := range raws {
				it, err := DecodeBatchEvent(ctx, raw, "events[0].")
				check("batch event", it, err)
			}
		}
		it, err = DecodeCloudEvent(ctx, body, "")
		check("cloudevent", it, err)
		if _, err := SplitCloudEventBatch(body); err != nil {
			check("cloudevents batch", Item{}, err)
		}
		attrs := map[string]string{"specversion": "1.0", "id": "fz", "source": "fuzz", "type": "fuzz.bin"}
		it, err = BinaryCloudEvent(ctx, attrs, ct, body, "ce-")
		check("binary cloudevent", it, err)
	})
}

// Every decoder marks the events it makes as holding checked JSON data (event.DataChecked), so sinks need not
// check it again for each destination; whatever the data arrived as, it is valid JSON.
func TestDecodedDataIsChecked(t *testing.T) {
	ctx := context.Background()
	decoders := map[string]func() (Item, error){
		"event": func() (Item, error) { return DecodeEvent(ctx, []byte(`{"topic":"a.b","data":{"x":[1,2]}}`)) },
		"batch event": func() (Item, error) {
			return DecodeBatchEvent(ctx, []byte(`{"topic":"a.b","data":"text"}`), "events[0].")
		},
		"cloudevent": func() (Item, error) {
			return DecodeCloudEvent(ctx, []byte(`{"specversion":"1.0","id":"1","source":"s","type":"a.b","data":{"x":1}}`), "")
		},
		"cloudevent, base64 text": func() (Item, error) {
			return DecodeCloudEvent(ctx, []byte(`{"specversion":"1.0","id":"1","source":"s","type":"a.b",`+
				`"datacontenttype":"text/plain","data_base64":"aGk="}`), "")
		},
		"cloudevent without data": func() (Item, error) {
			return DecodeCloudEvent(ctx, []byte(`{"specversion":"1.0","id":"1","source":"s","type":"a.b"}`), "")
		},
	}
	for name, decode := range decoders {
		it, err := decode()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !it.Event.DataChecked || !json.Valid(it.Event.Data) {
			t.Errorf("%s: data %s, checked %v: want valid JSON marked as checked", name, it.Event.Data, it.Event.DataChecked)
		}
	}
}
