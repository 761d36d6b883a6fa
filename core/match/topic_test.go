package match_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/core/match"
)

func TestTopicsMatch(t *testing.T) {
	tests := []struct {
		patterns []string
		topic    string
		want     bool
	}{
		{[]string{"*"}, "case.created", true},
		{[]string{"*"}, "", true},
		{[]string{"*"}, "anything.at.all", true},

		{[]string{"case.*"}, "case.status_updated", true},
		{[]string{"case.*"}, "case.a.b", true},
		{[]string{"case.*"}, "case", false},
		{[]string{"case.*"}, "case.", false},
		{[]string{"case.*"}, "cases.x", false},
		{[]string{"case.*"}, "xcase.a", false},
		{[]string{"case.*"}, "Case.created", false},
		{[]string{"Case.*"}, "Case.StatusUpdated", true},
		{[]string{"Case.*"}, "case.x", false},
		{[]string{"case.a.*"}, "case.a.b", true},
		{[]string{"case.a.*"}, "case.b.a", false},

		{[]string{"case.created"}, "case.created", true},
		{[]string{"case.created"}, "case.created.x", false},
		{[]string{"case.created"}, "Case.Created", false},
		{[]string{"case.created"}, "case", false},

		{[]string{"case.created", "invoice.*"}, "invoice.paid", true},
		{[]string{"case.created", "invoice.*"}, "case.created", true},
		{[]string{"case.created", "invoice.*"}, "case.closed", false},
		// Redundant patterns are pruned; the survivors must still cover them.
		{[]string{"case.a.*", "case.*", "case.a.b", "case.*"}, "case.a.b", true},
		{[]string{"case.a.*", "case.*", "case.a.b"}, "case.z", true},
		{[]string{"case.a.*", "case.*", "case.a.b"}, "case", false},
		{[]string{"case.created", "*"}, "other", true},
	}
	for _, tt := range tests {
		ts, err := match.CompileTopics(tt.patterns)
		if err != nil {
			t.Fatalf("%q: %v", tt.patterns, err)
		}
		if got := ts.Match(tt.topic); got != tt.want {
			t.Errorf("%q match %q: got %v, want %v", tt.patterns, tt.topic, got, tt.want)
		}
	}
}

// TestTopicsManyPrefixes exercises the set-based prefix lookup used once
// there are too many prefixes to scan.
func TestTopicsManyPrefixes(t *testing.T) {
	var patterns []string
	for i := 0; i < 20; i++ {
		patterns = append(patterns, fmt.Sprintf("svc%d.*", i), fmt.Sprintf("exact%d", i))
	}
	patterns = append(patterns, "deep.a.b.*")
	ts, err := match.CompileTopics(patterns)
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]bool{
		"svc0.x":       true,
		"svc19.x.y":    true,
		"svc20.x":      false,
		"svc1":         false,
		"svc1.":        false,
		"exact7":       true,
		"exact7.x":     false,
		"deep.a.b.c":   true,
		"deep.a.b":     false,
		"deep.a.bc.d":  false,
		"":             false,
		".":            false,
		"svc3..":       true,
		"nothing.here": false,
	} {
		if got := ts.Match(topic); got != want {
			t.Errorf("match %q: got %v, want %v", topic, got, want)
		}
	}
}

func TestTopicsZeroValueMatchesNothing(t *testing.T) {
	var ts match.Topics
	if ts.Match("case.created") || ts.Match("") {
		t.Error("zero Topics should match nothing")
	}
}

func TestCompileTopicsErrors(t *testing.T) {
	tests := []struct {
		patterns []string
		paths    []string
		want     []string
	}{
		{nil, []string{""}, []string{`at least one pattern is required, e.g. ["*"]`}},
		{[]string{}, []string{""}, []string{"at least one pattern is required"}},
		{[]string{""}, []string{"[0]"}, []string{"must not be empty", `use "*"`}},
		{[]string{"ca*"}, []string{"[0]"}, []string{`invalid pattern "ca*"`, `final ".*" segment`}},
		{[]string{"*.x"}, []string{"[0]"}, []string{`invalid pattern "*.x"`}},
		{[]string{"a.*.b"}, []string{"[0]"}, []string{`invalid pattern "a.*.b"`}},
		{[]string{"a.**"}, []string{"[0]"}, []string{`invalid pattern "a.**"`}},
		{[]string{"**"}, []string{"[0]"}, []string{`invalid pattern "**"`}},
		{[]string{"a*.*"}, []string{"[0]"}, []string{`invalid pattern "a*.*"`}},
		{[]string{".*"}, []string{"[0]"}, []string{"empty prefix"}},
		{[]string{"ok", "c*", "fine.*", ""}, []string{"[1]", "[3]"}, []string{`invalid pattern "c*"`, "must not be empty"}},
		{
			[]string{"0", "1", "*2", "3", "4", "5", "6", "7", "8", "9", "*10"},
			[]string{"[2]", "[10]"},
			[]string{`invalid pattern "*2"`, `invalid pattern "*10"`},
		},
	}
	for _, tt := range tests {
		ts, err := match.CompileTopics(tt.patterns)
		if ts.Match("x") {
			t.Errorf("%q: failed compile should return a Topics that matches nothing", tt.patterns)
		}
		errs := unwrapAll(t, err)
		if len(errs) != len(tt.paths) {
			t.Fatalf("%q: want %d errors, got %v", tt.patterns, len(tt.paths), err)
		}
		for i, e := range errs {
			if e.PathString() != tt.paths[i] {
				t.Errorf("%q: error %d path %q, want %q", tt.patterns, i, e.PathString(), tt.paths[i])
			}
			if !strings.Contains(e.Msg, tt.want[i]) {
				t.Errorf("%q: error %q does not contain %q", tt.patterns, e.Msg, tt.want[i])
			}
		}
	}

	_, err := match.CompileTopics([]string{"ok", "c*"})
	e := unwrapAll(t, err)[0]
	if got, want := e.Prefixed("subscriptions[0].topics"), `subscriptions[0].topics[1]: invalid pattern "c*"`; !strings.HasPrefix(got, want) {
		t.Errorf("Prefixed = %q, want prefix %q", got, want)
	}
}

func TestTopicsMatchDoesNotAllocate(t *testing.T) {
	ts, err := match.CompileTopics([]string{"case.created", "invoice.*", "user.profile.*"})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		ts.Match("case.created")
		ts.Match("user.profile.updated")
		ts.Match("other.topic")
	}); n != 0 {
		t.Errorf("%v allocs/op", n)
	}
}
