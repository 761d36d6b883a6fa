package sqs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/awshttp"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// These tests run against a real SQS-compatible server (fauxqs in .ci/run) at $SLUICE_TEST_SQS_ENDPOINT.

func endpoint(tb testing.TB) string {
	tb.Helper()
	ep := os.Getenv("SLUICE_TEST_SQS_ENDPOINT")
	if ep == "" {
		tb.Skip("SLUICE_TEST_SQS_ENDPOINT is not set (.ci/services/sqs.sh starts a server and sets it)")
	}
	return ep
}

// testClient talks to the server directly (not through any proxy a test puts before the sink), with the SDK's
// retries on: the test's own reads and setup should not be what flakes. It goes through awshttp like the sink:
// without it a ReceiveMessage answer could be cut off mid-body, and its retry finds the messages the first try
// took invisible for the queue's 30-second visibility timeout.
func testClient(ep string) *sqs.Client {
	return sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(ep),
		HTTPClient:  awshttp.Client(http.DefaultTransport),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})
}

var queueSeq atomic.Int64

// newQueue creates a fresh queue, deleted at the end of the test.
func newQueue(tb testing.TB, c *sqs.Client, fifo bool) string {
	tb.Helper()
	name := fmt.Sprintf("sluice-%d-%d", time.Now().UnixNano(), queueSeq.Add(1))
	in := &sqs.CreateQueueInput{QueueName: aws.String(name)}
	if fifo {
		in.QueueName = aws.String(name + ".fifo")
		in.Attributes = map[string]string{"FifoQueue": "true"}
	}
	out, err := c.CreateQueue(context.Background(), in)
	if err != nil {
		tb.Fatalf("create queue: %v", err)
	}
	tb.Cleanup(func() {
		_, _ = c.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
	})
	return *out.QueueUrl
}

// drain receives (and deletes) what the queue holds now.
func drain(ctx context.Context, c *sqs.Client, queueURL string) ([]types.Message, error) {
	var out []types.Message
	for {
		r, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(queueURL), MaxNumberOfMessages: 10,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		if err != nil {
			return out, err
		}
		if len(r.Messages) == 0 {
			return out, nil
		}
		del := make([]types.DeleteMessageBatchRequestEntry, len(r.Messages))
		for i, m := range r.Messages {
			del[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle}
		}
		if _, err := c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: del}); err != nil {
			return out, err
		}
		out = append(out, r.Messages...)
	}
}

func attr(m types.Message, name string) string {
	if v, ok := m.MessageAttributes[name]; ok {
		return aws.ToString(v.StringValue)
	}
	return ""
}

func harness(t *testing.T, fifo bool) sinktest.Harness {
	ep := endpoint(t)
	c := testClient(ep)
	host := strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
	build := func(t *testing.T, queueURL, via string) *Sink {
		cfg := &Config{QueueURL: queueURL, Endpoint: via, AccessKeyID: "test", SecretAccessKey: "test"}
		if fifo {
			cfg.MessageGroup = "{tenant:-none}"
		}
		s, err := New(context.Background(), cfg, sinks.Env{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			q := newQueue(t, c, fifo)
			proxy := sinktest.NewProxy(t, host)
			return sinktest.Target{
				Sink: build(t, q, "http://"+proxy.Addr()),
				Read: func(ctx context.Context) ([]sinktest.Received, error) {
					msgs, err := drain(ctx, c, q)
					out := make([]sinktest.Received, len(msgs))
					for i, m := range msgs {
						out[i] = sinktest.Received{ID: attr(m, "id"), Topic: attr(m, "topic"), Body: []byte(aws.ToString(m.Body))}
					}
					return out, err
				},
				Stop:  func(*testing.T) { proxy.Stop() },
				Start: func(*testing.T) { proxy.Start() },
			}
		},
		Secrets: []string{"test-secret-that-must-not-show"},
	}
}

func features() sinktest.Features {
	return sinktest.Features{
		Oversized: MaxMessageBytes + 1,
		Outage:    true,
		Reasons: map[string]string{
			sinktest.CaseBadCredentials: "fauxqs accepts any credentials; TestWholeCallErrors covers " +
				"InvalidClientTokenId, SignatureDoesNotMatch and AccessDenied against a server speaking the SQS protocol",
		},
	}
}

func TestIntegrationConformance(t *testing.T) {
	sinktest.Run(t, features(), harness(t, false))
}

// TestIntegrationConformanceFIFO runs the suite against a FIFO queue, where the far side must keep a batch's
// order and must not duplicate a re-sent event.
func TestIntegrationConformanceFIFO(t *testing.T) {
	f := features()
	f.Ordered = true
	sinktest.Run(t, f, harness(t, true))
}

func TestIntegrationFIFO(t *testing.T) {
	ep := endpoint(t)
	c := testClient(ep)
	q := newQueue(t, c, true)
	s, err := New(context.Background(), &Config{QueueURL: q, Endpoint: ep, AccessKeyID: "test", SecretAccessKey: "test",
		MessageGroup: "{tenant}/{data.case.id:-none}"}, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	evs := sinktest.Events("fifo", 6)
	for i := range evs {
		evs[i].Data = json.RawMessage(fmt.Sprintf(`{"case":{"id":"c-%d"}}`, i%2))
	}
	ctx := context.Background()
	if err := s.Send(ctx, evs); err != nil {
		t.Fatal(err)
	}
	// A retry of delivered events (a crash after SQS took them, before Sluice recorded it) is deduplicated.
	if err := s.Send(ctx, evs[:3]); err != nil {
		t.Fatal(err)
	}
	var got []types.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(evs) && time.Now().Before(deadline) {
		msgs, err := drain(ctx, c, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msgs...)
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	more, _ := drain(ctx, c, q)
	got = append(got, more...)
	if len(got) != len(evs) {
		t.Fatalf("the queue held %d messages for %d events (a re-send must be deduplicated)", len(got), len(evs))
	}
	perGroup := map[string][]string{}
	for _, m := range got {
		g := m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
		perGroup[g] = append(perGroup[g], attr(m, "id"))
		if d := m.Attributes[string(types.MessageSystemAttributeNameMessageDeduplicationId)]; d != "" && d != attr(m, "id") {
			t.Errorf("deduplication id %q, want the event id %q", d, attr(m, "id"))
		}
	}
	for g, want := range map[string][]string{"acme/c-0": {evs[0].ID, evs[2].ID, evs[4].ID}, "acme/c-1": {evs[1].ID, evs[3].ID, evs[5].ID}} {
		if fmt.Sprint(perGroup[g]) != fmt.Sprint(want) {
			t.Errorf("group %s holds %v, want %v in order (groups: %v)", g, perGroup[g], want, perGroup)
		}
	}
}

func TestIntegrationAttributesAndSplitting(t *testing.T) {
	ep := endpoint(t)
	c := testClient(ep)
	q := newQueue(t, c, false)
	s, err := New(context.Background(), &Config{QueueURL: q, Endpoint: ep, AccessKeyID: "test", SecretAccessKey: "test"}, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	// Ten events of 100 KiB: the dispatcher's byte budget counts data only, so the sink must split the calls.
	evs := sinktest.Events("split", 10)
	for i := range evs {
		evs[i].Data = sinktest.OversizedData(100 << 10)
		for k := range 12 {
			evs[i].Metadata[fmt.Sprintf("m%02d", k)] = "v"
		}
	}
	evs[0].Data = json.RawMessage(`{"note":"` + "\uFFFE" + `"}`) // valid JSON SQS would refuse unescaped
	ctx := context.Background()
	if err := s.Send(ctx, evs); err != nil {
		t.Fatal(err)
	}
	msgs, err := drain(ctx, c, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(evs) {
		t.Fatalf("%d messages for %d events", len(msgs), len(evs))
	}
	byID := map[string]*event.Event{}
	for i := range evs {
		byID[evs[i].ID] = &evs[i]
	}
	for _, m := range msgs {
		ev := byID[attr(m, "id")]
		if ev == nil {
			t.Fatalf("message with unknown id %q", attr(m, "id"))
		}
		sinktest.CheckEnvelope(t, ev, sinktest.Received{ID: attr(m, "id"), Topic: attr(m, "topic"), Body: []byte(aws.ToString(m.Body))})
		if len(m.MessageAttributes) != MaxAttributes || attr(m, "tenant") != "acme" || attr(m, "metadata.case") != "split" {
			t.Errorf("attributes %v", keys(m.MessageAttributes))
		}
	}
}

// TestIntegrationMissingQueue: a queue that does not exist fails permanently, naming what to check.
func TestIntegrationMissingQueue(t *testing.T) {
	ep := endpoint(t)
	u, _ := url.Parse(ep)
	s, err := New(context.Background(), &Config{QueueURL: ep + "/000000000000/sluice-no-such-queue", Endpoint: u.String(),
		AccessKeyID: "test", SecretAccessKey: "test"}, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(context.Background(), sinktest.Events("missing", 2))
	if classOf(err) != "permanent" || !strings.Contains(err.Error(), "check queue_url") {
		t.Fatalf("got %v", err)
	}
}

// BenchmarkSend measures delivered events/s into the local server: batches of 10 events of ~200 bytes, one
// sender (Sequential) and 16 concurrent senders like the dispatcher's default concurrency (Concurrent16).
func BenchmarkSend(b *testing.B) {
	ep := endpoint(b)
	c := testClient(ep)
	for _, par := range []int{1, 16} {
		name := "Sequential"
		if par > 1 {
			name = fmt.Sprintf("Concurrent%d", par)
		}
		b.Run(name, func(b *testing.B) {
			q := newQueue(b, c, false)
			s, err := New(context.Background(), &Config{QueueURL: q, Endpoint: ep, AccessKeyID: "test", SecretAccessKey: "test"}, sinks.Env{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			batch := sinktest.Events("bench", 10)
			b.ResetTimer()
			start := time.Now()
			var sent atomic.Int64
			if par == 1 {
				for b.Loop() {
					if err := s.Send(context.Background(), batch); err != nil {
						b.Fatal(err)
					}
					sent.Add(int64(len(batch)))
				}
			} else {
				b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Send(context.Background(), batch); err != nil {
							b.Error(err)
							return
						}
						sent.Add(int64(len(batch)))
					}
				})
			}
			b.ReportMetric(float64(sent.Load())/time.Since(start).Seconds(), "events/s")
		})
	}
}
