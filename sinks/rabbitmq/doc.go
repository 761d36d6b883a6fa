// Package rabbitmq is the AMQP 0-9-1 sink (RabbitMQ): it publishes each event's envelope to an exchange with a
// routing key rendered from a template, and counts an event delivered only when the broker confirmed it
// (publisher confirms).
//
// One connection per destination, one confirm-mode channel per concurrent Send (pooled). A lost connection is
// re-dialled in the background with backoff (100ms doubling to 15s). A Send that finds no connection waits for
// a dial in progress, or dials itself; within the backoff after a failed dial it answers that failure at once
// (retryable with the time left, permanent for refused credentials), since the dispatcher owns retries. A
// batch cut by a lost connection reports each event: the confirmed ones delivered, the rest retryable.
//
// An event whose routing key template cannot be rendered (a {data.…} path it lacks, with no :-default), whose
// body is over max_message_bytes, or that is returned unroutable under mandatory fails alone, permanently.
//
// Sluice declares no exchange unless `declare: true`. Messages carry message_id = event id, type = topic,
// timestamp = event time, content_type application/json, and headers `id`, `topic`, `tenant` (when set) and
// `metadata.<key>` for each metadata entry.
//
// It imports the sink contract, core/event, sinks/template and core/netguard (to recognise a guard refusal).
//
// May import: core/event, core/netguard, sinks, sinks/internal/..., sinks/template, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package rabbitmq
