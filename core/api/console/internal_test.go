package console

import (
	"errors"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

func TestActivityHour(t *testing.T) {
	now := time.Date(2026, 1, 2, 10, 30, 15, 0, time.UTC)
	a := NewActivity()
	a.now = func() time.Time { return now }
	a.Observe("d", "delivered", time.Millisecond)
	a.Observe("d", "retry", time.Millisecond)
	a.Observe("d", "skipped", 0) // not an attempt: not counted
	now = now.Add(2 * time.Minute)
	a.Observe("d", "delivered", time.Millisecond)
	a.Observe("d", "failed", time.Millisecond)
	a.Observe("d", "retry", time.Millisecond)

	s := a.Hour("d")
	if s.Delivered[Minutes-1] != 1 || s.Failed[Minutes-1] != 2 || s.Delivered[Minutes-3] != 1 || s.Failed[Minutes-3] != 1 {
		t.Fatalf("last minutes: delivered %v failed %v", s.Delivered[Minutes-4:], s.Failed[Minutes-4:])
	}
	if s.TotalDelivered() != 2 || s.TotalFailed() != 3 || s.Streak != 2 {
		t.Fatalf("totals %d/%d streak %d", s.TotalDelivered(), s.TotalFailed(), s.Streak)
	}
	// An hour later the same ring slots hold new minutes: the old counts are gone, not added.
	now = now.Add(time.Hour)
	a.Observe("d", "delivered", time.Millisecond)
	s = a.Hour("d")
	if s.TotalDelivered() != 1 || s.TotalFailed() != 0 || s.Streak != 0 {
		t.Fatalf("after an hour: %d delivered, %d failed, streak %d", s.TotalDelivered(), s.TotalFailed(), s.Streak)
	}
	if got := a.Hour("unknown"); got.TotalDelivered() != 0 {
		t.Fatal("an unknown destination has counts")
	}
	a.Forget("d")
	if a.Hour("d").TotalDelivered() != 0 {
		t.Fatal("Forget kept the counts")
	}
	// The chart draws one bar per busy minute, and only numbers.
	var busy Series
	busy.Delivered[10], busy.Failed[10], busy.Delivered[59] = 5, 1, 2
	svg := string(chart(busy))
	if n := strings.Count(svg, "<rect "); n != 3 || !strings.Contains(svg, "7 delivered, 1 failed attempts") {
		t.Fatalf("chart: %d bars: %s", n, svg)
	}
}

func TestActivityWakes(t *testing.T) {
	a := NewActivity()
	w := a.Wait()
	a.Accepted(0)
	select {
	case <-w:
		t.Fatal("woken by nothing")
	default:
	}
	a.Accepted(3)
	select {
	case <-w:
	default:
		t.Fatal("not woken by accepted events")
	}
	if a.Wait() == w {
		t.Fatal("the next wait reuses a closed channel")
	}
}

func TestSessionExpiry(t *testing.T) {
	ss := newSessions()
	now := time.Now()
	ss.add(&session{id: "a", expires: now.Add(time.Minute)}, now)
	if ss.get("a", now) == nil {
		t.Fatal("a live session is gone")
	}
	if ss.get("a", now.Add(2*time.Minute)) != nil || len(ss.m) != 0 {
		t.Fatal("an expired session still opens")
	}
}

func TestFormFromDescription(t *testing.T) {
	reg := sinks.NewRegistry(webhook.Spec)
	fields, doc := fieldsOf(reg, "webhook", map[string]any{"url": "https://x.example/h", "headers": map[string]any{"B": "2", "A": "1"},
		"secrets": []any{"whsec_…abcd"}})
	if doc == "" || len(fields) == 0 {
		t.Fatal("no fields for webhook")
	}
	byName := map[string]formField{}
	for _, f := range fields {
		byName[f.Name] = f
	}
	if f := byName["url"]; f.Kind != "text" || !f.Required || f.Value != "https://x.example/h" {
		t.Fatalf("url: %+v", f)
	}
	if f := byName["headers"]; f.Kind != "keyvalues" || f.Value != "A: 1\nB: 2" {
		t.Fatalf("headers: %+v", f)
	}
	if f := byName["secrets"]; f.Kind != "lines" || !f.Secret || f.Value != "whsec_…abcd" {
		t.Fatalf("secrets: %+v", f)
	}

	form := url.Values{"name": {"n"}, "type": {"webhook"}, "topics": {"a.*, b.c"}, "filter": {`{"data": {}}`},
		"enabled": {"on"}, "cfg.url": {"https://x.example/h"}, "cfg.headers": {"X-A: 1\r\nX-B: two"}, "cfg.method": {""}}
	r := httptest.NewRequest("POST", "/", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	f := &destForm{}
	spec, err := readForm(r, f, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "n", "type": "webhook", "topics": []any{"a.*", "b.c"}, "filter": map[string]any{"data": map[string]any{}},
		"config": map[string]any{"url": "https://x.example/h", "headers": map[string]any{"X-A": "1", "X-B": "two"}}}
	if !reflect.DeepEqual(spec, want) {
		t.Fatalf("spec:\n got %#v\nwant %#v", spec, want)
	}

	// An edit removes an emptied field the destination has, and leaves alone what it lacks.
	edit := url.Values{"topics": {"a.*"}, "cfg.url": {"https://y.example"}, "cfg.headers": {""}, "cfg.method": {""}}
	r = httptest.NewRequest("POST", "/", strings.NewReader(edit.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	spec, err = readForm(r, &destForm{Edit: true, Type: "webhook"}, reg, map[string]any{"url": "https://x.example", "headers": map[string]any{"A": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := spec["config"].(map[string]any)
	if h, ok := cfg["headers"]; !ok || h != nil {
		t.Fatalf("an emptied field is not removed: %#v", cfg)
	}
	if _, ok := cfg["method"]; ok {
		t.Fatalf("a field the destination lacks is set: %#v", cfg)
	}

	// Bad values name their field.
	r = httptest.NewRequest("POST", "/", strings.NewReader(url.Values{"type": {"webhook"}, "cfg.headers": {"no colon"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	_, err = readForm(r, &destForm{}, reg, nil)
	var fe *fieldError
	if !errors.As(err, &fe) || fe.field != "config.headers" {
		t.Fatalf("bad header line: %v", err)
	}
}
