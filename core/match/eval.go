package match

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/jmespath-community/go-jmespath/pkg/binding"
	"github.com/jmespath-community/go-jmespath/pkg/functions"
	"github.com/jmespath-community/go-jmespath/pkg/interpreter"
	"github.com/jmespath-community/go-jmespath/pkg/parsing"
	"github.com/jmespath-community/go-jmespath/pkg/util"
)

// ErrBudget is the error of a transform or filter evaluation that would exceed its budget (steps, time or
// memory). It is about the event meeting the expression: the delivery fails, retrying cannot help, and the
// destination's health is not in question.
var ErrBudget = errors.New("exceeds its evaluation budget")

// evaluator runs a parsed JMESPath expression under a budget. The library's tree interpreter has no hook
// between nodes (only function calls go through an interface), so a projection over a large array, a flatten
// of a flatten or nested projections reaching back to the root would run unbounded; this walks the same AST
// with the same semantics (pkg/interpreter v1.1.1, checked against it by TestEvaluatorMatchesLibrary and
// FuzzTransformEvaluator), counting a step per node evaluated and the bytes of every value it builds.
type evaluator struct {
	caller   interpreter.FunctionCaller
	root     any
	bindings binding.Bindings
	steps    int // nodes evaluated so far
	maxSteps int
	mem      int // estimated bytes of the values built so far
	maxMem   int
	deadline time.Time
	over     error // the budget error, once exceeded: sticky, even where JMESPath swallows errors
}

// Approximate heap cost of the values an evaluation builds.
const (
	costElem  = 16 // an interface in a slice
	costEntry = 48 // a map entry with its key header
)

// step counts one node evaluation; the wall-clock deadline is read every 1024 steps.
func (e *evaluator) step() error {
	if e.over != nil {
		return e.over
	}
	e.steps++
	if e.steps > e.maxSteps {
		e.over = fmt.Errorf("%w: more than %d evaluation steps", ErrBudget, e.maxSteps)
	} else if e.steps&1023 == 0 && time.Now().After(e.deadline) {
		e.over = fmt.Errorf("%w: still running after %s", ErrBudget, TransformTime)
	}
	return e.over
}

// grow counts n bytes built.
func (e *evaluator) grow(n int) error {
	if e.over != nil {
		return e.over
	}
	e.mem += n
	if e.mem > e.maxMem || e.mem < 0 {
		e.over = fmt.Errorf("%w: builds more than %d bytes", ErrBudget, e.maxMem)
	}
	return e.over
}

// size is the cost counted for a value a function returned (shallow: what the call built at its top level).
func size(v any) int {
	switch x := v.(type) {
	case string:
		return len(x)
	case []any:
		return len(x) * costElem
	case map[string]any:
		return len(x) * costEntry
	}
	return 0
}

// asList reads a JMESPath array: []any, or any other slice type (copied), as the interpreter's reflection
// paths do.
func asList(v any) ([]any, bool) {
	if l, ok := v.([]any); ok {
		return l, true
	}
	if v == nil || !util.IsSliceType(v) {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, true
}

// swallow returns the budget error if the budget is spent, nil otherwise: the JMESPath interpreter turns a
// failed left side of some nodes into null, which must not hide an exceeded budget.
func (e *evaluator) swallow() error { return e.over }

// project evaluates expr on each element, keeping the results that are not null, each counted against the
// budget (a projection's right-hand side). With a condition (a filter projection's), only the elements it
// holds true for are evaluated; nil means all.
func (e *evaluator) project(expr parsing.ASTNode, elems []any, cond *parsing.ASTNode) ([]any, error) {
	collected := []any{}
	for _, elem := range elems {
		if cond != nil {
			keep, err := e.eval(*cond, elem)
			if err != nil {
				return nil, err
			}
			if util.IsFalse(keep) {
				continue
			}
		}
		v, err := e.eval(expr, elem)
		if err != nil {
			return nil, err
		}
		if v != nil {
			if err := e.grow(costElem); err != nil {
				return nil, err
			}
			collected = append(collected, v)
		}
	}
	return collected, nil
}

func (e *evaluator) eval(node parsing.ASTNode, value any) (any, error) {
	if err := e.step(); err != nil {
		return nil, err
	}
	switch node.NodeType {
	case parsing.ASTArithmeticUnaryExpression:
		x, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		num, ok := x.(float64)
		if !ok {
			return nil, nil
		}
		switch node.Value {
		case parsing.TOKPlus:
			return num, nil
		case parsing.TOKMinus:
			return -num, nil
		}
	case parsing.ASTArithmeticExpression:
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		right, err := e.eval(node.Children[1], value)
		if err != nil {
			return nil, err
		}
		l, ok := left.(float64)
		if !ok {
			return nil, nil
		}
		r, ok := right.(float64)
		if !ok {
			return nil, nil
		}
		switch node.Value {
		case parsing.TOKPlus:
			return l + r, nil
		case parsing.TOKMinus:
			return l - r, nil
		case parsing.TOKStar, parsing.TOKMultiply:
			return l * r, nil
		case parsing.TOKDivide:
			return l / r, nil
		case parsing.TOKModulo:
			return math.Mod(l, r), nil
		case parsing.TOKDiv:
			return math.Floor(l / r), nil
		}
	case parsing.ASTComparator:
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		right, err := e.eval(node.Children[1], value)
		if err != nil {
			return nil, err
		}
		switch node.Value {
		case parsing.TOKEQ:
			return util.ObjsEqual(left, right), nil
		case parsing.TOKNE:
			return !util.ObjsEqual(left, right), nil
		}
		l, ok := left.(float64)
		if !ok {
			return nil, nil
		}
		r, ok := right.(float64)
		if !ok {
			return nil, nil
		}
		switch node.Value {
		case parsing.TOKGT:
			return l > r, nil
		case parsing.TOKGTE:
			return l >= r, nil
		case parsing.TOKLT:
			return l < r, nil
		case parsing.TOKLTE:
			return l <= r, nil
		}
	case parsing.ASTExpRef:
		// Functions (map, sort_by, max_by, ...) call it back: each call is evaluated under this budget too.
		child := node.Children[0]
		return functions.ExpRef(func(data any) (any, error) { return e.eval(child, data) }), nil
	case parsing.ASTFunctionExpression:
		args := make([]any, 0, len(node.Children))
		if err := e.grow(len(node.Children) * costElem); err != nil {
			return nil, err
		}
		for _, arg := range node.Children {
			v, err := e.eval(arg, value)
			if err != nil {
				return nil, err
			}
			args = append(args, v)
		}
		v, err := e.caller.CallFunction(node.Value.(string), args)
		if e.over != nil {
			return nil, e.over // an expression reference ran out of budget inside the function
		}
		if err != nil {
			return nil, err
		}
		if err := e.grow(size(v)); err != nil {
			return nil, err
		}
		return v, nil
	case parsing.ASTField:
		if m, ok := value.(map[string]any); ok {
			if v := m[node.Value.(string)]; v != nil {
				return v, nil
			}
		}
		// (The interpreter also reads Go struct fields; event documents are decoded JSON and have none.)
		return nil, nil
	case parsing.ASTFilterProjection:
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, e.swallow()
		}
		list, ok := asList(left)
		if !ok {
			return nil, nil
		}
		return e.project(node.Children[1], list, &node.Children[2])
	case parsing.ASTFlatten:
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, e.swallow()
		}
		list, ok := asList(left)
		if !ok {
			return nil, nil
		}
		n := 0
		for _, elem := range list {
			if inner, ok := elem.([]any); ok {
				n += len(inner)
			} else if util.IsSliceType(elem) {
				n += reflect.ValueOf(elem).Len()
			} else {
				n++
			}
		}
		// Refused before the copy is made.
		if err := e.grow(n * costElem); err != nil {
			return nil, err
		}
		flat := make([]any, 0, n)
		for _, elem := range list {
			if inner, ok := asList(elem); ok {
				flat = append(flat, inner...)
			} else {
				flat = append(flat, elem)
			}
		}
		return flat, nil
	case parsing.ASTIdentity, parsing.ASTCurrentNode:
		return value, nil
	case parsing.ASTRootNode:
		return e.root, nil
	case parsing.ASTBindings:
		b := e.bindings
		for _, child := range node.Children {
			v, err := e.eval(child.Children[1], value)
			if err != nil {
				return nil, err
			}
			if err := e.grow(costEntry); err != nil {
				return nil, err
			}
			b = b.Register(child.Children[0].Value.(string), v)
		}
		e.bindings = b
		return value, nil
	case parsing.ASTLetExpression:
		saved := e.bindings
		defer func() { e.bindings = saved }()
		if _, err := e.eval(node.Children[0], value); err != nil {
			return nil, err
		}
		return e.eval(node.Children[1], value)
	case parsing.ASTVariable:
		return e.bindings.Get(node.Value.(string))
	case parsing.ASTIndex:
		list, ok := asList(value)
		if !ok {
			return nil, nil
		}
		i := node.Value.(int)
		if i < 0 {
			i += len(list)
		}
		if i >= 0 && i < len(list) {
			return list[i], nil
		}
		return nil, nil
	case parsing.ASTKeyValPair:
		return e.eval(node.Children[0], value)
	case parsing.ASTLiteral:
		return node.Value, nil
	case parsing.ASTMultiSelectHash:
		if err := e.grow(len(node.Children) * costEntry); err != nil {
			return nil, err
		}
		collected := make(map[string]any, len(node.Children))
		for _, child := range node.Children {
			v, err := e.eval(child, value)
			if err != nil {
				return nil, err
			}
			collected[child.Value.(string)] = v
		}
		return collected, nil
	case parsing.ASTMultiSelectList:
		if err := e.grow(len(node.Children) * costElem); err != nil {
			return nil, err
		}
		collected := make([]any, 0, len(node.Children))
		for _, child := range node.Children {
			v, err := e.eval(child, value)
			if err != nil {
				return nil, err
			}
			collected = append(collected, v)
		}
		return collected, nil
	case parsing.ASTOrExpression:
		matched, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		if util.IsFalse(matched) {
			return e.eval(node.Children[1], value)
		}
		return matched, nil
	case parsing.ASTAndExpression:
		matched, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		if util.IsFalse(matched) {
			return matched, nil
		}
		return e.eval(node.Children[1], value)
	case parsing.ASTNotExpression:
		matched, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		return util.IsFalse(matched), nil
	case parsing.ASTPipe:
		result := value
		for _, child := range node.Children {
			var err error
			if result, err = e.eval(child, result); err != nil {
				return nil, err
			}
		}
		return result, nil
	case parsing.ASTProjection:
		// A string may come out of the left side only for a string slice (foo[1:3] on a string).
		allowString := false
		if first := node.Children[0]; first.NodeType == parsing.ASTIndexExpression {
			allowString = len(first.Children) > 1 && first.Children[1].NodeType == parsing.ASTSlice
		}
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		list, ok := asList(left)
		if !ok {
			if s, ok := left.(string); ok && allowString {
				return s, nil
			}
			return nil, nil
		}
		return e.project(node.Children[1], list, nil)
	case parsing.ASTSubexpression, parsing.ASTIndexExpression:
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, err
		}
		if left == nil {
			return nil, nil
		}
		return e.eval(node.Children[1], left)
	case parsing.ASTSlice:
		params := util.MakeSliceParams(node.Value.([]*int))
		list, ok := asList(value)
		if !ok {
			s, ok := value.(string)
			if !ok {
				return nil, nil
			}
			if err := e.grow(5 * len(s)); err != nil { // the runes, and the string made of them
				return nil, err
			}
			runes, err := util.Slice([]rune(s), params)
			if err != nil {
				return nil, nil
			}
			return string(runes), nil
		}
		if err := e.grow(len(list) * costElem); err != nil {
			return nil, err
		}
		return util.Slice(list, params)
	case parsing.ASTValueProjection:
		left, err := e.eval(node.Children[0], value)
		if err != nil {
			return nil, e.swallow()
		}
		m, ok := left.(map[string]any)
		if !ok {
			return nil, nil
		}
		if err := e.grow(len(m) * costElem); err != nil {
			return nil, err
		}
		values := make([]any, 0, len(m))
		for _, v := range m {
			values = append(values, v)
		}
		return e.project(node.Children[1], values, nil)
	}
	return nil, errors.New("Unknown AST node: " + node.NodeType.String())
}
