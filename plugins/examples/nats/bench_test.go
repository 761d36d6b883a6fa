package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sluicehq/sluice/plugins/sdk"
)

// BenchmarkSend measures the NATS sink in-process, per batch size. Sluice's plugin host measures the same
// sink through the plugin boundary (BenchmarkNATSThroughHost in plugins/host): the difference in ns/op is the
// latency the boundary adds to one batch. events/s is reported as a metric.
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
		batch := make([]sdk.Event, size)
		for i := range batch {
			batch[i] = sdk.Event{Topic: "bench.event", Time: time.Now(), Data: []byte(`{"case":{"id":"c-1","status":"approved"}}`)}
		}
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			n := 0
			for b.Loop() {
				for i := range batch {
					n++
					batch[i].ID = fmt.Sprintf("bench-%d-%d", os.Getpid(), n) // new ids: JetStream drops repeats
				}
				if err := direct.Send(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
