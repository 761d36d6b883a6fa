package match

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jmespath "github.com/jmespath-community/go-jmespath"
	"github.com/jmespath-community/go-jmespath/pkg/binding"
	"github.com/jmespath-community/go-jmespath/pkg/functions"
	"github.com/jmespath-community/go-jmespath/pkg/interpreter"
	"github.com/jmespath-community/go-jmespath/pkg/parsing"
)

// A transform's budget (DESIGN §9): an expression stored by a tenant runs on every event its destination
// receives, so what one evaluation may build is bounded, and exceeding a bound fails that delivery (an event
// error), never the process. Panics inside the evaluator are recovered per evaluation (search).
const (
	// MaxTransformExpr bounds the expression's length.
	MaxTransformExpr = 16 << 10
	// MaxTransformGrowth bounds the product of the widths of the expression's multi-selects: how many times
	// over it can repeat its input.
	MaxTransformGrowth = 1024
	// MaxTransformString bounds a string any one function returns (pad, replace, join, ...).
	MaxTransformString = 1 << 20
	// MaxTransformArray bounds an array any one function returns.
	MaxTransformArray = 100_000
	// MaxTransformOutput bounds the encoded result.
	MaxTransformOutput = 8 << 20
	// MaxTransformMemory bounds the estimated bytes of every value one evaluation builds (projections,
	// flattens, slices, multi-selects, function results), counted as they are built.
	MaxTransformMemory = 16 << 20
	// MaxTransformSteps bounds the AST nodes one evaluation may evaluate (an element of a projection costs
	// at least one): the deterministic half of the time budget.
	MaxTransformSteps = 1_000_000
	// TransformTime bounds one evaluation's wall-clock time (read every 1024 steps): the half that holds
	// whatever the steps cost on a slow or busy machine.
	TransformTime = 250 * time.Millisecond
)

// errBudget is the error of a function call that would build more than its budget.
var errBudget = fmt.Errorf("%w: memory", ErrBudget)

// budgetedFunctions replace JMESPath's built-in functions with ones that refuse to build oversized strings
// and arrays: arguments that ask for more are refused before the work, results are checked after.
var budgetedFunctions = func() []functions.FunctionEntry {
	defs := functions.GetDefaultFunctions()
	out := make([]functions.FunctionEntry, 0, len(defs))
	for _, f := range defs {
		name, h := f.Name, f.Handler
		f.Handler = func(args []any) (any, error) {
			if estimate(name, args) > MaxTransformString {
				return nil, fmt.Errorf("%s: %w", name, errBudget)
			}
			v, err := h(args)
			if err != nil {
				return v, err
			}
			switch r := v.(type) {
			case string:
				if len(r) > MaxTransformString {
					return nil, fmt.Errorf("%s: %w", name, errBudget)
				}
			case []any:
				if len(r) > MaxTransformArray {
					return nil, fmt.Errorf("%s: %w", name, errBudget)
				}
			}
			return v, nil
		}
		out = append(out, f)
	}
	return out
}()

// estimate is the size a growing string function would build from args (0 for others).
func estimate(name string, args []any) int {
	str := func(i int) string {
		if i < len(args) {
			s, _ := args[i].(string)
			return s
		}
		return ""
	}
	num := func(i int) float64 {
		if i < len(args) {
			n, _ := args[i].(float64)
			return n
		}
		return 0
	}
	switch name {
	case "pad_left", "pad_right":
		if w := num(1); w > MaxTransformString {
			return MaxTransformString + 1
		}
	case "replace":
		subj, old, repl := str(0), str(1), str(2)
		if old == "" {
			return len(subj) + (len(subj)+1)*len(repl)
		}
		return len(subj) + (len(subj)/len(old))*len(repl)
	case "join":
		total := 0
		if list, ok := (func() ([]any, bool) {
			if len(args) > 1 {
				l, ok := args[1].([]any)
				return l, ok
			}
			return nil, false
		})(); ok {
			for _, x := range list {
				s, _ := x.(string)
				total += len(s) + len(str(0))
				if total > MaxTransformString {
					return total
				}
			}
		}
		return total
	}
	return 0
}

// growth is the product of the widths of an expression's multi-selects: a bound on how many times over its
// result can repeat its input.
func growth(n parsing.ASTNode) int {
	g := 1
	if n.NodeType == parsing.ASTMultiSelectList || n.NodeType == parsing.ASTMultiSelectHash {
		g = max(len(n.Children), 1)
	}
	for _, c := range n.Children {
		g *= growth(c)
		if g > MaxTransformGrowth {
			return g
		}
	}
	return g
}

// encodedSize approximates the JSON encoding size of v, stopping once it passes limit (so measuring a value
// that shares itself many times costs at most limit).
func encodedSize(v any, limit int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		if n > limit {
			return
		}
		switch x := v.(type) {
		case string:
			n += len(x) + 2
		case []any:
			n += 2
			for _, e := range x {
				walk(e)
				n++
			}
		case map[string]any:
			n += 2
			for k, e := range x {
				n += len(k) + 4
				walk(e)
			}
		default:
			n += 8
		}
	}
	walk(v)
	return n
}

// Transform is a compiled JMESPath expression that reshapes an event before a destination receives it. It is
// applied to the event document {id, topic, time, tenant, metadata, data} and safe for concurrent use.
type Transform struct {
	expr   string
	ast    parsing.ASTNode
	caller interpreter.FunctionCaller
}

// parseJMESPath parses expr. The library's lexer panics on some input (a non-ASCII rune right after an
// identifier, e.g. "A\u0080"): a panic becomes an error, since expressions come from tenants and a stored one is
// compiled again at every start.
func parseJMESPath(expr string) (ast parsing.ASTNode, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot be parsed (%v); use only ASCII in field names, or quote them: \"name\"", r)
		}
	}()
	return jmespath.NewParser().Parse(expr)
}

// CompileTransform parses a JMESPath expression. Syntax errors, and calls of functions JMESPath does not
// have, are reported here so a destination never starts with a transform that cannot run.
func CompileTransform(expr string) (*Transform, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("is empty; write a JMESPath expression such as \"data\" or \"{id: id, status: data.case.status}\", or remove transform")
	}
	if len(expr) > MaxTransformExpr {
		return nil, fmt.Errorf("is %d bytes; a transform may be at most %d", len(expr), MaxTransformExpr)
	}
	ast, err := parseJMESPath(expr)
	if err != nil {
		var se jmespath.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("JMESPath syntax error at character %d: %s (in %q)", se.Offset+1,
				strings.TrimPrefix(se.Error(), "SyntaxError: "), expr)
		}
		return nil, fmt.Errorf("not a JMESPath expression: %v", err)
	}
	if g := growth(ast); g > MaxTransformGrowth {
		return nil, fmt.Errorf("could multiply its input %d times (multi-selects in a row); at most %d is allowed (in %q)", g, MaxTransformGrowth, expr)
	}
	t := &Transform{expr: expr, ast: ast, caller: interpreter.NewFunctionCaller(budgetedFunctions...)}
	// Unknown functions are only found while evaluating: evaluate once against an empty event, where every
	// field is null, and keep only the errors that a real event cannot make disappear.
	// An expression over its budget on an empty event (projections over large literals) is over it on every
	// event: refused too.
	if _, err := t.search(map[string]any{}); err != nil {
		if errors.Is(err, ErrBudget) {
			return nil, fmt.Errorf("%w even on an empty event; simplify it (in %q)", err, expr)
		}
		if strings.Contains(err.Error(), "unknown function") {
			return nil, fmt.Errorf("%v (in %q)", err, expr)
		}
	}
	return t, nil
}

// String returns the expression.
func (t *Transform) String() string { return t.expr }

// shortExpr is how much of the expression an evaluation error quotes: the error is kept with every failed
// attempt, and the expression (up to 16 KiB) is in the destination already.
const shortExpr = 64

// short is the expression quoted for an error, cut to its first shortExpr bytes (whole runes) and "…".
func (t *Transform) short() string {
	if len(t.expr) <= shortExpr {
		return strconv.Quote(t.expr)
	}
	cut := shortExpr
	for cut > 0 && !utf8.RuneStart(t.expr[cut]) {
		cut--
	}
	return strconv.Quote(t.expr[:cut]) + "…"
}

// Apply evaluates the transform against an event document and returns the result as JSON. An error means the
// expression could not be evaluated for this event (a function given the wrong type, say); retrying cannot
// change that.
func (t *Transform) Apply(doc map[string]any) (json.RawMessage, error) {
	v, err := t.search(doc)
	if err != nil {
		return nil, fmt.Errorf("transform %s: %w", t.short(), err)
	}
	// The result may share one value many times over (["@", "@"] repeated): its encoding is measured, within
	// the budget, before it is made.
	if n := encodedSize(v, MaxTransformOutput+1); n > MaxTransformOutput {
		return nil, fmt.Errorf("transform %s: %w: the result exceeds %d bytes", t.short(), ErrBudget, MaxTransformOutput)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("transform %s: result is not JSON: %v", t.short(), err)
	}
	return b, nil
}

func (t *Transform) search(doc map[string]any) (v any, err error) {
	return t.searchWith(doc, MaxTransformSteps, MaxTransformMemory, time.Now().Add(TransformTime))
}

func (t *Transform) searchWith(doc map[string]any, steps, mem int, deadline time.Time) (v any, err error) {
	// The built-in functions are third-party code fed with publisher data: a panic inside one must fail one
	// delivery, not the lane.
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("evaluation failed: %v", r)
		}
	}()
	e := &evaluator{caller: t.caller, root: doc, bindings: binding.NewBindings(), maxSteps: steps, maxMem: mem,
		deadline: deadline}
	v, err = e.eval(t.ast, doc)
	if e.over != nil {
		return nil, e.over
	}
	return v, err
}
