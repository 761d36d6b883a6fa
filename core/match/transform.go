package match

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	jmespath "github.com/jmespath-community/go-jmespath"
)

// Transform is a compiled JMESPath expression that reshapes an event before a destination receives it. It is
// applied to the event document {id, topic, time, tenant, metadata, data} and safe for concurrent use.
type Transform struct {
	expr string
	jp   jmespath.JMESPath
}

// CompileTransform parses a JMESPath expression. Syntax errors, and calls of functions JMESPath does not
// have, are reported here so a destination never starts with a transform that cannot run.
func CompileTransform(expr string) (*Transform, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("is empty; write a JMESPath expression such as \"data\" or \"{id: id, status: data.case.status}\", or remove transform")
	}
	jp, err := jmespath.Compile(expr)
	if err != nil {
		var se jmespath.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("JMESPath syntax error at character %d: %s (in %q)", se.Offset+1,
				strings.TrimPrefix(se.Error(), "SyntaxError: "), expr)
		}
		return nil, fmt.Errorf("not a JMESPath expression: %v", err)
	}
	t := &Transform{expr: expr, jp: jp}
	// Unknown functions are only found while evaluating: evaluate once against an empty event, where every
	// field is null, and keep only the errors that a real event cannot make disappear.
	if _, err := t.search(map[string]any{}); err != nil && strings.Contains(err.Error(), "unknown function") {
		return nil, fmt.Errorf("%v (in %q)", err, expr)
	}
	return t, nil
}

// String returns the expression.
func (t *Transform) String() string { return t.expr }

// Apply evaluates the transform against an event document and returns the result as JSON. An error means the
// expression could not be evaluated for this event (a function given the wrong type, say); retrying cannot
// change that.
func (t *Transform) Apply(doc map[string]any) (json.RawMessage, error) {
	v, err := t.search(doc)
	if err != nil {
		return nil, fmt.Errorf("transform %q: %v", t.expr, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("transform %q: result is not JSON: %v", t.expr, err)
	}
	return b, nil
}

func (t *Transform) search(doc map[string]any) (v any, err error) {
	// The evaluator is a third-party interpreter fed with publisher data: a panic inside it must fail one
	// delivery, not the lane.
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("evaluation failed: %v", r)
		}
	}()
	return t.jp.Search(doc)
}
