// Command nats is a Sluice sink plugin that publishes events to NATS JetStream. It is built only on
// plugins/sdk, the way a third party writes a plugin:
//
//	go build -o sluice-nats ./plugins/examples/nats
//	sha256sum sluice-nats
//
// and in sluice.yaml:
//
//	plugins:
//	  - {name: nats, path: ./sluice-nats, sha256: <digest>}
//	destinations:
//	  - name: orders-to-nats
//	    type: nats
//	    topics: ["order.*"]
//	    config:
//	      url: nats://127.0.0.1:4222
//	      subject: "sluice.{topic}"
//	      stream: SLUICE
//	      create_stream: true
//
// Each event is one JetStream message: the body is the event envelope (or the destination's transform
// result), Nats-Msg-Id is the event id so JetStream drops a retried duplicate inside the stream's duplicate
// window, and Sluice-Topic carries the topic. A batch is published asynchronously and each event reports
// its own acknowledgement.
package main

import (
	"context"

	"github.com/sluicehq/sluice/plugins/sdk"
)

func main() { newPlugin().Serve() }

// newPlugin describes the plugin; main serves it and the tests run it in-process with sdktest. A plugin that
// needs no in-process tests can write main as one call: sdk.Serve("nats", open, options...).
func newPlugin() *sdk.Plugin {
	return sdk.New("nats", func(ctx context.Context, cfg Config) (sdk.Sink, error) { return newSink(ctx, cfg) },
		sdk.WithDoc("publish to NATS JetStream (Nats-Msg-Id = event id)"),
		sdk.WithLimits(sdk.Limits{MaxBatch: 100}))
}
