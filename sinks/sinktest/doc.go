// Package sinktest is the conformance suite every sink passes: the built-in ones against their real servers,
// and plugin sinks through the plugin host. A sink is done when
//
//	sinktest.Run(t, sinktest.Features{...}, sinktest.Harness{New: ..., BadCredentials: ...})
//
// passes. The suite sends events the way the dispatcher does (batches up to the sink's MaxBatch, re-sending
// only the entries that failed retryably) and reads back what the far side holds, so it checks what the service
// really received, not what the sink says it sent.
//
// Cases (subtests, in this order): Empty, Single, Batch, Concurrent, PartialFailure, Oversized, Cancel,
// CloseDuringSend, BadCredentials, Outage. A case whose feature the sink lacks is skipped with the reason, never
// passed silently.
//
// Proxy is a TCP proxy a harness can put between a sink and its server to cut the service off and bring it
// back (the Outage case) without disturbing other tests that share the server.
//
// sinktest imports the sink contract and core/event; it is imported only by tests.
//
// May import: core/event, sinks, plugins/sdk/....
package sinktest
