// Package sinks is the contract between Sluice's dispatcher and the drivers that deliver events: the Sink
// interface, the error classes a sink reports, the optional abilities it may have, and the registry that maps a
// destination's `type` to the driver's config and constructor.
//
// sink.go imports only core/event, plugins/sdk/netguard (the network policy a sink dials under) and the vocabulary it
// shares with the plugin SDK (plugins/sdk/sinkapi and plugins/sdk/schema, leaf packages of the SDK module), so a driver (or a plugin adapter) depends on nothing
// else of Sluice's. registry.go registers sinks (Register) and is the one config layer built on the SDK's
// schema walker: describe, mask and find secrets for built-in sinks and plugin configs alike.
// The dispatcher owns batching, retries and timing: a sink never sleeps or retries by itself.
//
// May import: core/event, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package sinks
