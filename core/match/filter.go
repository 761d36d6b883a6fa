package match

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Error is one problem in a filter or topic list. Path locates it relative
// to the value handed to Compile or CompileTopics: object keys are stored
// as-is and array indexes as separate "[i]" elements, so the YAML node can
// be found by walking Path. Use PathString or Prefixed to render it.
type Error struct {
	Path []string
	Msg  string
}

// Error renders "path: msg", e.g. "data.amount.$gt: must be a number or a
// string, got array", or just msg when the problem is at the root.
func (e *Error) Error() string {
	p := e.PathString()
	if p == "" {
		return e.Msg
	}
	return p + ": " + e.Msg
}

// PathString renders Path as dotted keys with bracketed indexes, e.g.
// "$and[1].topic". Keys that would be ambiguous in that syntax (empty, or
// containing '.', '[', ']', '"', spaces or control characters) are quoted
// with Go syntax, e.g. metadata."app.kubernetes.io/name". The result never
// starts with "[" because a filter root is always an object; topic errors
// are the exception, being just "[i]".
func (e *Error) PathString() string {
	var b strings.Builder
	for _, seg := range e.Path {
		if isIndexSeg(seg) {
			b.WriteString(seg)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(quoteKey(seg))
	}
	return b.String()
}

// Prefixed renders the error with its path joined onto prefix, the location
// of the filter or topic list in a larger document: with prefix
// "destinations[0].filter" it gives "destinations[0].filter.data.amount.$gt:
// must be ...", and with prefix "routes[2].topics" a topic error gives
// "routes[2].topics[1]: invalid pattern ...".
func (e *Error) Prefixed(prefix string) string {
	p := e.PathString()
	switch {
	case prefix == "":
	case p == "":
		p = prefix
	case p[0] == '[':
		p = prefix + p
	default:
		p = prefix + "." + p
	}
	if p == "" {
		return e.Msg
	}
	return p + ": " + e.Msg
}

func isIndexSeg(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func quoteKey(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r == '.' || r == '[' || r == ']' || r == '"' || r <= ' ' || r == 0x7f {
			return strconv.Quote(s)
		}
	}
	return s
}

// joinErrors always wraps, even a single error, so callers have one way to
// walk the problems: Unwrap() []error.
func joinErrors(errs []error) error {
	sort.SliceStable(errs, func(i, j int) bool {
		return pathLess(errs[i].(*Error).Path, errs[j].(*Error).Path)
	})
	return errors.Join(errs...)
}

// pathLess orders paths the way they appear in the source: keys
// alphabetically (map order is lost in decoding anyway) and indexes
// numerically, so "[2]" comes before "[10]".
func pathLess(a, b []string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		if isIndexSeg(a[i]) && isIndexSeg(b[i]) {
			na, _ := strconv.Atoi(a[i][1 : len(a[i])-1])
			nb, _ := strconv.Atoi(b[i][1 : len(b[i])-1])
			if na != nb {
				return na < nb
			}
		}
		return a[i] < b[i]
	}
	return len(a) < len(b)
}

// Filter is a compiled payload filter. A nil *Filter, and the Filter compiled
// from a nil or empty filter, match every document. A Filter is immutable and
// safe for concurrent use.
type Filter struct {
	m matcher
}

// MatchesAll reports whether the filter has no conditions (nil or empty): every event matches, so callers
// need not decode the event to ask.
func (f *Filter) MatchesAll() bool { return f == nil || f.m == nil }

// Match reports whether doc satisfies the filter. doc is the event as
// decoded by encoding/json into generic values (with or without
// UseNumber). Match never panics and does not allocate on common paths. An
// evaluation over its budget does not match; Eval tells it apart.
func (f *Filter) Match(doc map[string]any) bool {
	ok, _ := f.Eval(doc)
	return ok
}

// Eval reports whether doc satisfies the filter, or an error wrapping
// ErrBudget when deciding it would take more than MaxFilterSteps steps or
// FilterTime: a filter is stored by a tenant and runs on every event, and
// its cost grows with the event (arrays scanned once per condition), so one
// evaluation is bounded and exceeding the bound is about that event.
func (f *Filter) Eval(doc map[string]any) (bool, error) {
	return f.eval(doc, fbudget{left: MaxFilterSteps})
}

func (f *Filter) eval(doc map[string]any, b fbudget) (bool, error) {
	if f == nil || f.m == nil {
		return true, nil
	}
	ok, b := f.m(doc, true, b)
	if b.left < 0 {
		if b.left == timeUp {
			return false, fmt.Errorf("filter: %w: still running after %s", ErrBudget, FilterTime)
		}
		return false, fmt.Errorf("filter: %w: more than %d evaluation steps", ErrBudget, MaxFilterSteps)
	}
	return ok, nil
}

// A filter evaluation's budget (DESIGN §9). A step is one condition tested
// against one value; conditions whose test costs more (a composite operand
// compared in depth, a bare array checked against each element, a regular
// expression over a long string) count as many steps as their work, so the
// step count bounds the time deterministically. The wall clock is read every
// 1024 steps too, from the first 1024 on: filters within that many steps (all
// real ones) never read it.
const (
	MaxFilterSteps = 1_000_000
	FilterTime     = 100 * time.Millisecond
)

// timeUp is fbudget.left once the wall-clock budget is spent.
const timeUp = math.MinInt64 / 2

// epoch makes fbudget's deadline a monotonic duration.
var epoch = time.Now()

// fbudget is what is left of one evaluation's budget. It is passed and
// returned by value, so matching stays free of allocations.
type fbudget struct {
	left     int   // steps left; negative once spent
	deadline int64 // time.Since(epoch) limit; 0 until the clock is first read
}

// spend takes n steps.
func (b fbudget) spend(n int) fbudget {
	if b.left < 0 {
		return b
	}
	before := b.left
	b.left -= n
	if b.left >= 0 && before>>10 != b.left>>10 {
		now := int64(time.Since(epoch))
		switch {
		case b.deadline == 0:
			b.deadline = now + int64(FilterTime)
		case now > b.deadline:
			b.left = timeUp
		}
	}
	return b
}

// matcher tests a value found at some position in the document; present is
// false when the field is absent, which several operators ($exists, $neq,
// $nin, $not) must distinguish from an explicit null. It spends its steps
// from b and returns what is left; once b is spent, every matcher answers
// false without testing anything.
type matcher func(v any, present bool, b fbudget) (bool, fbudget)

// Limits that stop hostile or cyclic Go values from hanging Compile; real
// filters are nowhere near them.
const (
	maxDepth = 64
	maxNodes = 1_000_000
)

const validOperators = "$eq, $neq, $gt, $gte, $lt, $lte, $in, $nin, $exists, $startsWith, $endsWith, $regex, $and, $or, $not"

var valueOps = map[string]bool{
	"$eq": true, "$neq": true, "$gt": true, "$gte": true, "$lt": true, "$lte": true,
	"$in": true, "$nin": true, "$exists": true, "$startsWith": true, "$endsWith": true, "$regex": true,
}

var logicOps = map[string]bool{"$and": true, "$or": true, "$not": true}

// badValue stands in for a filter value that normalisation already
// reported, so later stages neither report it again nor trip over it.
type badValue struct{}

type compiler struct {
	errs     []error
	nodes    int
	tooLarge bool
}

// segment is one step of the path being compiled. Paths are only rendered
// to strings when an error is reported, which keeps huge $in lists cheap.
// They are extended with plain append: siblings reuse the same slot, which
// is safe because the walk is depth-first and errorf copies.
type segment struct {
	key string
	idx int // >= 0 for an array index, -1 for an object key
}

func keySeg(k string) segment { return segment{key: k, idx: -1} }
func idxSeg(i int) segment    { return segment{idx: i} }

func (c *compiler) errorf(path []segment, format string, args ...any) {
	p := make([]string, len(path))
	for i, s := range path {
		if s.idx >= 0 {
			p[i] = "[" + strconv.Itoa(s.idx) + "]"
		} else {
			p[i] = s.key
		}
	}
	c.errs = append(c.errs, &Error{Path: p, Msg: fmt.Sprintf(format, args...)})
}

// Compile validates filter and compiles it for fast matching. filter is a
// decoded JSON or YAML value; see the package documentation for the
// language. On failure the error is an errors.Join of *Error values
// describing every problem found, sorted by path.
func Compile(filter any) (*Filter, error) {
	c := &compiler{}
	path := make([]segment, 0, 16)
	v := c.normalise(filter, path, 0)
	var m matcher
	switch x := v.(type) {
	case nil, badValue:
	case map[string]any:
		if len(x) > 0 {
			m = c.object(x, path, true)
		}
	default:
		c.errorf(nil, "filter must be an object of conditions, e.g. {topic: case.created}, got %s", kind(x))
	}
	if len(c.errs) > 0 {
		return nil, joinErrors(c.errs)
	}
	return &Filter{m: m}, nil
}

// normalise converts a decoded value to the canonical forms the matchers
// understand (map[string]any, []any, string, bool, nil, float64), so that
// YAML ints, json.Number and friends all compare equal to the float64 or
// json.Number that encoding/json puts in documents.
func (c *compiler) normalise(v any, path []segment, depth int) any {
	c.nodes++
	if c.nodes > maxNodes {
		if !c.tooLarge {
			c.tooLarge = true
			c.errorf(path, "filter is too large (more than %d values)", maxNodes)
		}
		return badValue{}
	}
	if depth > maxDepth {
		c.errorf(path, "filter is nested too deeply (more than %d levels)", maxDepth)
		return badValue{}
	}
	switch x := v.(type) {
	case nil, string, bool:
		return x
	case float64:
		return c.float(x, path)
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			c.errorf(path, "invalid number %q", string(x))
			return badValue{}
		}
		return c.float(f, path)
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case float32:
		return c.float32(x, path)
	case time.Time:
		// yaml.v3 turns unquoted timestamps into time.Time; writing them
		// back as the RFC 3339 text the author typed makes
		// {time: {$gte: 2024-01-01T00:00:00Z}} behave as if it were quoted.
		return x.Format(time.RFC3339Nano)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = c.normalise(e, append(path, keySeg(k)), depth+1)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		badKey := false
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				c.errorf(append(path, keySeg(fmt.Sprint(k))), "object keys must be strings, got %T", k)
				badKey = true
				continue
			}
			out[ks] = c.normalise(e, append(path, keySeg(ks)), depth+1)
		}
		if badKey {
			// The object is already reported; checking what is left of it
			// would only produce misleading follow-on errors.
			return badValue{}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = c.normalise(e, append(path, idxSeg(i)), depth+1)
		}
		return out
	}
	return c.normaliseReflect(v, path, depth)
}

// normaliseReflect handles values built in Go rather than decoded (typed
// slices and maps, named numeric types). Reflection is fine here: it only
// runs at compile time.
func (c *compiler) normaliseReflect(v any, path []segment, depth int) any {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return float64(rv.Uint())
	case reflect.Float32:
		return c.float32(float32(rv.Float()), path)
	case reflect.Float64:
		return c.float(rv.Float(), path)
	case reflect.String:
		return rv.String()
	case reflect.Bool:
		return rv.Bool()
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = c.normalise(rv.Index(i).Interface(), append(path, idxSeg(i)), depth+1)
		}
		return out
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			c.errorf(path, "object keys must be strings, got %s", rv.Type().Key())
			return badValue{}
		}
		if rv.IsNil() {
			return nil
		}
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			k := it.Key().String()
			out[k] = c.normalise(it.Value().Interface(), append(path, keySeg(k)), depth+1)
		}
		return out
	}
	c.errorf(path, "unsupported value of type %T; use a string, number, boolean, null, array or object", v)
	return badValue{}
}

func (c *compiler) float(f float64, path []segment) any {
	if math.IsNaN(f) {
		c.errorf(path, "not-a-number (NaN) is not a valid value: it equals nothing, not even itself")
		return badValue{}
	}
	return f
}

// float32 goes through its shortest decimal form so a float32 0.1 becomes
// the float64 0.1 a JSON document would carry, not 0.10000000149.
func (c *compiler) float32(f float32, path []segment) any {
	f64, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return c.float(f64, path)
}

// kind names canonical values in error messages using JSON vocabulary, which
// is what config authors think in.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// object compiles an object of conditions that is matched against a single
// value: field keys descend into it, operator keys test it. root marks the
// document level, where value operators make no sense.
func (c *compiler) object(obj map[string]any, path []segment, root bool) matcher {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var fieldKeys []string
	for _, k := range keys {
		if !strings.HasPrefix(k, "$") {
			fieldKeys = append(fieldKeys, k)
		}
	}

	var (
		fields []fieldCond
		conds  []matcher
	)
	for _, k := range keys {
		p := append(path, keySeg(k))
		v := obj[k]
		switch {
		case !strings.HasPrefix(k, "$"):
			if k == "" {
				c.errorf(p, "field name must not be empty")
				continue
			}
			fields = append(fields, fieldCond{key: k, m: c.value(v, p)})
		case logicOps[k]:
			conds = append(conds, c.logic(k, v, p, root))
		case valueOps[k]:
			if root {
				c.errorf(p, "operator %s must be applied to a field, e.g. {data: {amount: {%s: ...}}}", k, k)
				continue
			}
			if len(fieldKeys) > 0 {
				c.errorf(p, "operator %s cannot be mixed with field keys (%s) in the same object; give each its own object, e.g. {amount: {%s: ...}}, or combine them with $and",
					k, strings.Join(fieldKeys, ", "), k)
				continue
			}
			conds = append(conds, c.valueOp(k, v, p))
		default:
			c.unknownOperator(k, p)
		}
	}
	return allOf(fields, conds)
}

func (c *compiler) unknownOperator(k string, p []segment) {
	// "$startswith" or "$AND" is a likelier slip than an invented operator,
	// so name the intended one instead of listing them all.
	for _, op := range strings.Split(validOperators, ", ") {
		if strings.EqualFold(op, k) {
			c.errorf(p, "unknown operator %s (operators are case-sensitive: did you mean %s?)", k, op)
			return
		}
	}
	c.errorf(p, "unknown operator %s; valid operators are %s", k, validOperators)
}

type fieldCond struct {
	key string
	m   matcher
}

func allOf(fields []fieldCond, conds []matcher) matcher {
	switch {
	case len(fields) == 0 && len(conds) == 1:
		return conds[0]
	case len(fields) == 1 && len(conds) == 0:
		// The overwhelmingly common shape ({data: {case: {status: x}}}); a
		// dedicated closure skips the loop bookkeeping.
		key, m := fields[0].key, fields[0].m
		return func(v any, _ bool, b fbudget) (bool, fbudget) {
			obj, _ := v.(map[string]any)
			child, ok := obj[key]
			return m(child, ok, b)
		}
	}
	return func(v any, present bool, b fbudget) (bool, fbudget) {
		if len(fields) > 0 {
			// A non-object (or absent) value has no fields: a nil map makes
			// every lookup report "absent", which keeps $exists/$neq/$nin
			// consistent at any depth.
			obj, _ := v.(map[string]any)
			for i := range fields {
				child, ok := obj[fields[i].key]
				var m bool
				if m, b = fields[i].m(child, ok, b); !m {
					return false, b
				}
			}
		}
		for _, m := range conds {
			var ok bool
			if ok, b = m(v, present, b); !ok {
				return false, b
			}
		}
		return true, b
	}
}

// value compiles the condition given for a field.
func (c *compiler) value(v any, path []segment) matcher {
	switch x := v.(type) {
	case badValue:
		return never
	case map[string]any:
		if len(x) == 0 {
			c.errorf(path, "empty object has no conditions; use {$exists: true} to require the field or {$eq: {}} to require an empty object")
			return never
		}
		return c.object(x, path, false)
	case []any:
		return containsAll(x)
	}
	return anyElem(eqPred(v), weight(v))
}

func never(_ any, _ bool, b fbudget) (bool, fbudget) { return false, b }

// weight is the steps one comparison with the operand v may take: its size
// in values.
func weight(v any) int {
	switch x := v.(type) {
	case []any:
		n := 1
		for _, e := range x {
			n += weight(e)
		}
		return n
	case map[string]any:
		n := 1
		for _, e := range x {
			n += weight(e)
		}
		return n
	}
	return 1
}

func (c *compiler) logic(op string, v any, path []segment, root bool) matcher {
	if _, bad := v.(badValue); bad {
		return never
	}
	if op == "$not" {
		obj, ok := v.(map[string]any)
		if !ok {
			c.errorf(path, "must be an object of conditions, e.g. {$in: [a, b]}, got %s", kind(v))
			return never
		}
		if len(obj) == 0 {
			c.errorf(path, "must not be empty: an empty object has no conditions to negate")
			return never
		}
		m := c.object(obj, path, root)
		return func(v any, present bool, b fbudget) (bool, fbudget) {
			ok, b := m(v, present, b)
			return !ok && b.left >= 0, b
		}
	}
	arr, ok := v.([]any)
	if !ok {
		c.errorf(path, "must be a non-empty array of condition objects, e.g. [{topic: a}, {topic: b}], got %s", kind(v))
		return never
	}
	if len(arr) == 0 {
		c.errorf(path, "must be a non-empty array of condition objects, got an empty array")
		return never
	}
	ms := make([]matcher, 0, len(arr))
	for i, e := range arr {
		p := append(path, idxSeg(i))
		switch x := e.(type) {
		case badValue:
		case map[string]any:
			if len(x) == 0 {
				c.errorf(p, "empty object has no conditions")
				continue
			}
			ms = append(ms, c.object(x, p, root))
		default:
			c.errorf(p, "must be an object of conditions, got %s", kind(e))
		}
	}
	if op == "$and" {
		return func(v any, present bool, b fbudget) (bool, fbudget) {
			for _, m := range ms {
				var ok bool
				if ok, b = m(v, present, b); !ok {
					return false, b
				}
			}
			return true, b
		}
	}
	return func(v any, present bool, b fbudget) (bool, fbudget) {
		for _, m := range ms {
			var ok bool
			if ok, b = m(v, present, b); ok {
				return true, b
			}
		}
		return false, b
	}
}

func (c *compiler) valueOp(op string, v any, path []segment) matcher {
	if _, bad := v.(badValue); bad {
		return never
	}
	switch op {
	case "$eq":
		return anyElem(eqPred(v), weight(v))
	case "$neq":
		// Absent counts as "not equal", so {$neq: x} selects events lacking
		// the field too; add {$exists: true} to exclude them.
		return not(anyElem(eqPred(v), weight(v)))
	case "$gt", "$gte", "$lt", "$lte":
		p := ordPred(op, v)
		if p == nil {
			c.errorf(path, "must be a number or a string, got %s", kind(v))
			return never
		}
		return anyElem(p, 1)
	case "$in", "$nin":
		arr, ok := v.([]any)
		if !ok {
			c.errorf(path, "must be a non-empty array of values, e.g. [approved, rejected], got %s", kind(v))
			return never
		}
		if len(arr) == 0 {
			would := "nothing"
			if op == "$nin" {
				would = "everything"
			}
			c.errorf(path, "must not be an empty array: it would match %s", would)
			return never
		}
		set := newValueSet(arr)
		in := anyElem(set.has, 1+set.otherWeight)
		if op == "$in" {
			return in
		}
		return not(in)
	case "$exists":
		want, ok := v.(bool)
		if !ok {
			c.errorf(path, "must be true or false, got %s", kind(v))
			return never
		}
		return func(_ any, present bool, b fbudget) (bool, fbudget) {
			b = b.spend(1)
			return present == want && b.left >= 0, b
		}
	case "$startsWith", "$endsWith":
		s, ok := v.(string)
		if !ok {
			c.errorf(path, "must be a string, got %s", kind(v))
			return never
		}
		w := 1 + len(s)>>8
		if op == "$startsWith" {
			return anyElem(func(v any) bool { x, ok := v.(string); return ok && strings.HasPrefix(x, s) }, w)
		}
		return anyElem(func(v any) bool { x, ok := v.(string); return ok && strings.HasSuffix(x, s) }, w)
	case "$regex":
		s, ok := v.(string)
		if !ok {
			c.errorf(path, "must be a string holding a regular expression, got %s", kind(v))
			return never
		}
		re, err := regexp.Compile(s)
		if err != nil {
			c.errorf(path, "invalid regular expression (Go RE2 syntax): %v", err)
			return never
		}
		return regexElem(re)
	}
	// Unreachable: object only routes known value operators here.
	return never
}

// not negates m (a spent budget still answers false).
func not(m matcher) matcher {
	return func(v any, present bool, b fbudget) (bool, fbudget) {
		ok, b := m(v, present, b)
		return !ok && b.left >= 0, b
	}
}

// anyElem lifts a per-value predicate so that an array field matches when
// the array itself or any one of its elements satisfies it. Each test of
// pred costs w steps.
func anyElem(pred func(any) bool, w int) matcher {
	return func(v any, present bool, b fbudget) (bool, fbudget) {
		if !present {
			return false, b
		}
		if b = b.spend(w); b.left < 0 {
			return false, b
		}
		if pred(v) {
			return true, b
		}
		if arr, ok := v.([]any); ok {
			for _, e := range arr {
				if b = b.spend(w); b.left < 0 {
					return false, b
				}
				if pred(e) {
					return true, b
				}
			}
		}
		return false, b
	}
}

// regexElem is anyElem for $regex, whose test costs steps by the length of
// the string (RE2 is linear in it).
func regexElem(re *regexp.Regexp) matcher {
	test := func(v any, b fbudget) (bool, fbudget) {
		x, ok := v.(string)
		if b = b.spend(1 + len(x)>>8); !ok || b.left < 0 {
			return false, b
		}
		return re.MatchString(x), b
	}
	return func(v any, present bool, b fbudget) (bool, fbudget) {
		if !present {
			return false, b
		}
		var ok bool
		if ok, b = test(v, b); ok || b.left < 0 {
			return ok, b
		}
		if arr, isArr := v.([]any); isArr {
			for _, e := range arr {
				if ok, b = test(e, b); ok || b.left < 0 {
					return ok, b
				}
			}
		}
		return false, b
	}
}

// eqPred specialises equality on the operand type so scalar comparisons
// skip the generic deepEqual switch.
func eqPred(op any) func(any) bool {
	switch o := op.(type) {
	case string:
		return func(v any) bool { s, ok := v.(string); return ok && s == o }
	case float64:
		return func(v any) bool { f, ok := toFloat(v); return ok && f == o }
	case bool:
		return func(v any) bool { b, ok := v.(bool); return ok && b == o }
	case nil:
		return func(v any) bool { return v == nil }
	}
	return func(v any) bool { return deepEqual(op, v) }
}

func ordPred(op string, operand any) func(any) bool {
	switch o := operand.(type) {
	case float64:
		switch op {
		case "$gt":
			return func(v any) bool { f, ok := toFloat(v); return ok && f > o }
		case "$gte":
			return func(v any) bool { f, ok := toFloat(v); return ok && f >= o }
		case "$lt":
			return func(v any) bool { f, ok := toFloat(v); return ok && f < o }
		case "$lte":
			return func(v any) bool { f, ok := toFloat(v); return ok && f <= o }
		}
	case string:
		switch op {
		case "$gt":
			return func(v any) bool { s, ok := v.(string); return ok && s > o }
		case "$gte":
			return func(v any) bool { s, ok := v.(string); return ok && s >= o }
		case "$lt":
			return func(v any) bool { s, ok := v.(string); return ok && s < o }
		case "$lte":
			return func(v any) bool { s, ok := v.(string); return ok && s <= o }
		}
	}
	return nil
}

// containsAll implements a bare array condition: the field must be an array
// holding every listed element (order and extra elements don't matter).
func containsAll(want []any) matcher {
	w := weight(want)
	return func(v any, _ bool, b fbudget) (bool, fbudget) {
		have, ok := v.([]any)
		if b = b.spend(1); !ok || b.left < 0 {
			return false, b
		}
		// At worst every wanted value is compared in depth with every element.
		if b = b.spend(w * len(have)); b.left < 0 {
			return false, b
		}
	next:
		for _, w := range want {
			for _, h := range have {
				if deepEqual(w, h) {
					continue next
				}
			}
			return false, b
		}
		return true, b
	}
}

// toFloat reads a document number. Out-of-range json.Numbers become ±Inf
// rather than "not a number", which keeps comparisons against them truthful.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return f, errors.Is(err, strconv.ErrRange)
		}
		return f, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float32:
		return float64(n), true
	}
	return 0, false
}

// deepEqual compares a canonical filter value with a document value. It is
// hand-written rather than reflect.DeepEqual so numbers of different
// representations compare by value and nothing allocates.
func deepEqual(op, v any) bool {
	switch o := op.(type) {
	case string:
		s, ok := v.(string)
		return ok && s == o
	case float64:
		f, ok := toFloat(v)
		return ok && f == o
	case bool:
		b, ok := v.(bool)
		return ok && b == o
	case nil:
		return v == nil
	case []any:
		a, ok := v.([]any)
		if !ok || len(a) != len(o) {
			return false
		}
		for i := range o {
			if !deepEqual(o[i], a[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		m, ok := v.(map[string]any)
		if !ok || len(m) != len(o) {
			return false
		}
		for k, ov := range o {
			dv, ok := m[k]
			if !ok || !deepEqual(ov, dv) {
				return false
			}
		}
		return true
	}
	return false
}

// valueSet is the precomputed operand of $in/$nin: hashed for scalars,
// linear only for the rare composite members.
type valueSet struct {
	// Short string lists are scanned: comparing a few strings beats hashing.
	strList []string
	strs    map[string]struct{}
	nums    map[float64]struct{}
	other   []any
	// otherWeight is the steps comparing a value with every member of other may take.
	otherWeight int
	hasTrue     bool
	hasFalse    bool
	hasNull     bool
}

const linearStringMax = 8

func newValueSet(vals []any) *valueSet {
	s := &valueSet{}
	var strs []string
	for _, v := range vals {
		switch x := v.(type) {
		case string:
			strs = append(strs, x)
		case float64:
			if s.nums == nil {
				s.nums = make(map[float64]struct{})
			}
			s.nums[x] = struct{}{}
		case bool:
			if x {
				s.hasTrue = true
			} else {
				s.hasFalse = true
			}
		case nil:
			s.hasNull = true
		case badValue:
		default:
			s.other = append(s.other, x)
			s.otherWeight += weight(x)
		}
	}
	if len(strs) <= linearStringMax {
		s.strList = strs
	} else {
		s.strs = make(map[string]struct{}, len(strs))
		for _, x := range strs {
			s.strs[x] = struct{}{}
		}
	}
	return s
}

func (s *valueSet) has(v any) bool {
	switch x := v.(type) {
	case string:
		if s.strs != nil {
			_, ok := s.strs[x]
			return ok
		}
		for _, y := range s.strList {
			if x == y {
				return true
			}
		}
		return false
	case bool:
		if x {
			return s.hasTrue
		}
		return s.hasFalse
	case nil:
		return s.hasNull
	case []any, map[string]any:
		for _, o := range s.other {
			if deepEqual(o, v) {
				return true
			}
		}
		return false
	}
	f, ok := toFloat(v)
	if !ok || s.nums == nil {
		return false
	}
	_, ok = s.nums[f]
	return ok
}
