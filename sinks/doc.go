// Package sinks is the contract between Sluice's dispatcher and the drivers that deliver events: the Sink
// interface, the error classes a sink reports, the optional abilities it may have, and the registry that maps a
// destination's `type` to the driver's config and constructor.
//
// sink.go imports only core/event, so a driver (or a plugin adapter) depends on nothing else of Sluice's.
// The dispatcher owns batching, retries and timing: a sink never sleeps or retries by itself.
package sinks
