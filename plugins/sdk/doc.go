// Package sdk is everything a Sluice sink plugin imports. A plugin is an executable whose main is one call:
//
//	func main() {
//		sdk.Serve("nats", func(ctx context.Context, cfg Config) (sdk.Sink, error) { return newSink(ctx, cfg) })
//	}
//
// Serve is generic over the plugin's own config struct. The struct's tags describe the config to Sluice with
// the same vocabulary built-in sinks use — `yaml:"name"`, `desc:"…"`, `default:"…"`, `required:"true"`,
// `secret:"true"` — so `sluice sinks describe` lists its fields, `sluice validate` checks a destination's
// block (unknown keys, wrong types, missing required fields, and the struct's own Validate method) and points
// every problem at its YAML line, and `validate --print` masks its secrets.
//
// A Sink's Send returns nil, an error for the whole batch classified with Permanent, Retryable or Gone
// (unclassified means retryable), or a *BatchError with one entry per event. Sluice owns batching, retries
// and timing: a sink never sleeps or retries by itself.
//
// Test a plugin in-process with plugins/sdk/sdktest. The handshake, protocol versions, go-plugin and the
// generated gRPC code stay inside the SDK (wire, internal/proto); a plugin never imports them.
//
// The SDK is a Go module of its own and imports nothing of Sluice's gateway: the vocabulary it shares with
// Sluice's built-in sinks (limits, error classes, config fields and problems) is defined here, in sinkapi and
// schema, and Sluice's package sinks re-exports it, so both sides use the very same types. Its dependencies
// are go-plugin, gRPC, protobuf and yaml.v3.
package sdk
