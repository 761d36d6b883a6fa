package event

import (
	"encoding/json"
	"testing"
	"time"
)

func TestNewIDSortsByTime(t *testing.T) {
	a := NewID()
	time.Sleep(2 * time.Millisecond)
	b := NewID()
	if !(a < b) {
		t.Fatalf("ids do not sort by creation: %s then %s", a, b)
	}
	if len(a) != 36 {
		t.Fatalf("id %q is not a UUID string", a)
	}
}

func TestEnvelope(t *testing.T) {
	e := Event{ID: "e1", Topic: "case.created", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Tenant: "acme", Metadata: map[string]string{"k": "v"}, Scope: map[string]string{"s": "x"},
		Data: json.RawMessage(`{"a":1}`)}
	b, err := e.Envelope()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"e1","topic":"case.created","time":"2026-01-02T03:04:05Z","tenant":"acme","metadata":{"k":"v"},"data":{"a":1}}`
	if string(b) != want {
		t.Fatalf("envelope\n got %s\nwant %s", b, want)
	}
	e.Data = nil
	e.Tenant, e.Metadata = "", nil
	b, _ = e.Envelope()
	if want := `{"id":"e1","topic":"case.created","time":"2026-01-02T03:04:05Z","data":null}`; string(b) != want {
		t.Fatalf("envelope without data\n got %s\nwant %s", b, want)
	}
}

func TestDoc(t *testing.T) {
	e := Event{ID: "e1", Topic: "t", Data: json.RawMessage(`{"case":{"id":"c-1"}}`), Metadata: map[string]string{"m": "1"}}
	d, err := e.Doc()
	if err != nil {
		t.Fatal(err)
	}
	c := d["data"].(map[string]any)["case"].(map[string]any)
	if c["id"] != "c-1" || d["metadata"].(map[string]any)["m"] != "1" || d["topic"] != "t" {
		t.Fatalf("unexpected doc %#v", d)
	}
}
