// Package match decides which events a subscription or destination receives:
// topic patterns select by event topic, payload filters select by the content
// of the event envelope, transforms (JMESPath) reshape it for one destination,
// and the Router (route.go) puts these together: it names the destinations an
// event goes to, with their ordering keys, decoding the event's data at most
// once per event and only when a filter or a data ordering key needs it.
//
// It is pure (no I/O, no global state) and must import only the standard
// library and the JMESPath library: no other Sluice package (not config, event,
// store, dispatch or intake; the router has its own small input types, Route
// and Event), so it can be fuzzed and benchmarked in isolation and reused by the
// config loader, destinations, intake and the dispatcher.
//
// Everything is validated once, at compile time, and compiled into closures,
// because matching runs for every event against every destination: Match
// methods never panic, never use reflection and do not allocate on common
// paths. A mistake in a filter is a compile error with a precise location,
// never a filter that silently matches nothing.
//
// # Topic patterns
//
// CompileTopics accepts a non-empty list of patterns; a topic matches if any
// pattern matches it. Matching is case-sensitive.
//
//	"*"             every topic
//	"case.*"        every topic under "case.": case.created, case.a.b; not case, not cases.x
//	"case.created"  exactly that topic
//
// "*" anywhere else (ca*, *.x, a.*.b), an empty pattern and ".*" are errors.
//
// # Payload filters
//
// Compile accepts a decoded JSON or YAML value. A nil filter or an empty
// object matches every event. Otherwise the filter must be an object and is
// matched against the event envelope {id, topic, time, tenant, metadata,
// data} as decoded by encoding/json (with or without UseNumber).
//
// In an object, every key must match (implicit AND). Keys beginning with "$"
// are operators; other keys are field names, looked up literally (a "." in a
// key is part of the name, not a path separator; a document field whose
// name starts with "$" cannot be addressed). A field's condition is:
//
//	a scalar              equality                {topic: case.created}
//	an object             nested conditions       {data: {case: {status: approved}}}
//	an array              containment             {data: {roles: [reviewer]}}
//	an operator object    operators on the field  {data: {amount: {$gt: 10, $lte: 100}}}
//
// Containment means the field is an array holding every listed element, in
// any order, compared with deep equality; an empty list matches any array.
//
// Operators:
//
//	$eq, $neq              deep equality with any JSON value
//	$gt, $gte, $lt, $lte   number against number, string against string
//	                       (lexicographic; fine for RFC 3339 times written
//	                       in the same zone and precision); mixed types never match
//	$in, $nin              membership in a non-empty array of values
//	$exists                true or false: whether the field is present
//	$startsWith, $endsWith string prefix/suffix
//	$regex                 Go RE2 syntax, unanchored; use (?i) for case-insensitivity
//	$and, $or              non-empty array of condition objects
//	$not                   one condition object
//
// $and, $or and $not apply their condition objects to the same value the
// operator sits on, so they work at the top level ({$or: [{topic: a},
// {tenant: t}]}) and on a field ({status: {$not: {$in: [a, b]}}}).
//
// # Semantics
//
// Unquoted YAML timestamps (decoded by yaml.v3 as time.Time) are turned
// back into RFC 3339 strings, as if they had been quoted.
//
// Numbers are compared as float64 whatever their representation (YAML int,
// json.Number, float64), so {amount: 5} matches 5 and 5.0. Integers beyond
// 2^53 lose precision.
//
// A missing field fails every condition except $exists: false, $neq, $nin
// and $not (which negate a failing condition). Descending into a missing
// field, or into a value that is not an object (including an array),
// behaves as if every field beneath it is missing, so {data: {case: {status:
// {$neq: x}}}} matches an event with no data.case at all. A null field is
// present: {x: null} and {x: {$exists: true}} match it, a missing x matches
// neither.
//
// When the field is an array, operators ($eq, $in, $gt, $startsWith, $regex
// and the rest) match if the array itself or any one of its elements
// matches; a bare scalar behaves like $eq. $neq and $nin are the exact
// negations of $eq and $in, so on an array they hold only if no element is
// equal / in the set. $exists looks only at presence. Each operator is
// applied to the array on its own, so {$gt: 5, $lt: 6} is satisfied by
// [3, 7]. Arrays are not searched recursively, and field names do not
// descend into array elements.
//
// Validation rules beyond operand types: an object may not mix field keys
// with value operators ({amount: {$gt: 1, currency: usd}} is an error; use
// separate objects or $and), though $and, $or and $not may sit beside field
// keys; value operators may not appear at the top level, where there is no
// field to apply them to; an empty object is only allowed as the whole
// filter; empty $in/$nin arrays and empty field names are rejected; NaN is
// rejected; nesting is limited to 64 levels.
//
// # Routing
//
// NewRouter takes the enabled destinations as Routes (name, topics, filter,
// tenant, scope, ordering key) in order; Router.Route returns those an Event
// reaches. A route with a tenant sees only that tenant's events, a tenant-less
// one every tenant's; a route's scope must be contained in the event's. A
// route without filter conditions never causes the data to be decoded.
//
// # Budgets
//
// Filters and transforms are written by tenants and run on every event, so
// one evaluation is bounded: a filter by MaxFilterSteps (a step is one
// condition tested against one value, weighted by the work of composite
// comparisons and regular expressions) and FilterTime; a transform by
// MaxTransformSteps AST nodes evaluated, TransformTime, MaxTransformMemory
// bytes of values built (projections, flattens, slices, multi-selects and
// function results as they are built) and MaxTransformOutput. Exceeding one
// is an error wrapping ErrBudget: the event's fault, failing one delivery
// (Route answers a Match with Err for a filter). Step counts are
// deterministic; the clock is read every 1024 steps.
//
// # Errors
//
// Compile and CompileTopics return an errors.Join of *Error values, one per
// problem, sorted by path; walk them with errors.As or Unwrap() []error. An
// Error's Path is relative to the value compiled: map keys as they are,
// array indexes as separate "[i]" elements. Rendered, "[i]" attaches to the
// previous key and keys are joined with "." (keys that would be ambiguous,
// such as ones containing "." or spaces, are Go-quoted), giving for example
//
//	data.amount.$gt: must be a number or a string, got array
//	$and[1].topic.$foo: unknown operator $foo; valid operators are ...
//
// so a config loader can prefix its own location with Error.Prefixed, e.g.
// destinations[0].filter.data.amount.$gt. Topic errors have paths "[i]".
//
// May import: nothing of Sluice's.
// Must not import: net/http, net, os, os/exec, io/fs, database/sql.
package match
