package template

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func testEvent() *Event {
	return &Event{
		ID:       "01936f6e-7a55-7cc6-9c2b-6f1c3a8f0a11",
		Topic:    "case.status_updated",
		Time:     time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", -3*3600)), // 08:06 UTC
		Tenant:   "acme",
		Metadata: map[string]string{"source": "crm", "empty": ""},
		Data: json.RawMessage(`{"case": {"id": "c-1", "n": 42, "big": 12345678901234567890, "f": 1.50,
			"ok": true, "nil": null, "blank": "", "items": [{"sku": "a"}, {"sku": "b"}]}}`),
	}
}

func TestRender(t *testing.T) {
	now := time.Date(2030, 12, 31, 23, 0, 0, 0, time.UTC)
	tests := []struct {
		tmpl, want string
	}{
		{"", ""},
		{"static.key", "static.key"},
		{"{topic}", "case.status_updated"},
		{"{tenant}.{topic}", "acme.case.status_updated"},
		{"{id}", "01936f6e-7a55-7cc6-9c2b-6f1c3a8f0a11"},
		{"{topic}/{yyyy}/{mm}/{dd}/{hh}/{batch_id}.ndjson", "case.status_updated/2026/03/04/08/b-7.ndjson"},
		{"{data.case.id}", "c-1"},
		{"{data.case.n}-{data.case.big}-{data.case.f}", "42-12345678901234567890-1.50"},
		{"{data.case.ok}", "true"},
		{"{data.case.items.1.sku}", "b"},
		{"{data.case.blank}", ""},
		{"{data.case.blank:-dflt}", "dflt"},
		{"{data.case.nil:-none}", "none"},
		{"{data.case.missing:-}", ""},
		{"{data.case.items.9.sku:-x}", "x"},
		{"{metadata.source}", "crm"},
		{"{metadata.empty}", ""},
		{"{metadata.missing:-m}", "m"},
		{"{{literal}} {topic}", "{literal} case.status_updated"},
		{"a}}b{{c", "a}b{c"},
		{"{topic:-unused}", "case.status_updated"},
		{"é/{tenant}/ü", "é/acme/ü"},
	}
	for _, tt := range tests {
		tp, err := Compile(tt.tmpl)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.tmpl, err)
			continue
		}
		got, err := tp.Render(testEvent(), "b-7", now)
		if err != nil || got != tt.want {
			t.Errorf("Render(%q) = %q, %v; want %q", tt.tmpl, got, err, tt.want)
		}
		if tp.String() != tt.tmpl {
			t.Errorf("String() = %q, want %q", tp.String(), tt.tmpl)
		}
	}
}

func TestRenderDefaultsAndNow(t *testing.T) {
	now := time.Date(2030, 12, 31, 23, 0, 0, 0, time.FixedZone("y", 2*3600)) // 21:00 UTC
	tp := MustCompile("{yyyy}{mm}{dd}{hh}|{tenant}|{tenant:-none}|{batch_id}|{topic}")
	for _, ev := range []*Event{nil, {Topic: "t"}} {
		got, err := tp.Render(ev, "", now)
		want := "2030123121||none||"
		if ev != nil {
			want += "t"
		}
		if err != nil || got != want {
			t.Errorf("Render(%v) = %q, %v; want %q", ev, got, err, want)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		tmpl string
		data string
		want string
	}{
		{"{data.case.missing}", "", `{data.case.missing}: the event has no such data; give a default like {data.case.missing:-none}`},
		{"{data.case.nil}", "", "no such data"},
		{"{data.case}", "", "{data.case}: is an object"},
		{"{data.case.items}", "", "is an array"},
		{"{data.case.id.deeper}", "", "no such data"},
		{"{metadata.missing}", "", "{metadata.missing}: the event has no such metadata"},
		{"{data.x}", "not json", "event data is not JSON"},
		{"{data.x}", "-", "no such data"}, // empty data
	}
	for _, tt := range tests {
		ev := testEvent()
		switch tt.data {
		case "":
		case "-":
			ev.Data = nil
		default:
			ev.Data = json.RawMessage(tt.data)
		}
		_, err := MustCompile(tt.tmpl).Render(ev, "", time.Now())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Render(%q) error = %v; want it to contain %q", tt.tmpl, err, tt.want)
		}
	}
	// A default covers data that is not JSON.
	ev := testEvent()
	ev.Data = json.RawMessage("{")
	if got, err := MustCompile("{data.x:-d}").Render(ev, "", time.Now()); err != nil || got != "d" {
		t.Errorf("default over bad data = %q, %v", got, err)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		tmpl   string
		want   string
		offset int
	}{
		{"{nope}", "unknown placeholder {nope}; valid placeholders: {topic}, {tenant}", 0},
		{"a.{Topic}", "unknown placeholder {Topic}", 2},
		{"{topic", `unclosed "{" at offset 0`, 0},
		{"x{a{topic}", `unclosed "{" at offset 1`, 1},
		{"topic}", `unbalanced "}" at offset 5`, 5},
		{"{}", "empty placeholder {}", 0},
		{"{data}", "placeholder {data} needs a path", 0},
		{"{metadata}", "placeholder {metadata} needs a path", 0},
		{"{data.a..b}", "empty path segment", 0},
		{"{data.}", "empty path segment", 0},
		{"{metadata.}", "names no metadata key", 0},
		{"{batchid}", "unknown placeholder {batchid}", 0},
	}
	for _, tt := range tests {
		_, err := Compile(tt.tmpl)
		var te *Error
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Compile(%q) = %v; want an error containing %q", tt.tmpl, err, tt.want)
			continue
		}
		if e, ok := err.(*Error); !ok {
			t.Errorf("Compile(%q) error is %T, want *Error", tt.tmpl, err)
		} else if te = e; te.Offset != tt.offset || te.Template != tt.tmpl {
			t.Errorf("Compile(%q) error at %d in %q; want offset %d", tt.tmpl, te.Offset, te.Template, tt.offset)
		}
	}
}

func TestUsesAndStatic(t *testing.T) {
	tp := MustCompile("{topic}/{batch_id}/{data.a}")
	for name, want := range map[string]bool{"topic": true, "batch_id": true, "data": true, "metadata": false,
		"tenant": false, "nonsense": false} {
		if tp.Uses(name) != want {
			t.Errorf("Uses(%q) = %v", name, !want)
		}
	}
	if tp.Static() || !MustCompile("a{{b}}").Static() || !MustCompile("").Static() {
		t.Error("Static wrong")
	}
}

func TestMustCompilePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustCompile of a bad template did not panic")
		}
	}()
	MustCompile("{x")
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"{topic}", "{data.a.b:-x}", "{{}}", "{metadata.k}", "{yyyy}/{mm}", "{", "}", "{data.0}"} {
		f.Add(s, `{"a": {"b": "c"}, "0": [1]}`)
	}
	f.Fuzz(func(t *testing.T, s, data string) {
		tp, err := Compile(s)
		if err != nil {
			var te *Error
			if e, ok := err.(*Error); !ok {
				t.Fatalf("error %T, want *Error", err)
			} else if te = e; te.Offset < 0 || te.Offset > len(s) {
				t.Fatalf("offset %d outside %q", te.Offset, s)
			}
			return
		}
		if tp.String() != s {
			t.Fatalf("String() = %q, want %q", tp.String(), s)
		}
		ev := testEvent()
		ev.Data = json.RawMessage(data)
		out, err := tp.Render(ev, "batch", time.Now())
		if err == nil && tp.Static() && out != strings.NewReplacer("{{", "{", "}}", "}").Replace(s) {
			t.Fatalf("static %q rendered %q", s, out)
		}
	})
}

func BenchmarkRender(b *testing.B) {
	ev := testEvent()
	for _, tmpl := range []string{"{topic}", "{tenant}.{topic}", "{topic}/{yyyy}/{mm}/{dd}/{hh}/{batch_id}.ndjson", "{data.case.id}"} {
		tp := MustCompile(tmpl)
		b.Run(tmpl, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tp.Render(ev, "b-1", time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestOrderingKey: {ordering_key} is the destination's ordering key for the event, with a default when the
// event has none — an SQS FIFO message group that follows Sluice's own per-key order.
func TestOrderingKey(t *testing.T) {
	tp := MustCompile("{ordering_key}")
	ev := &Event{Topic: "t", OrderingKey: "c-42"}
	if got, err := tp.Render(ev, "", time.Now()); err != nil || got != "c-42" {
		t.Fatalf("{ordering_key} = %q, %v", got, err)
	}
	withDefault := MustCompile("case-{ordering_key:-none}")
	if got, _ := withDefault.Render(&Event{Topic: "t"}, "", time.Now()); got != "case-none" {
		t.Fatalf("{ordering_key:-none} without a key = %q", got)
	}
	if got, _ := withDefault.Render(ev, "", time.Now()); got != "case-c-42" {
		t.Fatalf("{ordering_key:-none} with a key = %q", got)
	}
}
