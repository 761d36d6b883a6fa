// Package wire is what both ends of the plugin boundary share: the go-plugin handshake and protocol version,
// the go-plugin adapter for the gRPC service, the conversions between the shared vocabulary (sinkapi, schema)
// and the generated code, and the host's client. Errors cross typed: per-event outcomes (permanent,
// retryable with its delay, gone, canceled, deadline exceeded), config problems as path and message, an
// unknown handle as gRPC's NotFound.
//
// Sluice's plugin host imports it; a plugin author never needs it (plugins/sdk hides it). The generated code
// stays internal to the SDK module.
package wire
