// Command jetstream reads and deletes JetStream streams for Sluice's plugin tests, which check what the
// example NATS plugin published. It is a module of its own so that Sluice's go.mod needs no NATS client:
//
//	jetstream read URL STREAM     one JSON line per message: {"id","topic","body"}; nothing for a missing stream
//	jetstream delete URL STREAM
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type message struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
	Body  []byte `json:"body"`
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: jetstream read|delete URL STREAM")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "jetstream:", err)
		os.Exit(1)
	}
}

func run(op, url, stream string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch op {
	case "delete":
		if err := js.DeleteStream(ctx, stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		return nil
	case "read":
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		for {
			batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(300*time.Millisecond))
			if err != nil {
				return err
			}
			got := 0
			for m := range batch.Messages() {
				got++
				if err := enc.Encode(message{ID: m.Headers().Get("Nats-Msg-Id"), Topic: m.Headers().Get("Sluice-Topic"), Body: m.Data()}); err != nil {
					return err
				}
			}
			if err := batch.Error(); err != nil {
				return err
			}
			if got == 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("unknown operation %q", op)
}
