package match

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Topics is a compiled set of topic patterns. The zero value matches nothing;
// build one with CompileTopics. A Topics value is immutable and safe for
// concurrent use.
type Topics struct {
	all   bool
	exact map[string]struct{}
	// prefixes hold the pattern minus its trailing "*" (so "case.*" is
	// stored as "case."), which makes "case" and "cases.x" fail a plain
	// HasPrefix check without any extra logic.
	prefixes []string
	// prefixSet is only built when there are too many prefixes for a linear
	// scan to beat one map lookup per dot in the topic.
	prefixSet map[string]struct{}
}

// linearPrefixMax is the prefix count up to which a linear HasPrefix scan
// is used. Topics rarely have more than two or three dots, so past a handful
// of prefixes probing the set at each dot is cheaper.
const linearPrefixMax = 8

// CompileTopics validates and compiles topic patterns. See the package
// documentation for the pattern syntax. On failure the error is an
// errors.Join of *Error values, one per problem, with paths of the form
// "[i]" (the pattern's index), or an empty path for an empty list.
func CompileTopics(patterns []string) (Topics, error) {
	if len(patterns) == 0 {
		return Topics{}, joinErrors([]error{&Error{Msg: `at least one pattern is required, e.g. ["*"]`}})
	}
	var (
		errs     []error
		t        Topics
		prefixes []string
	)
	for i, p := range patterns {
		path := []string{"[" + strconv.Itoa(i) + "]"}
		switch {
		case p == "":
			errs = append(errs, &Error{Path: path, Msg: `pattern must not be empty; use "*" to match every topic`})
		case p == "*":
			t.all = true
		case p == ".*":
			errs = append(errs, &Error{Path: path, Msg: `pattern ".*" has an empty prefix; use "*" to match every topic`})
		case strings.HasSuffix(p, ".*") && !strings.Contains(p[:len(p)-2], "*"):
			prefixes = append(prefixes, p[:len(p)-1])
		case strings.Contains(p, "*"):
			errs = append(errs, &Error{Path: path, Msg: fmt.Sprintf(
				`invalid pattern %q: "*" is only allowed as the whole pattern ("*") or as a final ".*" segment (e.g. "case.*")`, p)})
		default:
			if t.exact == nil {
				t.exact = make(map[string]struct{})
			}
			t.exact[p] = struct{}{}
		}
	}
	if len(errs) > 0 {
		return Topics{}, joinErrors(errs)
	}
	if t.all {
		// Everything else is redundant; dropping it keeps Match trivially cheap.
		return Topics{all: true}, nil
	}
	t.prefixes = pruneCovered(prefixes)
	for e := range t.exact {
		if t.matchPrefix(e) {
			delete(t.exact, e)
		}
	}
	if len(t.exact) == 0 {
		t.exact = nil
	}
	if len(t.prefixes) > linearPrefixMax {
		t.prefixSet = make(map[string]struct{}, len(t.prefixes))
		for _, p := range t.prefixes {
			t.prefixSet[p] = struct{}{}
		}
	}
	return t, nil
}

// pruneCovered drops duplicate prefixes and prefixes already covered by a
// shorter one ("case.a." is covered by "case."), so Match scans fewer.
func pruneCovered(prefixes []string) []string {
	sort.Slice(prefixes, func(i, j int) bool {
		if len(prefixes[i]) != len(prefixes[j]) {
			return len(prefixes[i]) < len(prefixes[j])
		}
		return prefixes[i] < prefixes[j]
	})
	var out []string
next:
	for _, p := range prefixes {
		for _, q := range out {
			if strings.HasPrefix(p, q) {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// Match reports whether topic matches at least one pattern. It does not
// allocate.
func (t Topics) Match(topic string) bool {
	if t.all {
		return true
	}
	if _, ok := t.exact[topic]; ok {
		return true
	}
	return t.matchPrefix(topic)
}

func (t Topics) matchPrefix(topic string) bool {
	if t.prefixSet == nil {
		for _, p := range t.prefixes {
			// Strictly longer: "case.*" needs at least one character after
			// the dot, so the topic "case." is not under it.
			if len(topic) > len(p) && topic[:len(p)] == p {
				return true
			}
		}
		return false
	}
	for i := 0; i < len(topic)-1; i++ {
		if topic[i] == '.' {
			if _, ok := t.prefixSet[topic[:i+1]]; ok {
				return true
			}
		}
	}
	return false
}
