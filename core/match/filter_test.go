package match_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/core/match"
)

// testDoc is a realistic envelope exercising every value kind.
const testDoc = `{
  "id": "evt_01HX",
  "topic": "case.status_updated",
  "time": "2024-05-01T12:00:00Z",
  "tenant": "acme",
  "metadata": {"source": "crm", "app.kubernetes.io/name": "sluice"},
  "data": {
    "amount": 42,
    "price": 9.5,
    "tenth": 0.1,
    "name": "Ada Lovelace",
    "active": true,
    "nothing": null,
    "case": {"status": "approved", "id": "c-1", "tags": ["urgent", "vip"]},
    "roles": ["admin", "reviewer"],
    "scores": [3, 7, 12],
    "empty": [],
    "obj": {"a": 1, "b": [1, 2]},
    "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
    "matrix": [[1, 2], [3, 4]]
  }
}`

// decodeDoc decodes JSON the way the dispatcher may: with or without
// UseNumber. Tests run against both to prove number handling is uniform.
func decodeDoc(t testing.TB, s string, useNumber bool) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	if useNumber {
		dec.UseNumber()
	}
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode doc: %v", err)
	}
	return m
}

func fromYAML(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("yaml %q: %v", s, err)
	}
	return v
}

func mustCompileYAML(t testing.TB, s string) *match.Filter {
	t.Helper()
	f, err := match.Compile(fromYAML(t, s))
	if err != nil {
		t.Fatalf("compile %s: %v", s, err)
	}
	return f
}

func TestFilterMatch(t *testing.T) {
	tests := []struct {
		filter string // YAML, so numbers arrive as int like real config
		want   bool
	}{
		// Empty filters match everything.
		{`{}`, true},
		{`~`, true},

		// Bare scalars: equality.
		{`{topic: case.status_updated}`, true},
		{`{topic: case.created}`, false},
		{`{tenant: ACME}`, false},
		{`{data: {amount: 42}}`, true},
		{`{data: {amount: 42.0}}`, true},
		{`{data: {amount: 43}}`, false},
		{`{data: {price: 9.5}}`, true},
		{`{data: {tenth: 0.1}}`, true},
		{`{data: {amount: "42"}}`, false},
		{`{data: {active: true}}`, true},
		{`{data: {active: "true"}}`, false},
		{`{data: {nothing: null}}`, true},
		{`{data: {missing: null}}`, false},
		{`{data: {amount: null}}`, false},
		{`{topic: case.status_updated, tenant: acme}`, true},
		{`{topic: case.status_updated, tenant: other}`, false},
		{`{metadata: {"app.kubernetes.io/name": sluice}}`, true},

		// Bare objects: descent.
		{`{data: {case: {status: approved}}}`, true},
		{`{data: {case: {status: rejected}}}`, false},
		{`{data: {nope: {status: approved}}}`, false},
		{`{data: {amount: {x: 1}}}`, false},
		{`{data: {items: {sku: a}}}`, false}, // no descent into arrays

		// Bare arrays: containment with deep equality.
		{`{data: {roles: [reviewer]}}`, true},
		{`{data: {roles: [reviewer, admin]}}`, true},
		{`{data: {roles: [reviewer, owner]}}`, false},
		{`{data: {roles: []}}`, true},
		{`{data: {name: []}}`, false},
		{`{data: {name: [Ada Lovelace]}}`, false},
		{`{data: {missing: [x]}}`, false},
		{`{data: {scores: [7.0, 3]}}`, true},
		{`{data: {items: [{sku: a, qty: 1}]}}`, true},
		{`{data: {items: [{sku: a}]}}`, false},
		{`{data: {matrix: [[3, 4]]}}`, true},
		{`{data: {matrix: [[4, 3]]}}`, false},
		{`{data: {case: {tags: [vip]}}}`, true},

		// A bare scalar against an array field matches any element.
		{`{data: {roles: reviewer}}`, true},
		{`{data: {roles: owner}}`, false},

		// $eq / $neq.
		{`{data: {amount: {$eq: 42}}}`, true},
		{`{data: {obj: {$eq: {a: 1, b: [1, 2]}}}}`, true},
		{`{data: {obj: {$eq: {a: 1}}}}`, false},
		{`{data: {obj: {$eq: {a: 1, b: [2, 1]}}}}`, false},
		{`{data: {roles: {$eq: [admin, reviewer]}}}`, true},
		{`{data: {roles: {$eq: [reviewer, admin]}}}`, false},
		{`{data: {roles: {$eq: reviewer}}}`, true},
		{`{data: {matrix: {$eq: [3, 4]}}}`, true},
		{`{data: {empty: {$eq: []}}}`, true},
		{`{data: {missing: {$eq: null}}}`, false},
		{`{tenant: {$neq: acme}}`, false},
		{`{tenant: {$neq: other}}`, true},
		{`{data: {missing: {$neq: x}}}`, true},
		{`{data: {nope: {deeper: {$neq: 1}}}}`, true},
		{`{data: {roles: {$neq: reviewer}}}`, false},
		{`{data: {roles: {$neq: owner}}}`, true},
		{`{data: {nothing: {$neq: null}}}`, false},

		// Ordering.
		{`{data: {amount: {$gt: 10}}}`, true},
		{`{data: {amount: {$gt: 42}}}`, false},
		{`{data: {amount: {$gte: 42}}}`, true},
		{`{data: {amount: {$lt: 42}}}`, false},
		{`{data: {amount: {$lte: 42}}}`, true},
		{`{data: {amount: {$gt: 10, $lte: 100}}}`, true},
		{`{data: {amount: {$gt: 10, $lte: 40}}}`, false},
		{`{data: {price: {$gt: 9.4, $lt: 9.6}}}`, true},
		{`{time: {$gte: "2024-01-01T00:00:00Z"}}`, true},
		{`{time: {$gte: 2024-01-01T00:00:00Z}}`, true}, // unquoted: yaml.v3 time.Time
		{`{time: {$lt: 2024-05-01T12:00:00Z}}`, false},
		{`{time: {$lte: 2024-05-01T12:00:00Z}}`, true},
		{`{tenant: {$gt: ab, $lt: ad}}`, true},
		{`{data: {amount: {$gt: "1"}}}`, false},
		{`{data: {name: {$gt: 1}}}`, false},
		{`{data: {active: {$gt: 0}}}`, false},
		{`{data: {missing: {$gt: 0}}}`, false},
		{`{data: {missing: {$lt: 0}}}`, false},
		{`{data: {scores: {$gt: 10}}}`, true},
		{`{data: {scores: {$gt: 12}}}`, false},
		{`{data: {scores: {$lt: 3}}}`, false},
		{`{data: {scores: {$lte: 3}}}`, true},
		{`{data: {scores: {$gt: 5, $lt: 6}}}`, true}, // each operator picks its own element

		// $in / $nin.
		{`{data: {case: {status: {$in: [approved, rejected]}}}}`, true},
		{`{data: {case: {status: {$in: [rejected, pending]}}}}`, false},
		{`{data: {case: {status: {$in: [a, b, c, d, e, f, g, h, i, j, approved]}}}}`, true},
		{`{data: {case: {status: {$in: [a, b, c, d, e, f, g, h, i, j]}}}}`, false},
		{`{data: {amount: {$in: [1, 42]}}}`, true},
		{`{data: {amount: {$in: ["42"]}}}`, false},
		{`{data: {roles: {$in: [owner, reviewer]}}}`, true},
		{`{data: {roles: {$in: [owner]}}}`, false},
		{`{data: {missing: {$in: [x]}}}`, false},
		{`{data: {nothing: {$in: [null]}}}`, true},
		{`{data: {active: {$in: [true]}}}`, true},
		{`{data: {active: {$in: [false]}}}`, false},
		{`{data: {obj: {$in: [{a: 1, b: [1, 2]}]}}}`, true},
		{`{data: {matrix: {$in: [[3, 4]]}}}`, true},
		{`{data: {case: {status: {$nin: [approved]}}}}`, false},
		{`{data: {case: {status: {$nin: [rejected]}}}}`, true},
		{`{data: {missing: {$nin: [x]}}}`, true},
		{`{data: {roles: {$nin: [owner]}}}`, true},
		{`{data: {roles: {$nin: [owner, admin]}}}`, false},

		// $exists.
		{`{data: {amount: {$exists: true}}}`, true},
		{`{data: {amount: {$exists: false}}}`, false},
		{`{data: {missing: {$exists: false}}}`, true},
		{`{data: {missing: {$exists: true}}}`, false},
		{`{data: {nothing: {$exists: true}}}`, true},
		{`{data: {empty: {$exists: true}}}`, true},
		{`{data: {nope: {x: {$exists: false}}}}`, true},
		{`{data: {amount: {x: {$exists: false}}}}`, true},

		// String operators.
		{`{topic: {$startsWith: case.}}`, true},
		{`{topic: {$startsWith: Case.}}`, false},
		{`{topic: {$endsWith: _updated}}`, true},
		{`{topic: {$endsWith: _created}}`, false},
		{`{data: {amount: {$startsWith: "4"}}}`, false},
		{`{data: {roles: {$startsWith: rev}}}`, true},
		{`{data: {roles: {$endsWith: xyz}}}`, false},
		{`{data: {missing: {$startsWith: ""}}}`, false},
		{`{data: {name: {$regex: "^Ada\\s"}}}`, true},
		{`{data: {name: {$regex: "(?i)^ada"}}}`, true},
		{`{data: {name: {$regex: "^ada"}}}`, false},
		{`{data: {name: {$regex: "Love"}}}`, true}, // unanchored
		{`{data: {case: {tags: {$regex: "^v"}}}}`, true},
		{`{data: {amount: {$regex: "4"}}}`, false},

		// Logic at the top level.
		{`{$or: [{topic: case.created}, {tenant: acme}]}`, true},
		{`{$or: [{topic: case.created}, {tenant: other}]}`, false},
		{`{$and: [{topic: {$startsWith: case.}}, {data: {amount: {$gt: 40}}}]}`, true},
		{`{$and: [{topic: {$startsWith: case.}}, {data: {amount: {$gt: 50}}}]}`, false},
		{`{$not: {tenant: acme}}`, false},
		{`{$not: {tenant: other}}`, true},
		{`{tenant: acme, $not: {topic: case.created}}`, true},

		// Logic at field level.
		{`{data: {case: {status: {$not: {$in: [approved, rejected]}}}}}`, false},
		{`{data: {case: {status: {$not: {$in: [pending]}}}}}`, true},
		{`{data: {missing: {$not: {$eq: 1}}}}`, true},
		{`{data: {amount: {$or: [{$lt: 0}, {$gt: 40}]}}}`, true},
		{`{data: {amount: {$and: [{$gt: 0}, {$lt: 40}]}}}`, false},
		{`{data: {case: {$not: {status: rejected}}}}`, true},
		{`{data: {case: {status: approved}, $or: [{amount: 1}, {amount: 42}]}}`, true},
		{`{data: {case: {status: approved}, $or: [{amount: 1}, {amount: 2}]}}`, false},

		// Nested logic.
		{`{$or: [{$and: [{tenant: acme}, {$not: {data: {active: true}}}]}, {data: {scores: [12]}}]}`, true},
		{`{$or: [{$and: [{tenant: acme}, {$not: {data: {active: true}}}]}, {data: {scores: [13]}}]}`, false},
		{`{$and: [{$or: [{tenant: x}, {tenant: acme}]}, {$not: {$or: [{topic: a}, {topic: b}]}}]}`, true},
		{`{$not: {$not: {tenant: acme}}}`, true},
	}
	for _, useNumber := range []bool{false, true} {
		doc := decodeDoc(t, testDoc, useNumber)
		for _, tt := range tests {
			f := mustCompileYAML(t, tt.filter)
			if got := f.Match(doc); got != tt.want {
				t.Errorf("useNumber=%v %s: got %v, want %v", useNumber, tt.filter, got, tt.want)
			}
		}
	}
}

func TestFilterMatchUnusualDocs(t *testing.T) {
	f := mustCompileYAML(t, `{data: {status: {$neq: closed}}, tenant: {$exists: true}}`)
	for _, tt := range []struct {
		doc  string
		want bool
	}{
		{`{"tenant": "a", "data": null}`, true},
		{`{"tenant": "a", "data": "string"}`, true},
		{`{"tenant": "a", "data": [{"status": "closed"}]}`, true},
		{`{"tenant": "a", "data": {"status": "closed"}}`, false},
		{`{"data": {"status": "open"}}`, false},
		{`{"tenant": null, "data": {}}`, true},
	} {
		if got := f.Match(decodeDoc(t, tt.doc, false)); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.doc, got, tt.want)
		}
	}
	// Nil documents and nil filters must be harmless.
	if f.Match(nil) {
		t.Errorf("nil doc should not satisfy $exists: true")
	}
	var nilFilter *match.Filter
	if !nilFilter.Match(nil) {
		t.Errorf("nil filter must match everything")
	}
}

// TestNumberNormalisation proves every numeric representation a decoder or
// Go caller may produce compares equal to every representation in a doc.
func TestNumberNormalisation(t *testing.T) {
	type myInt int
	operands := map[string]any{
		"int":            42,
		"int8":           int8(42),
		"int16":          int16(42),
		"int32":          int32(42),
		"int64":          int64(42),
		"uint":           uint(42),
		"uint8":          uint8(42),
		"uint64":         uint64(42),
		"float32":        float32(42),
		"float64":        float64(42),
		"json.Number":    json.Number("42"),
		"json.Number e":  json.Number("4.2e1"),
		"json.Number .0": json.Number("42.0"),
		"named int":      myInt(42),
	}
	docs := map[string]map[string]any{
		"float64":          decodeDoc(t, `{"data":{"n":42}}`, false),
		"json.Number":      decodeDoc(t, `{"data":{"n":42}}`, true),
		"json.Number 42.0": decodeDoc(t, `{"data":{"n":42.0}}`, true),
		"int (Go-built)":   {"data": map[string]any{"n": 42}},
		"int64 (Go-built)": {"data": map[string]any{"n": int64(42)}},
		"array float64":    decodeDoc(t, `{"data":{"n":[1,42]}}`, false),
		"array json.Num":   decodeDoc(t, `{"data":{"n":[1,42]}}`, true),
	}
	for on, op := range operands {
		filters := map[string]any{
			"bare": map[string]any{"data": map[string]any{"n": op}},
			"$eq":  map[string]any{"data": map[string]any{"n": map[string]any{"$eq": op}}},
			"$in":  map[string]any{"data": map[string]any{"n": map[string]any{"$in": []any{op}}}},
			"$gte": map[string]any{"data": map[string]any{"n": map[string]any{"$gte": op, "$lte": op}}},
			"$nin": map[string]any{"data": map[string]any{"n": map[string]any{"$not": map[string]any{"$nin": []any{op}}}}},
		}
		for fn, fv := range filters {
			f, err := match.Compile(fv)
			if err != nil {
				t.Fatalf("%s %s: %v", on, fn, err)
			}
			for dn, doc := range docs {
				if !f.Match(doc) {
					t.Errorf("operand %s, filter %s, doc %s: no match", on, fn, dn)
				}
			}
		}
	}

	// float32 0.1 must mean the decimal 0.1 an author wrote, not its binary
	// approximation.
	f, err := match.Compile(map[string]any{"data": map[string]any{"x": float32(0.1)}})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match(decodeDoc(t, `{"data":{"x":0.1}}`, false)) {
		t.Error("float32(0.1) should equal JSON 0.1")
	}

	// A doc number too large for float64 still orders correctly.
	f = mustCompileYAML(t, `{data: {x: {$gt: 1e300}}}`)
	if !f.Match(decodeDoc(t, `{"data":{"x":1e400}}`, true)) {
		t.Error("json.Number 1e400 should be > 1e300")
	}
}

// TestGoBuiltFilters covers filters assembled in Go rather than decoded:
// map[any]any from older YAML libraries and typed slices and maps.
func TestGoBuiltFilters(t *testing.T) {
	doc := decodeDoc(t, testDoc, false)
	for name, fv := range map[string]any{
		"map[any]any":       map[any]any{"data": map[any]any{"case": map[any]any{"status": "approved"}}},
		"[]string $in":      map[string]any{"data": map[string]any{"roles": map[string]any{"$in": []string{"owner", "admin"}}}},
		"[]string bare":     map[string]any{"data": map[string]any{"roles": []string{"reviewer"}}},
		"map[string]string": map[string]any{"metadata": map[string]string{"source": "crm"}},
		"[]map $and":        map[string]any{"$and": []map[string]any{{"tenant": "acme"}, {"topic": "case.status_updated"}}},
		"nil map":           map[string]any(nil),
	} {
		f, err := match.Compile(fv)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !f.Match(doc) {
			t.Errorf("%s: no match", name)
		}
	}
}

// TestYAMLConfig shows the intended integration: the config loader decodes
// YAML, hands the filter to Compile and prefixes error paths with the
// filter's location.
func TestYAMLConfig(t *testing.T) {
	const cfg = `
destinations:
  - url: https://example.com/hook
    filter:
      topic: {$startsWith: case.}
      data:
        amount: {$gt: 10, $lte: 100}
        case:
          status: {$in: [approved, rejected]}
  - url: https://example.com/other
    filter:
      data:
        amount: {$gt: [10]}
        status: {$exists: yes}
`
	var c struct {
		Destinations []struct {
			URL    string `yaml:"url"`
			Filter any    `yaml:"filter"`
		} `yaml:"destinations"`
	}
	if err := yaml.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	f, err := match.Compile(c.Destinations[0].Filter)
	if err != nil {
		t.Fatalf("destinations[0]: %v", err)
	}
	if !f.Match(decodeDoc(t, testDoc, false)) || !f.Match(decodeDoc(t, testDoc, true)) {
		t.Error("destinations[0] filter should match the test doc")
	}

	_, err = match.Compile(c.Destinations[1].Filter)
	var got []string
	for _, e := range unwrapAll(t, err) {
		got = append(got, e.Prefixed("destinations[1].filter"))
	}
	want := []string{
		"destinations[1].filter.data.amount.$gt: must be a number or a string, got array",
		"destinations[1].filter.data.status.$exists: must be true or false, got string",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// unwrapAll asserts err is a join of *match.Error and returns them.
func unwrapAll(t testing.TB, err error) []*match.Error {
	t.Helper()
	if err == nil {
		t.Fatal("expected an error")
	}
	var first *match.Error
	if !errors.As(err, &first) {
		t.Fatalf("errors.As(*match.Error) failed for %v", err)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T does not implement Unwrap() []error", err)
	}
	var out []*match.Error
	for _, e := range joined.Unwrap() {
		me, ok := e.(*match.Error)
		if !ok {
			t.Fatalf("joined error %T is not *match.Error", e)
		}
		if me.Msg == "" || me.Msg != strings.ToLower(me.Msg[:1])+me.Msg[1:] {
			t.Errorf("message should be non-empty and start lowercase: %q", me.Msg)
		}
		out = append(out, me)
	}
	return out
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		filter any    // decoded value, or a string of YAML
		path   string // PathString of the (only) error
		want   []string
	}{
		{"root array", `[1, 2]`, "", []string{"filter must be an object", "got array"}},
		{"root string", `hello`, "", []string{"filter must be an object", "got string"}},
		{"root number", `5`, "", []string{"got number"}},

		{"$gt array", `{data: {amount: {$gt: [1]}}}`, "data.amount.$gt", []string{"must be a number or a string, got array"}},
		{"$gte bool", `{data: {amount: {$gte: true}}}`, "data.amount.$gte", []string{"got boolean"}},
		{"$lt null", `{data: {amount: {$lt: null}}}`, "data.amount.$lt", []string{"got null"}},
		{"$lte object", `{data: {amount: {$lte: {a: 1}}}}`, "data.amount.$lte", []string{"got object"}},

		{"unknown", `{data: {x: {$foo: 1}}}`, "data.x.$foo", []string{"unknown operator $foo", "valid operators are $eq", "$regex"}},
		{"unknown root", `{$where: x}`, "$where", []string{"unknown operator $where"}},
		{"wrong case", `{data: {x: {$startswith: a}}}`, "data.x.$startswith", []string{"unknown operator $startswith", "did you mean $startsWith?"}},
		{"wrong case logic", `{$OR: [{a: 1}]}`, "$OR", []string{"did you mean $or?"}},

		{"$exists string", `{data: {x: {$exists: "yes"}}}`, "data.x.$exists", []string{"must be true or false, got string"}},
		{"$exists yaml yes", `{data: {x: {$exists: yes}}}`, "data.x.$exists", []string{"must be true or false, got string"}},
		{"$exists number", `{data: {x: {$exists: 1}}}`, "data.x.$exists", []string{"got number"}},

		{"$regex number", `{data: {x: {$regex: 5}}}`, "data.x.$regex", []string{"must be a string", "got number"}},
		{"$regex invalid", `{data: {x: {$regex: "(a"}}}`, "data.x.$regex", []string{"invalid regular expression", "missing closing )"}},
		{"$regex lookahead", `{data: {x: {$regex: "a(?=b)"}}}`, "data.x.$regex", []string{"invalid regular expression"}},
		{"$startsWith number", `{data: {x: {$startsWith: 1}}}`, "data.x.$startsWith", []string{"must be a string, got number"}},
		{"$endsWith array", `{data: {x: {$endsWith: [a]}}}`, "data.x.$endsWith", []string{"must be a string, got array"}},

		{"$in number", `{data: {x: {$in: 5}}}`, "data.x.$in", []string{"must be a non-empty array of values", "got number"}},
		{"$in empty", `{data: {x: {$in: []}}}`, "data.x.$in", []string{"must not be an empty array", "match nothing"}},
		{"$nin object", `{data: {x: {$nin: {a: 1}}}}`, "data.x.$nin", []string{"got object"}},
		{"$nin empty", `{data: {x: {$nin: []}}}`, "data.x.$nin", []string{"match everything"}},

		{"$and object", `{$and: {}}`, "$and", []string{"must be a non-empty array of condition objects", "got object"}},
		{"$and empty", `{$and: []}`, "$and", []string{"got an empty array"}},
		{"$or element", `{$or: [{topic: a}, 1]}`, "$or[1]", []string{"must be an object of conditions, got number"}},
		{"$or empty element", `{$or: [{}]}`, "$or[0]", []string{"empty object"}},
		{"$and nested path", `{$and: [{topic: a}, {topic: {$bad: 1}}]}`, "$and[1].topic.$bad", []string{"unknown operator $bad"}},
		{"$not array", `{$not: [a]}`, "$not", []string{"must be an object of conditions", "got array"}},
		{"$not empty", `{data: {x: {$not: {}}}}`, "data.x.$not", []string{"must not be empty"}},
		{"$not nested", `{data: {x: {$not: {$in: 3}}}}`, "data.x.$not.$in", []string{"must be a non-empty array"}},

		{"mixed", `{data: {amount: {$gt: 1, currency: usd}}}`, "data.amount.$gt", []string{"operator $gt cannot be mixed with field keys (currency)", "$and"}},
		{"root value op", `{$eq: 1}`, "$eq", []string{"operator $eq must be applied to a field"}},
		{"root value op via $and", `{$and: [{$exists: true}]}`, "$and[0].$exists", []string{"must be applied to a field"}},
		{"root value op via $not", `{$not: {$regex: x}}`, "$not.$regex", []string{"must be applied to a field"}},

		{"empty object", `{data: {}}`, "data", []string{"empty object has no conditions", "$exists: true"}},
		{"empty field name", `{data: {"": 1}}`, `data.""`, []string{"field name must not be empty"}},
		{"quoted path", `{metadata: {"a.b": {$gt: []}}}`, `metadata."a.b".$gt`, []string{"got array"}},
		{"nan", `{data: {x: .nan}}`, "data.x", []string{"(NaN) is not a valid value"}},
		{"yaml int key", `{data: {1: x}}`, "data.1", []string{"object keys must be strings, got int"}},

		{"unsupported type", map[string]any{"data": struct{}{}}, "data", []string{"unsupported value of type struct {}"}},
		{"unsupported pointer", map[string]any{"data": map[string]any{"x": new(int)}}, "data.x", []string{"unsupported value of type *int"}},
		{"bad json.Number", map[string]any{"x": json.Number("abc")}, "x", []string{`invalid number "abc"`}},
		{"NaN json.Number", map[string]any{"x": json.Number("NaN")}, "x", []string{"NaN"}},
		{"NaN float64 in $in", map[string]any{"x": map[string]any{"$in": []any{math.NaN()}}}, "x.$in[0]", []string{"NaN"}},
		{"typed map int keys", map[string]any{"x": map[int]string{1: "a"}}, "x", []string{"object keys must be strings, got int"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fv := tt.filter
			if s, ok := fv.(string); ok {
				fv = fromYAML(t, s)
			}
			f, err := match.Compile(fv)
			if f != nil {
				t.Errorf("expected nil filter on error")
			}
			errs := unwrapAll(t, err)
			if len(errs) != 1 {
				t.Fatalf("want 1 error, got %d: %v", len(errs), err)
			}
			e := errs[0]
			if e.PathString() != tt.path {
				t.Errorf("path = %q, want %q (error: %v)", e.PathString(), tt.path, e)
			}
			for _, w := range tt.want {
				if !strings.Contains(e.Msg, w) {
					t.Errorf("message %q does not contain %q", e.Msg, w)
				}
			}
			wantErr := e.Msg
			if tt.path != "" {
				wantErr = tt.path + ": " + e.Msg
			}
			if e.Error() != wantErr {
				t.Errorf("Error() = %q, want %q", e.Error(), wantErr)
			}
		})
	}
}

func TestCompileErrorExactMessage(t *testing.T) {
	_, err := match.Compile(fromYAML(t, `{data: {amount: {$gt: [1]}}}`))
	if got, want := err.Error(), "data.amount.$gt: must be a number or a string, got array"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCompileReportsAllErrorsSorted(t *testing.T) {
	_, err := match.Compile(fromYAML(t, `
data:
  b: {$foo: 1}
  a: {$gt: []}
  c: {$in: [x, {$regex: 1}]}
$or: []
$and: [{topic: {$exists: maybe}}, 7]
`))
	errs := unwrapAll(t, err)
	var paths []string
	for _, e := range errs {
		paths = append(paths, e.PathString())
	}
	// "c.$in" values are data, not filters, so {$regex: 1} inside it is fine.
	want := "$and[0].topic.$exists $and[1] $or data.a.$gt data.b.$foo"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("paths = %q, want %q", got, want)
	}
	if n := strings.Count(err.Error(), "\n"); n != len(errs)-1 {
		t.Errorf("joined message should have one line per error: %q", err.Error())
	}
}

func TestCompileLimits(t *testing.T) {
	deep := map[string]any{"x": 1}
	for i := 0; i < 100; i++ {
		deep = map[string]any{"x": deep}
	}
	_, err := match.Compile(deep)
	if errs := unwrapAll(t, err); !strings.Contains(errs[0].Msg, "nested too deeply") {
		t.Errorf("deep: %v", err)
	}

	// A cyclic value built in Go must not hang Compile.
	cyclic := map[string]any{}
	cyclic["x"] = cyclic
	_, err = match.Compile(cyclic)
	if errs := unwrapAll(t, err); !strings.Contains(errs[0].Msg, "nested too deeply") {
		t.Errorf("cyclic: %v", err)
	}

	// Shared sub-values double at each level; the node budget stops the
	// exponential walk long before it completes.
	var shared any = []any{1}
	for i := 0; i < 40; i++ {
		shared = []any{shared, shared}
	}
	start := time.Now()
	_, err = match.Compile(map[string]any{"x": map[string]any{"$in": shared}})
	if errs := unwrapAll(t, err); !strings.Contains(errs[0].Msg, "too large") {
		t.Errorf("shared: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("node budget took %v", d)
	}
}

func TestErrorPrefixed(t *testing.T) {
	for _, tt := range []struct {
		e      match.Error
		prefix string
		want   string
	}{
		{match.Error{Path: []string{"data", "amount", "$gt"}, Msg: "m"}, "destinations[0].filter", "destinations[0].filter.data.amount.$gt: m"},
		{match.Error{Path: []string{"$and", "[1]", "topic"}, Msg: "m"}, "f", "f.$and[1].topic: m"},
		{match.Error{Path: []string{"[3]"}, Msg: "m"}, "routes[0].topics", "routes[0].topics[3]: m"},
		{match.Error{Msg: "m"}, "routes[0].topics", "routes[0].topics: m"},
		{match.Error{Path: []string{"a"}, Msg: "m"}, "", "a: m"},
		{match.Error{Msg: "m"}, "", "m"},
		{match.Error{Path: []string{"metadata", "a b", "[x]", "$gt"}, Msg: "m"}, "p", `p.metadata."a b"."[x]".$gt: m`},
	} {
		if got := tt.e.Prefixed(tt.prefix); got != tt.want {
			t.Errorf("Prefixed(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

// TestMatchDoesNotAllocate guards the hot path the dispatcher runs for every
// event and destination.
func TestMatchDoesNotAllocate(t *testing.T) {
	for _, useNumber := range []bool{false, true} {
		doc := decodeDoc(t, testDoc, useNumber)
		for _, fs := range []string{
			`{data: {case: {status: {$in: [approved, rejected]}}}}`,
			`{data: {roles: [reviewer]}}`,
			`{topic: case.status_updated, tenant: acme, data: {amount: {$gt: 10, $lte: 100}}}`,
			`{$or: [{topic: case.created}, {data: {name: {$regex: "(?i)^ada"}}}]}`,
			`{data: {obj: {$eq: {a: 1, b: [1, 2]}}, case: {status: {$not: {$in: [a, b, c, d, e, f, g, h, i, j]}}}}}`,
		} {
			f := mustCompileYAML(t, fs)
			f.Match(doc) // warm regexp machine pools
			if n := testing.AllocsPerRun(100, func() { f.Match(doc) }); n != 0 {
				t.Errorf("useNumber=%v %s: %v allocs/op", useNumber, fs, n)
			}
		}
	}
}

// TestConcurrentMatch lets -race check that compiled filters share no
// mutable state.
func TestConcurrentMatch(t *testing.T) {
	f := mustCompileYAML(t, `{data: {name: {$regex: "^Ada"}, case: {status: {$in: [approved]}}}}`)
	doc := decodeDoc(t, testDoc, true)
	done := make(chan bool)
	for i := 0; i < 4; i++ {
		go func() {
			ok := true
			for j := 0; j < 1000; j++ {
				ok = ok && f.Match(doc)
			}
			done <- ok
		}()
	}
	for i := 0; i < 4; i++ {
		if !<-done {
			t.Error("concurrent match failed")
		}
	}
}

// TestCompileDoesNotMutateInput: the config loader may keep and re-encode
// the decoded filter, so Compile must not rewrite it while normalising.
func TestCompileDoesNotMutateInput(t *testing.T) {
	v := fromYAML(t, `{data: {amount: {$in: [1, 2]}}}`)
	before, _ := json.Marshal(v)
	if _, err := match.Compile(v); err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(v)
	if !bytes.Equal(before, after) {
		t.Errorf("input changed: %s -> %s", before, after)
	}
}
