package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// BenchmarkSend measures the plugin boundary: the same NATS sink called in-process and through the plugin
// host (gRPC over the AutoMTLS connection to the subprocess), per batch size. The extra ns/op of "host" over
// "inprocess" is the latency the boundary adds to one batch; events/s is reported as a metric.
func BenchmarkSend(b *testing.B) {
	base := natsURL(b)
	nc, err := nats.Connect(base)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream := fmt.Sprintf("BENCH_%d", os.Getpid())
	defer js.DeleteStream(context.Background(), stream)
	block := fmt.Sprintf("url: %s\nsubject: 'bench%d.{topic}'\nstream: %s\ncreate_stream: true", base, os.Getpid(), stream)

	spec := loadThroughHost(b)
	viaHost := newThroughHost(b, spec, block)
	defer viaHost.Close(context.Background())

	cfg := Config{URL: base, Subject: fmt.Sprintf("bench%d.{topic}", os.Getpid()), Stream: stream, CreateStream: true,
		ConnectTimeout: 2 * time.Second, MaxBatch: 100}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	direct, err := newSink(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close(context.Background())

	for _, size := range []int{1, 10, 100} {
		batch := make([]event.Event, size)
		for i := range batch {
			batch[i] = event.Event{ID: event.NewID(), Topic: "bench.event", Time: time.Now(), Data: []byte(`{"case":{"id":"c-1","status":"approved"}}`)}
		}
		for _, tc := range []struct {
			name string
			sink sinks.Sink
		}{{"inprocess", direct}, {"host", viaHost}} {
			b.Run(fmt.Sprintf("%s/batch=%d", tc.name, size), func(b *testing.B) {
				ctx := context.Background()
				for b.Loop() {
					for i := range batch {
						batch[i].ID = event.NewID() // new ids: JetStream would drop repeats as duplicates
					}
					if err := tc.sink.Send(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
