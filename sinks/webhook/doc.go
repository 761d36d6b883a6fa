// Package webhook is the signed HTTP sink: it POSTs each event to a URL in the Standard Webhooks wire format
// (or a raw/hex-signed variant for receivers that expect one), and classifies the answer for the dispatcher.
//
// It also holds the signing and verification helpers that `sluice listen`, `sluice secret` and receivers' tests
// use. It dials only through the sinks.Env dialer (the SSRF guard in production) and never follows redirects or
// reads proxy settings from the environment, since either would let a request reach an address the guard was
// not asked about. It imports the sink contract and core/event, and nothing else of Sluice's but core/netguard
// (to recognise a guard refusal).
//
// May import: core/event, core/netguard, sinks, sinks/internal/..., sinks/template, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package webhook
