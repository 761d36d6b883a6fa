// Package template renders the small name templates sinks use for routing keys, message groups and object keys:
// `{topic}.{tenant}`, `{topic}/{yyyy}/{mm}/{dd}/{hh}/{batch_id}.ndjson`, `{data.case.id}`.
//
// A template is compiled once, when the config is validated (an unknown placeholder or an unbalanced brace is a
// config error naming it and listing the valid ones), and rendered per event from precompiled parts.
//
// Placeholders:
//
//	{topic} {tenant} {id}       the event's fields ({tenant} is empty for an event without one)
//	{yyyy} {mm} {dd} {hh}       the event time in UTC, zero-padded (now, when the event has no time)
//	{batch_id}                  the id the sink gives the batch being sent
//	{data.<path>}               a scalar in the event data; the path is dot-separated keys, array
//	                            elements by index: {data.case.id}, {data.items.0.sku}
//	{metadata.<key>}            one metadata value
//
// Any placeholder may carry a default, written as in the config's ${NAME:-default}: `{data.region:-eu}`,
// `{tenant:-none}`, `{data.x:-}`. The default replaces an empty value and a missing one.
//
// A data path or metadata key that is missing (or JSON null) in an event with no default is a render error,
// never an empty string: a routing key or object key silently built from a hole sends events where nobody
// looks. Sinks turn that error into a permanent failure of that one event. A data value that is an object or
// an array is an error too; strings render as is, numbers as written in the JSON, booleans as true/false.
// `{{` and `}}` are literal braces.
//
// This package imports only the standard library: Sluice's built-in sinks (through sinks/template) and
// plugins (through sdk.CompileTemplate) render with it alike.
package template
