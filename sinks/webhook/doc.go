// Package webhook is the signed HTTP sink: it POSTs each event (or a batch of them) to a URL in the Standard
// Webhooks wire format (or a raw/hex-signed variant for receivers that expect one), and classifies the answer
// for the dispatcher. It speaks to receivers the way enterprise integrations expect: OAuth2 client credentials,
// basic or bearer auth (auth.go), mTLS with certificates re-read when their files change (tls.go), per-event
// url and header templates (route.go), batches with per-event 207 results (batch.go) and W3C trace context on
// every request (trace.go).
//
// It also holds the signing and verification helpers that `sluice listen`, `sluice secret` and receivers' tests
// use. Every connection — to the receiver and to an OAuth2 token endpoint — is dialled by the one transport
// newTransport builds over the sinks.Env dialer (the SSRF guard in production); it never follows redirects or
// reads proxy settings from the environment, since either would let a request reach an address the guard was
// not asked about. Plain-http requests without a proxy are sent over HTTP/1.1 by h1 (h1.go) on connections
// that transport's DialContext makes, on the attempt's own goroutine; everything else goes through the
// transport itself. It imports the sink contract, core/event, sinks/template and the OpenTelemetry API, and
// nothing else of Sluice's but core/netguard (to recognise a guard refusal).
//
// May import: core/event, core/netguard, sinks, sinks/internal/..., sinks/template, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package webhook
