package match_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/match"
)

// fuzzDocs are matched against every filter the fuzzer manages to compile;
// they cover absent, null, scalar, array and nested shapes so most code
// paths in the matchers run.
var fuzzDocs = []string{
	testDoc,
	`{}`,
	`{"data": null}`,
	`{"data": [1, "a", null, true, [1], {"a": 1}]}`,
	`{"topic": "a", "data": {"a": {"b": {"c": [1, 2, {"d": "e"}]}}, "n": 1e308, "s": ""}}`,
	`{"data": {"amount": 12345678901234567890, "x": -0, "y": 0.000001}}`,
}

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`null`,
		`[]`,
		`{"topic": "case.created"}`,
		`{"data": {"case": {"status": {"$in": ["approved", "rejected"]}}}}`,
		`{"data": {"roles": ["reviewer"]}}`,
		`{"data": {"amount": {"$gt": 10, "$lte": 100}}}`,
		`{"data": {"amount": {"$gte": 1.5, "$lt": "z"}}}`,
		`{"data": {"amount": {"$gt": [1]}}}`,
		`{"$or": [{"topic": "a"}, {"data": {"x": {"$exists": true}}}]}`,
		`{"$and": [{"$not": {"tenant": "t"}}, {"data": {"s": {"$regex": "^a.*b$"}}}]}`,
		`{"data": {"s": {"$regex": "(a"}}}`,
		`{"data": {"s": {"$startsWith": "a", "$endsWith": "b"}}}`,
		`{"data": {"s": {"$neq": null, "$nin": [1, "a", true, null, [1], {"a": 1}]}}}`,
		`{"data": {"status": {"$not": {"$in": ["a", "b"]}}}}`,
		`{"data": {"obj": {"$eq": {"a": [1, {"b": null}]}}}}`,
		`{"data": {"a": {"$gt": 1, "b": 2}}}`,
		`{"$foo": 1}`,
		`{"data": {}}`,
		`{"data": {"": 1}}`,
		`{"data": {"n": 1e400}}`,
		`{"data": {"n": {"$in": [1e400, -1e400, 0, -0]}}}`,
		`{"$and": []}`,
		`{"$or": [{}]}`,
		`{"$not": {"$eq": 1}}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	docs := make([][2]map[string]any, len(fuzzDocs))
	for i, s := range fuzzDocs {
		docs[i] = [2]map[string]any{decodeDoc(f, s, false), decodeDoc(f, s, true)}
	}
	f.Fuzz(func(t *testing.T, data []byte, useNumber bool) {
		dec := json.NewDecoder(bytes.NewReader(data))
		if useNumber {
			dec.UseNumber()
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return
		}
		flt, err := match.Compile(v)
		if err != nil {
			checkErrors(t, err)
			return
		}
		results := make([]bool, 0, 2*len(docs))
		for _, d := range docs {
			for _, doc := range d {
				results = append(results, flt.Match(doc))
			}
		}

		// Whether the filter's numbers arrive as float64 or json.Number must
		// not change anything.
		var alt any
		altDec := json.NewDecoder(bytes.NewReader(data))
		if !useNumber {
			altDec.UseNumber()
		}
		if altDec.Decode(&alt) == nil {
			altF, err := match.Compile(alt)
			if err != nil {
				t.Fatalf("compiles with useNumber=%v but not %v: %v", useNumber, !useNumber, err)
			}
			i := 0
			for _, d := range docs {
				for _, doc := range d {
					if altF.Match(doc) != results[i] {
						t.Fatalf("number representation changed the result for doc %d", i)
					}
					i++
				}
			}
		}

		// $not must be the exact negation of whatever it wraps.
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			neg, err := match.Compile(map[string]any{"$not": m})
			if err != nil {
				// Wrapping adds a level, which may cross the nesting limit.
				if strings.Contains(err.Error(), "nested too deeply") {
					return
				}
				t.Fatalf("filter compiles but its $not does not: %v", err)
			}
			i := 0
			for _, d := range docs {
				for _, doc := range d {
					if neg.Match(doc) == results[i] {
						t.Fatalf("$not did not negate the result for doc %d", i)
					}
					i++
				}
			}
		}
	})
}

// checkErrors asserts the documented error contract: a join of *Error
// values, each with a message, none empty when rendered.
func checkErrors(t *testing.T, err error) {
	t.Helper()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T does not implement Unwrap() []error", err)
	}
	errs := joined.Unwrap()
	if len(errs) == 0 {
		t.Fatal("empty error join")
	}
	for _, e := range errs {
		var me *match.Error
		if !errors.As(e, &me) {
			t.Fatalf("joined error %T is not *match.Error", e)
		}
		if me.Msg == "" || me.Error() == "" {
			t.Fatalf("empty error message: %#v", me)
		}
		_ = me.Prefixed("x")
	}
}

func FuzzTopics(f *testing.F) {
	for _, s := range [][2]string{
		{"*", "case.created"},
		{"case.*", "case"},
		{"case.*", "case.a.b"},
		{"case.*", "cases.x"},
		{"case.created", "case.created"},
		{"Case.*", "case.x"},
		{"ca*", "case"},
		{"*.x", "a.x"},
		{"a.*.b", "a.x.b"},
		{".*", ".x"},
		{"", ""},
		{"a.*,b.*,c", "b.x"},
		{"s0.*,s1.*,s2.*,s3.*,s4.*,s5.*,s6.*,s7.*,s8.*,s9.*", "s9.x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, patternList, topic string) {
		// A comma-separated list lets the fuzzer build multi-pattern sets,
		// including ones large enough to switch to set-based lookup.
		patterns := strings.Split(patternList, ",")
		ts, err := match.CompileTopics(patterns)
		wantValid := true
		for _, p := range patterns {
			if !refValid(p) {
				wantValid = false
			}
		}
		if (err == nil) != wantValid {
			t.Fatalf("CompileTopics(%q) error = %v, reference says valid=%v", patterns, err, wantValid)
		}
		if err != nil {
			checkErrors(t, err)
			if ts.Match(topic) {
				t.Fatal("failed compile must match nothing")
			}
			return
		}
		want := false
		for _, p := range patterns {
			want = want || refMatch(p, topic)
		}
		if got := ts.Match(topic); got != want {
			t.Fatalf("patterns %q topic %q: got %v, reference %v", patterns, topic, got, want)
		}
	})
}

// refValid and refMatch restate the pattern rules as plainly as possible,
// as an oracle for the optimised implementation.
func refValid(p string) bool {
	switch {
	case p == "" || p == ".*":
		return false
	case p == "*":
		return true
	case strings.HasSuffix(p, ".*"):
		return !strings.Contains(p[:len(p)-2], "*")
	}
	return !strings.Contains(p, "*")
}

func refMatch(p, topic string) bool {
	switch {
	case p == "*":
		return true
	case strings.HasSuffix(p, ".*"):
		prefix := p[:len(p)-1]
		return strings.HasPrefix(topic, prefix) && len(topic) > len(prefix)
	}
	return p == topic
}
