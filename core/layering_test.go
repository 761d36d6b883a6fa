// The layering test: every package of core/, sinks/ and plugins/ says in its package comment what it may import,
// and this test holds it to that by reading `go list -deps`. docs/architecture.md draws the same rooms.
//
// Two lines in a package comment are read:
//
//	May import: core/event, sinks/....
//	Must not import: net/http, os.
//
// "May import" lists every package of this module the package may depend on, directly or through others
// ("nothing of Sluice's" for none; a trailing /... takes a folder). "Must not import" names packages it must not
// use: a package of this module or a third-party one anywhere in its dependencies, a standard-library package
// in its own imports (netguard and telemetry use the network on other packages' behalf, so the rule is about who
// speaks HTTP, not who links it).
package core_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/sluicehq/sluice"

type listed struct {
	ImportPath string
	Dir        string
	Name       string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

// httpAllowed are the only packages of core that may speak HTTP themselves (core/api with its subpackages).
func httpAllowed(rel string) bool {
	return matches("core/api/...", rel) || rel == "core/netguard" || rel == "core/telemetry"
}

func TestLayering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	root := moduleRoot(t)
	cmd := exec.Command("go", "list", "-json", "./core/...", "./sinks/...", "./plugins/...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	checked := 0
	for dec.More() {
		var p listed
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rel, ok := strings.CutPrefix(p.ImportPath, module+"/")
		if !ok || len(p.GoFiles) == 0 || strings.HasSuffix(rel, "/proto") || p.Name == "main" && strings.Contains(rel, "testdata") {
			continue // another module, test-only, or generated code
		}
		rules := readRules(t, p)
		if rules.may == nil && rules.mustNot == nil {
			t.Errorf("%s: the package comment states no layering rule (add a \"May import:\" or \"Must not import:\" line)", rel)
			continue
		}
		if strings.HasPrefix(rel, "core/") && !httpAllowed(rel) && !rules.forbids("net/http") {
			t.Errorf("%s: a core package other than api, netguard and telemetry must say \"Must not import: net/http\"", rel)
		}
		checkPackage(t, rel, p, rules)
		checked++
	}
	if checked < 10 {
		t.Fatalf("checked only %d packages; go list found fewer than the module has", checked)
	}
}

type rules struct {
	may     []string // nil: no "May import" line
	mustNot []string
}

func (r rules) forbids(path string) bool {
	for _, f := range r.mustNot {
		if f == path {
			return true
		}
	}
	return false
}

func matches(pattern, rel string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == base || strings.HasPrefix(rel, base+"/")
	}
	return pattern == rel
}

type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// recorder counts violations instead of failing (for TestLayeringCatches).
type recorder struct {
	*testing.T
	n int
}

func (r *recorder) Errorf(string, ...any) { r.n++ }

func checkPackage(t reporter, rel string, p listed, r rules) {
	t.Helper()
	own := func(path string) (string, bool) { return strings.CutPrefix(path, module+"/") }
	if r.may != nil {
		for _, dep := range p.Deps {
			d, ok := own(dep)
			if !ok || strings.HasSuffix(d, "/internal/hook") {
				continue
			}
			allowed := false
			for _, m := range r.may {
				if matches(m, d) {
					allowed = true
					break
				}
			}
			if !allowed {
				t.Errorf("%s depends on %s, which its package comment does not allow (May import: %s)",
					rel, d, strings.Join(r.may, ", "))
			}
		}
	}
	for _, f := range r.mustNot {
		std := !strings.Contains(strings.SplitN(f, "/", 2)[0], ".") && !strings.HasPrefix(f, "core/") &&
			!strings.HasPrefix(f, "sinks") && !strings.HasPrefix(f, "plugins/") && !strings.HasPrefix(f, "cmd/")
		if std {
			for _, imp := range p.Imports {
				if matches(f, imp) {
					t.Errorf("%s imports %s, which its package comment forbids", rel, imp)
				}
			}
			continue
		}
		for _, dep := range p.Deps {
			d, ok := own(dep)
			if !ok {
				d = dep
			}
			if matches(f, d) {
				t.Errorf("%s depends on %s, which its package comment forbids", rel, d)
			}
		}
	}
}

// readRules finds the "May import:" and "Must not import:" lines of the package comment (in any file).
func readRules(t *testing.T, p listed) rules {
	t.Helper()
	var r rules
	fset := token.NewFileSet()
	for _, name := range p.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if f.Doc == nil {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(f.Doc.Text()))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if list, ok := strings.CutPrefix(line, "May import:"); ok {
				r.may = append(r.may, parseList(list)...)
				if r.may == nil {
					r.may = []string{}
				}
			}
			if list, ok := strings.CutPrefix(line, "Must not import:"); ok {
				r.mustNot = append(r.mustNot, parseList(list)...)
			}
		}
	}
	return r
}

func parseList(s string) []string {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" || strings.HasPrefix(s, "nothing") {
		return nil
	}
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		item = strings.TrimPrefix(item, "and ")
		if item != "" {
			out = append(out, item)
		}
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// TestLayeringCatches proves the checker fails on the violations it exists for, so a silent pass means
// something.
func TestLayeringCatches(t *testing.T) {
	pkg := listed{
		ImportPath: module + "/core/store",
		Imports:    []string{"net/http", module + "/core/event"},
		Deps:       []string{"net/http", module + "/core/event", module + "/core/dispatch", "github.com/x/y"},
	}
	cases := []struct {
		name  string
		rules rules
		want  int
	}{
		{"may import names the module deps", rules{may: []string{"core/event", "core/dispatch"}}, 0},
		{"a module dep not listed", rules{may: []string{"core/event"}}, 1},
		{"nothing of Sluice's", rules{may: []string{}}, 2},
		{"a forbidden std import", rules{mustNot: []string{"net/http"}}, 1},
		{"a forbidden module dep, transitively", rules{mustNot: []string{"core/dispatch"}}, 1},
		{"a forbidden folder", rules{mustNot: []string{"core/..."}}, 2},
		{"a forbidden third-party module", rules{mustNot: []string{"github.com/x/y"}}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{T: t}
			checkPackage(rec, "core/store", pkg, c.rules)
			if rec.n != c.want {
				t.Fatalf("violations reported = %d, want %d", rec.n, c.want)
			}
		})
	}
}
