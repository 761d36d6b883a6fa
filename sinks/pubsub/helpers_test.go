package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

const testProject = "sluice-test"

func uniqueID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// emulatorHost is the real Pub/Sub emulator, from PUBSUB_EMULATOR_HOST; those tests skip only when it is unset.
func emulatorHost(t testing.TB) string {
	t.Helper()
	h := os.Getenv("PUBSUB_EMULATOR_HOST")
	if h == "" {
		t.Skip("PUBSUB_EMULATOR_HOST is not set (e.g. 127.0.0.1:8085); .ci/services/pubsub.sh starts the emulator and sets it")
	}
	return h
}

// adminClient talks to a Pub/Sub server at addr (the emulator or pstest) directly.
func adminClient(t testing.TB, addr string) *pubsub.Client {
	t.Helper()
	c, err := pubsub.NewClient(context.Background(), testProject,
		option.WithEndpoint(addr),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithoutAuthentication(),
		option.WithTelemetryDisabled())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// topicSub is a test's own topic with one subscription whose messages a receiver collects.
type topicSub struct {
	topic string // id
	mu    sync.Mutex
	got   []*pubsub.Message
}

func newTopicSub(t testing.TB, addr string) *topicSub {
	t.Helper()
	admin := adminClient(t, addr)
	ts := &topicSub{topic: uniqueID("sluice-test-t")}
	ctx := context.Background()
	topicName := "projects/" + testProject + "/topics/" + ts.topic
	subName := "projects/" + testProject + "/subscriptions/" + uniqueID("sluice-test-s")
	if _, err := admin.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName}); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	if _, err := admin.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: subName, Topic: topicName, AckDeadlineSeconds: 60,
	}); err != nil {
		t.Fatalf("create subscription: %v", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = admin.Subscriber(subName).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			ts.mu.Lock()
			ts.got = append(ts.got, m)
			ts.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = admin.SubscriptionAdminClient.DeleteSubscription(c, &pubsubpb.DeleteSubscriptionRequest{Subscription: subName})
		_ = admin.TopicAdminClient.DeleteTopic(c, &pubsubpb.DeleteTopicRequest{Topic: topicName})
	})
	return ts
}

func (ts *topicSub) drain() []*pubsub.Message {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := ts.got
	ts.got = nil
	return out
}

func (ts *topicSub) read(context.Context) ([]sinktest.Received, error) {
	ms := ts.drain()
	out := make([]sinktest.Received, len(ms))
	for i, m := range ms {
		out[i] = sinktest.Received{ID: m.Attributes["id"], Topic: m.Attributes["topic"], Body: m.Data}
	}
	return out, nil
}

func newTestSink(t testing.TB, c *Config) *Sink {
	t.Helper()
	s, err := New(context.Background(), c, sinks.Env{Destination: "test", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func testConfig(addr, topic string) *Config {
	c := NewConfig()
	c.Project, c.Topic, c.EmulatorHost = testProject, topic, addr
	return c
}
