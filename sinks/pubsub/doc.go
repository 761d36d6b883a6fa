// Package pubsub is the Google Cloud Pub/Sub sink: it publishes each event's envelope to one topic, with the
// attributes `id`, `topic`, `tenant` (when set) and `metadata.<key>` per metadata entry, and counts an event
// delivered only when its publish result came back with a message id.
//
// The client batches by itself; the sink sets it to flush at once (a full dispatcher batch fills one publish
// request) and awaits each event's result, so a failed request reports exactly the events it carried.
// Sluice creates no topic: a missing one is a permanent failure naming it.
//
// Ordering keys: the sink publishes with an ordering key when it has one for an event (EnableMessageOrdering,
// and ResumePublish after a failure so the dispatcher's retry is not refused). The dispatcher does not hand
// sinks the destination's ordering_key value yet; see orderingKey.
//
// It imports the sink contract and core/event, and nothing else of Sluice's but core/netguard (to recognise a
// guard refusal).
//
// May import: core/event, core/netguard, sinks, sinks/internal/..., sinks/template, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package pubsub
