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
// generated gRPC code stay inside plugins/; a plugin never imports them. This package imports sinks and
// core/event for the shared vocabulary (re-exported here) and nothing else of Sluice.
package sdk
