package match

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	jmespath "github.com/jmespath-community/go-jmespath"
	"github.com/jmespath-community/go-jmespath/pkg/binding"
	"github.com/jmespath-community/go-jmespath/pkg/interpreter"
)

// TestTransformBudgetFailsTheEvaluationNotTheProcess: expressions that would build gigabytes fail their
// evaluation (or their compilation) with an error; none allocates beyond the budget.
func TestTransformBudgetFailsTheEvaluationNotTheProcess(t *testing.T) {
	doc := map[string]any{"data": map[string]any{"s": strings.Repeat("x", 1000)}}
	// Over the budget whatever the event: refused when compiled.
	if _, err := CompileTransform("pad_left('x', `1000000000000`, 'y')"); !errors.Is(err, ErrBudget) {
		t.Fatalf("a terabyte of padding: %v, want refused with ErrBudget", err)
	}
	for _, expr := range []string{
		"pad_right(data.s, `100000000`, 'y')",
		"replace(replace(data.s, '', data.s), '', data.s)",
	} {
		tr, err := CompileTransform(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if _, err := tr.Apply(doc); !errors.Is(err, ErrBudget) {
			t.Fatalf("%s: Apply = %v, want ErrBudget", expr, err)
		}
	}
	// Multi-selects in a row double the input each time: refused when compiled (and so at validation).
	deep := strings.Repeat("[@, @] | ", 12) + "@"
	if _, err := CompileTransform(deep); err == nil || !strings.Contains(err.Error(), "multiply") {
		t.Fatalf("%d multi-selects in a row: %v, want refused", 12, err)
	}
	// Within the budget, a multiplied result is still measured before it is encoded.
	tr, err := CompileTransform(strings.Repeat("[@, @] | ", 9) + "@")
	if err != nil {
		t.Fatal(err)
	}
	big := map[string]any{"data": strings.Repeat("y", 1<<15)}
	if _, err := tr.Apply(big); !errors.Is(err, ErrBudget) {
		t.Fatalf("a 512-fold copy of 32 KiB: %v, want the output bound", err)
	}
}

// adversarialDoc holds an array of n small objects.
func adversarialDoc(n int) map[string]any {
	a := make([]any, n)
	for i := range a {
		a[i] = map[string]any{"id": float64(i), "tags": []any{"x", "y"}}
	}
	return map[string]any{"id": "e1", "data": map[string]any{"a": a}}
}

// adversarial are expressions without a single function call whose cost grows with the square (or more) of
// the event's array, or doubles per stage: the interpreter alone would run them unbounded.
var adversarial = []string{
	// Nested projections reaching back to the root: n³ node evaluations.
	"data.a[*].[$.data.a[*].[$.data.a[*].id]]",
	// A flatten of flattens of the whole array per element: n² elements built.
	"data.a[*].[$.data.a, $.data.a][][]",
	// Multi-selects doubling an array at each stage (within the growth bound): 2¹⁰·n elements.
	"data.a | " + strings.Repeat("[@, @][] | ", 10) + "length(@)",
	// Slices of the whole array per element.
	"data.a[*].[$.data.a[::-1]]",
	// Filters evaluated n² times, building nothing.
	"data.a[*].[$.data.a[?id == `-1`]] | length(@)",
	// Value projections over the root per element.
	"data.a[*].[$.*.a[*].[$.data.a[*].tags[]]]",
	// Expression references evaluated by functions n² times.
	"data.a[*].map(&id, $.data.a)",
}

// TestTransformBudgetHoldsWithoutFunctionCalls: each adversarial expression compiles (it is harmless on an
// empty event) and fails on a large event with ErrBudget, having evaluated at most the step budget and built
// at most the memory budget (plus what the step that crossed it asked for).
func TestTransformBudgetHoldsWithoutFunctionCalls(t *testing.T) {
	doc := adversarialDoc(3000)
	for _, expr := range adversarial {
		tr, err := CompileTransform(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		// A tenth of the budget keeps the test quick under -race; what stops the evaluation is the same.
		const steps, mem = MaxTransformSteps / 10, MaxTransformMemory / 10
		e := &evaluator{caller: tr.caller, root: doc, bindings: newBindings(), maxSteps: steps, maxMem: mem,
			deadline: time.Now().Add(time.Hour)}
		if _, err := e.eval(tr.ast, doc); !errors.Is(err, ErrBudget) {
			t.Fatalf("%s: %v, want ErrBudget", expr, err)
		}
		if e.steps > steps+1 {
			t.Fatalf("%s: %d steps evaluated, budget %d", expr, e.steps, steps)
		}
		if _, err := tr.Apply(doc); !errors.Is(err, ErrBudget) {
			t.Fatalf("%s: Apply = %v, want ErrBudget", expr, err)
		}
	}
}

// TestTransformStepBudgetIsDeterministic: the same expression on the same event stops at the same step, and
// an evaluation within a smaller step budget succeeds only when the budget covers it.
func TestTransformStepBudgetIsDeterministic(t *testing.T) {
	tr, err := CompileTransform("data.a[*].id")
	if err != nil {
		t.Fatal(err)
	}
	doc := adversardocSmall()
	// data.a[*].id over 10 elements: subexpression, field, projection, field, then 10 × field = 14 steps.
	if _, err := tr.searchWith(doc, 14, MaxTransformMemory, time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("within 14 steps: %v", err)
	}
	_, err = tr.searchWith(doc, 13, MaxTransformMemory, time.Now().Add(time.Hour))
	if !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "steps") {
		t.Fatalf("within 13 steps: %v, want the step budget", err)
	}
	// The memory budget: 10 collected elements cost 160 bytes.
	if _, err := tr.searchWith(doc, 100, 159, time.Now().Add(time.Hour)); !errors.Is(err, ErrBudget) {
		t.Fatalf("within 159 bytes: %v, want the memory budget", err)
	}
}

func adversardocSmall() map[string]any { return adversarialDoc(10) }

// TestTransformTimeBudgetStopsAPastDeadline: the wall clock is read every 1024 steps; an evaluation whose
// deadline has passed stops at the first reading, not at the step budget.
func TestTransformTimeBudgetStopsAPastDeadline(t *testing.T) {
	tr, err := CompileTransform(adversarial[0])
	if err != nil {
		t.Fatal(err)
	}
	doc := adversarialDoc(3000)
	e := &evaluator{caller: tr.caller, root: doc, bindings: newBindings(), maxSteps: MaxTransformSteps,
		maxMem: MaxTransformMemory, deadline: time.Now().Add(-time.Second)}
	_, err = e.eval(tr.ast, doc)
	if !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "running after") {
		t.Fatalf("past the deadline: %v, want the time budget", err)
	}
	if e.steps != 1024 {
		t.Fatalf("stopped after %d steps, want 1024 (the first clock reading)", e.steps)
	}
}

// TestTransformOverBudgetOnAnEmptyEventIsRefused: an expression that cannot fit its budget even on an empty
// event is a validation error, not a destination whose every delivery fails.
func TestTransformOverBudgetOnAnEmptyEventIsRefused(t *testing.T) {
	lit := "`[" + strings.Repeat("1,", 999) + "1]`"
	expr := lit + "[*].[" + lit + "[*].[" + lit + "[*]]]"
	_, err := CompileTransform(expr)
	if err == nil || !strings.Contains(err.Error(), "empty event") {
		t.Fatalf("%d-byte expression of a billion steps: %v, want refused", len(expr), err)
	}
}

// evaluatorCases are expressions whose results the budgeted evaluator must give exactly as the library's
// interpreter does.
var evaluatorCases = []string{
	"@", "$", "id", "data", "data.a", "data.a[0]", "data.a[-1].id", "data.a[100]", "data.a[*].id",
	"data.a[?id > `5`].id", "data.a[?id > `5` && id < `8`] | [0]", "data.a[:3]", "data.a[::-2].id", "data.a[5:1:-1]",
	"data.a[*].tags[]", "data.a[*].tags[][]", "data.a[].tags", "data.nested[][]", "data.nested[]",
	"{n: length(data.a), first: data.a[0].id, ids: data.a[*].id}", "[id, data.a[0].id, `1`]",
	"data.a[0] | keys(@) | sort(@)", "data.s[1:3]", "data.s[::-1]", "data.a[*].id | sum(@)",
	"max_by(data.a, &id).id", "sort_by(data.a, &id)[-1].id", "map(&id, data.a)",
	"data.a[0].id + `1`", "-data.a[1].id", "data.a[2].id * `3` / `2`", "data.a[3].id % `2`", "data.a[9].id // `2`",
	"data.a[0].id == `0`", "data.a[0].id != `0`", "data.a[1].id >= `1`", "data.a[1].id <= `0`",
	"!data.missing", "data.missing || 'default'", "data.a && 'yes'", "data.missing && 'yes'",
	"let $x = data.a[0] in $x.id", "let $x = `1`, $y = `2` in [$x, $y]", "data.a[*].[id, $.id]",
	"data.s.foo", "data.s[0]", "data.a.id", "data.missing[*].x", "data.a[?tags[0] == 'x'] | length(@)",
	"to_string(data.a[0])", "join(',', data.a[*].tags[0])", "data.a[*].missing", "`{\"a\": [1, 2]}`.a[1]",
	"length(nope(@))", "abs('x')", "data.a[?contains(tags, 'y')].id | [1]",
}

func newBindings() binding.Bindings { return binding.NewBindings() }

// TestEvaluatorMatchesLibrary: on a sample of every node type, the budgeted evaluator's result and error
// agree with go-jmespath's own interpreter.
func TestEvaluatorMatchesLibrary(t *testing.T) {
	doc := adversarialDoc(10)
	data := doc["data"].(map[string]any)
	data["s"] = "héllo"
	data["nested"] = []any{[]any{[]any{1.0, 2.0}, 3.0}, []any{[]any{4.0}}, 5.0}
	for _, expr := range evaluatorCases {
		checkAgainstLibrary(t, expr, doc)
	}
}

func checkAgainstLibrary(t *testing.T, expr string, doc map[string]any) {
	t.Helper()
	ast, err := jmespath.NewParser().Parse(expr)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	tr := &Transform{expr: expr, ast: ast, caller: interpreter.NewFunctionCaller(budgetedFunctions...)}
	got, gotErr := tr.search(doc)
	if errors.Is(gotErr, ErrBudget) {
		return
	}
	want, wantErr := func() (v any, err error) {
		defer func() {
			if r := recover(); r != nil {
				v, err = nil, errors.New("panic")
			}
		}()
		return interpreter.NewInterpreter(doc, tr.caller, nil).Execute(ast, doc)
	}()
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s: error %v, the library's %v", expr, gotErr, wantErr)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !reflect.DeepEqual(gj, wj) {
		t.Fatalf("%s: %s, the library gives %s", expr, gj, wj)
	}
}

// FuzzTransformEvaluator: for any expression, the budgeted evaluator never panics, stays within its budget,
// and agrees with the library's interpreter whenever it finishes (expressions whose result depends on map
// order are left out of the comparison).
func FuzzTransformEvaluator(f *testing.F) {
	for _, expr := range append(append([]string{}, evaluatorCases...), adversarial...) {
		f.Add(expr)
	}
	doc := adversarialDoc(20)
	data := doc["data"].(map[string]any)
	data["s"] = "héllo"
	data["nested"] = []any{[]any{[]any{1.0, 2.0}, 3.0}, []any{[]any{4.0}}, 5.0}
	f.Fuzz(func(t *testing.T, expr string) {
		tr, err := CompileTransform(expr)
		if err != nil {
			return
		}
		e := &evaluator{caller: tr.caller, root: doc, bindings: newBindings(), maxSteps: 20_000, maxMem: 1 << 20,
			deadline: time.Now().Add(time.Hour)}
		_, err = func() (v any, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = errors.New("panic") // as search recovers it: the library's own assertions
				}
			}()
			return e.eval(tr.ast, doc)
		}()
		if e.steps > 20_001 {
			t.Fatalf("%q: %d steps with a budget of 20000", expr, e.steps)
		}
		if errors.Is(err, ErrBudget) || strings.ContainsAny(expr, "*") || strings.Contains(expr, "keys") ||
			strings.Contains(expr, "values") || strings.Contains(expr, "items") || strings.Contains(expr, "to_array") {
			return
		}
		checkAgainstLibrary(t, expr, doc)
	})
}

// adversarialFilters cost, on adversarialDoc(n), a number of steps that grows with n² or with the filter's
// size times n, while each compiles in an instant.
func adversarialFilters(t *testing.T) map[string]*Filter {
	t.Helper()
	many := func(n int, f func(i int) any) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	filters := map[string]any{
		// A bare array of 2,000 objects, each compared in depth with every element of data.a.
		"contains all": map[string]any{"data": map[string]any{"a": many(2000, func(i int) any {
			return map[string]any{"id": float64(-i), "tags": []any{"x", "y"}}
		})}},
		// $in with composite members: every element against every member.
		"in composite": map[string]any{"data": map[string]any{"a": map[string]any{"$in": many(2000, func(i int) any {
			return []any{float64(i), "nope"}
		})}}},
		// Many conditions, each scanning the whole array.
		"or of scans": map[string]any{"$or": many(2000, func(i int) any {
			return map[string]any{"data": map[string]any{"a": map[string]any{"$eq": float64(-1 - i)}}}
		})},
		// Regular expressions over every element.
		"regexes": map[string]any{"$and": many(500, func(i int) any {
			return map[string]any{"data": map[string]any{"a": map[string]any{"$not": map[string]any{"$regex": "^z" + strings.Repeat("a", i%7)}}}}
		})},
	}
	out := map[string]*Filter{}
	for name, v := range filters {
		f, err := Compile(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = f
	}
	return out
}

// TestFilterBudget: adversarial filters fail their evaluation with ErrBudget after at most the step budget,
// and the same filters match a small event within it.
func TestFilterBudget(t *testing.T) {
	big := adversarialDoc(3000)
	for i, s := range big["data"].(map[string]any)["a"].([]any) {
		s.(map[string]any)["name"] = "abc" + strings.Repeat("b", i%50)
	}
	big["data"].(map[string]any)["a"] = append(big["data"].(map[string]any)["a"].([]any), "plain", "strings")
	small := map[string]any{"data": map[string]any{"a": []any{"x"}}}
	for name, f := range adversarialFilters(t) {
		if _, err := f.Eval(small); err != nil {
			t.Fatalf("%s on a small event: %v", name, err)
		}
		ok, err := f.Eval(big)
		if !errors.Is(err, ErrBudget) || ok {
			t.Fatalf("%s on 3,000 elements: %v %v, want ErrBudget", name, ok, err)
		}
		if f.Match(big) {
			t.Fatalf("%s: Match over budget = true", name)
		}
	}
}

// TestFilterStepsAreDeterministic: the steps a filter takes on an event are counted exactly: a budget of that
// many succeeds, one fewer fails.
func TestFilterStepsAreDeterministic(t *testing.T) {
	f, err := Compile(map[string]any{"data": map[string]any{"a": map[string]any{"$eq": "z"}}})
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"data": map[string]any{"a": []any{"a", "b", "c"}}}
	// The array itself, then each of its 3 elements: 4 steps.
	if ok, err := f.eval(doc, fbudget{left: 4}); ok || err != nil {
		t.Fatalf("within 4 steps: %v %v", ok, err)
	}
	if _, err := f.eval(doc, fbudget{left: 3}); !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "steps") {
		t.Fatalf("within 3 steps: %v, want the step budget", err)
	}
}

// TestFilterTimeBudgetStopsAPastDeadline: a filter whose deadline has passed stops at its first clock
// reading, after 1024 steps, whatever its step budget.
func TestFilterTimeBudgetStopsAPastDeadline(t *testing.T) {
	f := adversarialFilters(t)["or of scans"]
	const budget = 1 << 30
	b := fbudget{left: budget, deadline: 1}
	ok, b := f.m(adversarialDoc(3000), true, b)
	if ok || b.left != timeUp {
		t.Fatalf("past the deadline: %v, left %d, want the time budget spent", ok, b.left)
	}
	_, err := f.eval(adversarialDoc(3000), fbudget{left: budget, deadline: 1})
	if !errors.Is(err, ErrBudget) || !strings.Contains(err.Error(), "running after") {
		t.Fatalf("past the deadline: %v", err)
	}
}

// TestRouterRecordsAFilterOverBudget: an event whose filter evaluation exceeds the budget still goes to the
// destination, as a match carrying the error (intake records it skipped with the reason), and other
// destinations are unaffected.
func TestRouterRecordsAFilterOverBudget(t *testing.T) {
	f := adversarialFilters(t)["or of scans"]
	topics, err := CompileTopics([]string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRouter([]Route{{Name: "costly", Topics: topics, Filter: f}, {Name: "plain", Topics: topics}})
	doc := adversarialDoc(3000)
	got := r.Route(&Event{Topic: "t", Doc: func() (map[string]any, error) { return doc, nil }})
	if len(got) != 2 || got[0].Name != "costly" || !errors.Is(got[0].Err, ErrBudget) || got[1].Name != "plain" || got[1].Err != nil {
		t.Fatalf("Route = %+v", got)
	}
}

// TestTransformThatPanicsTheParserIsAnError: input on which the JMESPath lexer panics (a non-ASCII rune after
// an identifier) is refused with an error at compile, never a panic: tenants write transforms, and a stored one
// is compiled again at every start.
func TestTransformThatPanicsTheParserIsAnError(t *testing.T) {
	for _, expr := range []string{"A\u0080", "data.x\u00e9", "a.b\u4e16"} {
		if _, err := CompileTransform(expr); err == nil {
			t.Errorf("CompileTransform(%q) accepted it", expr)
		}
	}
}

// TestTransformErrorQuotesTheExpressionShort: an evaluation error, kept with every failed attempt, quotes the
// start of a long expression, cut on a rune boundary, not all of it.
func TestTransformErrorQuotesTheExpressionShort(t *testing.T) {
	// 11 bytes, then two-byte runes: byte 64 falls inside one.
	expr := `abs(data."a` + strings.Repeat("é", 2000) + `")`
	tr, err := CompileTransform(expr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Apply(map[string]any{"data": map[string]any{}})
	if err == nil {
		t.Fatal("abs of a missing field evaluated without an error")
	}
	msg := err.Error()
	if len(msg) > 400 || !strings.HasPrefix(msg, `transform "abs(data.\"aé`) || !strings.Contains(msg, `éé"…: `) {
		t.Fatalf("the error quotes %d bytes of a %d-byte expression: %.200s", len(msg), len(expr), msg)
	}
	if strings.Contains(msg, `\x`) {
		t.Fatalf("the cut split a rune: %.200s", msg)
	}
}
