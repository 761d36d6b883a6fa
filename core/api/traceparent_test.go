package api

import (
	"context"
	"testing"
)

func TestTraceparentKeptWithTheEvent(t *testing.T) {
	f := newFixture(t, t.TempDir(), testConfig)
	ctx := context.Background()
	const header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const ext = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	stored := func(id string) string {
		t.Helper()
		rec, err := f.st.Event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Event.Traceparent
	}

	w, _ := send(f.srv.handleEvent, "application/json", map[string]string{"traceparent": header},
		`{"id":"t1","topic":"case.created","data":{}}`)
	if w.Code != 202 || stored("t1") != header {
		t.Fatalf("header: %d %s, stored %q", w.Code, w.Body, stored("t1"))
	}
	// A CloudEvent's own traceparent extension wins over the transport's header.
	w, _ = send(f.srv.handleEvent, "application/cloudevents+json", map[string]string{"traceparent": header},
		`{"specversion":"1.0","id":"t2","source":"s","type":"case.created","traceparent":"`+ext+`","data":{}}`)
	if w.Code != 202 || stored("t2") != ext {
		t.Fatalf("cloudevents extension: %d %s, stored %q", w.Code, w.Body, stored("t2"))
	}
	// Binary mode carries the extension as ce-traceparent.
	w, _ = send(f.srv.handleEvent, "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "t3",
		"ce-source": "s", "ce-type": "case.created", "ce-traceparent": ext}, `{}`)
	if w.Code != 202 || stored("t3") != ext {
		t.Fatalf("binary extension: %d %s, stored %q", w.Code, w.Body, stored("t3"))
	}
	// An invalid one is dropped; the event is still accepted.
	w, _ = send(f.srv.handleEvent, "application/json", map[string]string{"traceparent": "00-zz-yy-01"},
		`{"id":"t4","topic":"case.created","data":{}}`)
	if w.Code != 202 || stored("t4") != "" {
		t.Fatalf("invalid: %d %s, stored %q", w.Code, w.Body, stored("t4"))
	}
	// The batch route applies the header to each event.
	w, _ = send(f.srv.handleBatch, "application/json", map[string]string{"traceparent": header},
		`{"events":[{"id":"t5","topic":"case.created","data":{}},{"id":"t6","topic":"case.created","data":{}}]}`)
	if w.Code != 202 || stored("t5") != header || stored("t6") != header {
		t.Fatalf("batch: %d %s", w.Code, w.Body)
	}
}
