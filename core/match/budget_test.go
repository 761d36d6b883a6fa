package match

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestTransformBudgetFailsTheEvaluationNotTheProcess: expressions that would build gigabytes fail their
// evaluation (or their compilation) with an error; none allocates beyond the budget.
func TestTransformBudgetFailsTheEvaluationNotTheProcess(t *testing.T) {
	doc := map[string]any{"data": map[string]any{"s": strings.Repeat("x", 1000)}}
	for _, expr := range []string{
		"pad_left('x', `1000000000000`, 'y')",
		"pad_right(data.s, `100000000`, 'y')",
		"replace(replace(data.s, '', data.s), '', data.s)",
	} {
		tr, err := CompileTransform(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if _, err := tr.Apply(doc); !errors.Is(err, errBudget) && (err == nil || !strings.Contains(err.Error(), "budget")) {
			t.Fatalf("%s: Apply = %v, want a budget error", expr, err)
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
	if _, err := tr.Apply(big); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("a 512-fold copy of 32 KiB: %v, want the output bound", err)
	}
}

// TestTransformTimeBudgetRefusesCallsPastTheDeadline: once an evaluation's time is up, every further function
// call fails it.
func TestTransformTimeBudgetRefusesCallsPastTheDeadline(t *testing.T) {
	tr, err := CompileTransform("length(data)")
	if err != nil {
		t.Fatal(err)
	}
	late := &budgetCaller{inner: tr.caller, deadline: time.Now().Add(-time.Second)}
	if _, err := late.CallFunction("length", []any{"abc"}); err == nil || !strings.Contains(err.Error(), "time budget") {
		t.Fatalf("a call past the deadline: %v", err)
	}
	onTime := &budgetCaller{inner: tr.caller, deadline: time.Now().Add(time.Hour)}
	if v, err := onTime.CallFunction("length", []any{"abc"}); err != nil || v != 3.0 {
		t.Fatalf("a call in time: %v %v", v, err)
	}
}
