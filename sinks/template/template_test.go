package template

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
)

// The language is tested in plugins/sdk/template; this checks that Sluice's events reach it whole.
func TestRenderSluiceEvents(t *testing.T) {
	tm := MustCompile("{topic}/{tenant}/{id}/{ordering_key}/{metadata.src}/{data.case.id}/{yyyy}")
	ev := &event.Event{ID: "e-1", Topic: "case.created", Tenant: "acme", OrderingKey: "k-9",
		Metadata: map[string]string{"src": "crm"}, Data: []byte(`{"case":{"id":"c-1"}}`),
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	got, err := tm.Render(ev, "", time.Now())
	if err != nil || got != "case.created/acme/e-1/k-9/crm/c-1/2026" {
		t.Errorf("render = %q, %v", got, err)
	}
	if _, err := Compile("{nope}"); err == nil {
		t.Error("an unknown placeholder compiled")
	}
	if got, _ := MustCompile("x-{yyyy}").Render(nil, "", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)); got != "x-2030" {
		t.Errorf("render of no event = %q", got)
	}
}
