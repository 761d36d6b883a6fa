package template

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event is what a template reads of an event. Sluice fills it from its own event type and the plugin SDK
// from sdk.Event, so one renderer serves both.
type Event struct {
	ID, Topic, Tenant string
	Time              time.Time // zero renders dates from now
	Metadata          map[string]string
	Data              []byte // JSON
	OrderingKey       string
}

// Valid lists the placeholders, as error messages show them.
const Valid = "{topic}, {tenant}, {id}, {ordering_key}, {yyyy}, {mm}, {dd}, {hh}, {batch_id}, {data.<path>} or {metadata.<key>}"

type kind uint8

const (
	kLiteral kind = iota
	kTopic
	kTenant
	kID
	kYear
	kMonth
	kDay
	kHour
	kBatchID
	kOrderingKey
	kData
	kMetadata
)

var names = map[string]kind{
	"topic": kTopic, "tenant": kTenant, "id": kID, "yyyy": kYear, "mm": kMonth, "dd": kDay, "hh": kHour,
	"batch_id": kBatchID,
	// ordering_key is the destination's ordering_key value for the event ("" when it has none): an SQS FIFO
	// message group or a partition key that follows Sluice's own ordering.
	"ordering_key": kOrderingKey,
}

type part struct {
	kind       kind
	text       string   // literal text, or the placeholder as written (for errors)
	path       []string // data path segments, or the metadata key in path[0]
	def        string
	hasDefault bool
}

// Template is a compiled name template. It is immutable and safe for concurrent use.
type Template struct {
	src     string
	parts   []part
	data    bool // some part reads the event data
	size    int  // literal bytes, to size the output
	static  bool
	literal string
}

// Error is a compile error: what is wrong and where in the template.
type Error struct {
	Template string
	Offset   int // byte offset of the problem in Template
	Msg      string
}

func (e *Error) Error() string { return e.Msg }

// Compile parses s. The error names the offending placeholder and lists the valid ones.
func Compile(s string) (*Template, error) {
	t := &Template{src: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{kind: kLiteral, text: lit.String()})
			t.size += lit.Len()
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				lit.WriteByte('}')
				i += 2
				continue
			}
			return nil, &Error{Template: s, Offset: i, Msg: fmt.Sprintf(
				"unbalanced \"}\" at offset %d; write }} for a literal brace", i)}
		case '{':
			if i+1 < len(s) && s[i+1] == '{' {
				lit.WriteByte('{')
				i += 2
				continue
			}
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, &Error{Template: s, Offset: i, Msg: fmt.Sprintf(
					"unclosed \"{\" at offset %d; close the placeholder with } or write {{ for a literal brace", i)}
			}
			body := s[i+1 : i+1+end]
			if j := strings.IndexByte(body, '{'); j >= 0 {
				return nil, &Error{Template: s, Offset: i, Msg: fmt.Sprintf(
					"unclosed \"{\" at offset %d; close the placeholder with } or write {{ for a literal brace", i)}
			}
			p, err := parsePlaceholder(body)
			if err != nil {
				return nil, &Error{Template: s, Offset: i, Msg: err.Error()}
			}
			flush()
			if p.kind == kData {
				t.data = true
			}
			t.parts = append(t.parts, p)
			i += end + 2
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	t.static = true
	for _, p := range t.parts {
		if p.kind != kLiteral {
			t.static = false
		}
	}
	if t.static {
		for _, p := range t.parts {
			t.literal += p.text
		}
	}
	return t, nil
}

// MustCompile is Compile for templates written in code; it panics on an error.
func MustCompile(s string) *Template {
	t, err := Compile(s)
	if err != nil {
		panic("template: " + err.Error())
	}
	return t
}

func parsePlaceholder(body string) (part, error) {
	p := part{text: "{" + body + "}"}
	name := body
	if n, def, ok := strings.Cut(body, ":-"); ok {
		name, p.def, p.hasDefault = n, def, true
	}
	if k, ok := names[name]; ok {
		p.kind = k
		return p, nil
	}
	switch {
	case strings.HasPrefix(name, "data."):
		path := strings.Split(strings.TrimPrefix(name, "data."), ".")
		for _, seg := range path {
			if seg == "" {
				return p, fmt.Errorf("placeholder %s has an empty path segment; write it like {data.case.id}", p.text)
			}
		}
		p.kind, p.path = kData, path
		return p, nil
	case strings.HasPrefix(name, "metadata."):
		key := strings.TrimPrefix(name, "metadata.")
		if key == "" {
			return p, fmt.Errorf("placeholder %s names no metadata key; write it like {metadata.source}", p.text)
		}
		p.kind, p.path = kMetadata, []string{key}
		return p, nil
	case name == "data" || name == "metadata":
		return p, fmt.Errorf("placeholder %s needs a path, like {%s.x}; valid placeholders: %s", p.text, name, Valid)
	case name == "":
		return p, fmt.Errorf("empty placeholder {}; valid placeholders: %s (write {{}} for literal braces)", Valid)
	}
	return p, fmt.Errorf("unknown placeholder %s; valid placeholders: %s", p.text, Valid)
}

// String returns the template as written.
func (t *Template) String() string { return t.src }

// Static reports whether the template has no placeholders (it renders the same for every event).
func (t *Template) Static() bool { return t.static }

// Uses reports whether the template has the placeholder name: "topic", "batch_id", "data", "metadata", ….
func (t *Template) Uses(name string) bool {
	want, ok := names[name]
	switch name {
	case "data":
		want, ok = kData, true
	case "metadata":
		want, ok = kMetadata, true
	}
	if !ok {
		return false
	}
	for _, p := range t.parts {
		if p.kind == want {
			return true
		}
	}
	return false
}

// Render fills the template for one event. Dates come from the event time in UTC, or from now when ev is nil
// or has no time. A missing data path or metadata key without a default is an error naming it.
func (t *Template) Render(ev *Event, batchID string, now time.Time) (string, error) {
	if t.static {
		return t.literal, nil
	}
	if ev == nil {
		ev = &Event{}
	}
	if len(t.parts) == 1 && !t.parts[0].hasDefault {
		// The common `{topic}` routing key: no buffer, no copy.
		switch t.parts[0].kind {
		case kTopic:
			return ev.Topic, nil
		case kID:
			return ev.ID, nil
		case kTenant:
			return ev.Tenant, nil
		case kBatchID:
			return batchID, nil
		case kOrderingKey:
			return ev.OrderingKey, nil
		}
	}
	ts := ev.Time
	if ts.IsZero() {
		ts = now
	}
	ts = ts.UTC()
	var doc any
	var docErr error
	if t.data {
		doc, docErr = decodeData(ev.Data)
	}
	buf := make([]byte, 0, t.size+64)
	for i := range t.parts {
		p := &t.parts[i]
		var v string
		present := true
		switch p.kind {
		case kLiteral:
			buf = append(buf, p.text...)
			continue
		case kTopic:
			v = ev.Topic
		case kTenant:
			v = ev.Tenant
		case kID:
			v = ev.ID
		case kBatchID:
			v = batchID
		case kOrderingKey:
			v = ev.OrderingKey
		case kYear:
			buf = appendPad(buf, ts.Year(), 4)
			continue
		case kMonth:
			buf = appendPad(buf, int(ts.Month()), 2)
			continue
		case kDay:
			buf = appendPad(buf, ts.Day(), 2)
			continue
		case kHour:
			buf = appendPad(buf, ts.Hour(), 2)
			continue
		case kMetadata:
			v, present = ev.Metadata[p.path[0]]
		case kData:
			if docErr != nil {
				if p.hasDefault {
					v, present = "", false
					break
				}
				return "", fmt.Errorf("%s: event data is not JSON: %v", p.text, docErr)
			}
			var err error
			v, present, err = lookup(doc, p.path)
			if err != nil {
				return "", fmt.Errorf("%s: %v", p.text, err)
			}
		}
		if v == "" && p.hasDefault {
			buf = append(buf, p.def...)
			continue
		}
		if !present {
			what := "data"
			if p.kind == kMetadata {
				what = "metadata"
			}
			return "", fmt.Errorf("%s: the event has no such %s; give a default like {%s:-none}",
				p.text, what, strings.Trim(p.text, "{}"))
		}
		buf = append(buf, v...)
	}
	return string(buf), nil
}

func appendPad(buf []byte, n, width int) []byte {
	var tmp [8]byte
	s := strconv.AppendInt(tmp[:0], int64(n), 10)
	for i := len(s); i < width; i++ {
		buf = append(buf, '0')
	}
	return append(buf, s...)
}

func decodeData(data []byte) (any, error) {
	if len(data) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// lookup walks path through doc. A missing key or null is "not present"; an object or array at the end is an
// error, since it has no single-string form fit for a key.
func lookup(doc any, path []string) (string, bool, error) {
	cur := doc
	for _, seg := range path {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[seg]
			if !ok {
				return "", false, nil
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(v) {
				return "", false, nil
			}
			cur = v[i]
		default:
			return "", false, nil
		}
	}
	switch v := cur.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	case json.Number:
		return v.String(), true, nil
	case bool:
		return strconv.FormatBool(v), true, nil
	case map[string]any:
		return "", false, fmt.Errorf("is an object, not a string, number or boolean; name a field inside it")
	case []any:
		return "", false, fmt.Errorf("is an array, not a string, number or boolean; name an element like .0")
	}
	return "", false, fmt.Errorf("has an unexpected JSON type %T", cur)
}
