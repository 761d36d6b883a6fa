package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want []string
	}{
		{"ok", func(c *Config) {}, nil},
		{"full topic name", func(c *Config) { c.Topic = "projects/my-project/topics/orders" }, nil},
		{"domain project", func(c *Config) { c.Project = "example.com:my-project" }, nil},
		{"emulator", func(c *Config) { c.EmulatorHost = "127.0.0.1:8085" }, nil},
		{"missing both", func(c *Config) { c.Project, c.Topic = "", "" }, []string{"project: required", "topic: required"}},
		{"bad project", func(c *Config) { c.Project = "My Project" }, []string{`project: "My Project" is not a project id`}},
		{"project mismatch", func(c *Config) { c.Topic = "projects/other/topics/orders" }, []string{`topic: names project "other" but project is "my-project"`}},
		{"half a name", func(c *Config) { c.Topic = "projects/x/orders" }, []string{"give a topic id such as orders"}},
		{"short topic", func(c *Config) { c.Topic = "ab" }, []string{`topic: "ab" is not a topic id`}},
		{"goog topic", func(c *Config) { c.Topic = "google-events" }, []string{"not with goog"}},
		{"bad emulator", func(c *Config) { c.EmulatorHost = "localhost" }, []string{"emulator_host: must be host:port"}},
		{"emulator with credentials", func(c *Config) { c.EmulatorHost, c.CredentialsFile = "h:1", "/k.json" }, []string{"credentials_file: the emulator takes no credentials"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			c.Project, c.Topic = "my-project", "orders"
			tt.edit(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid; want %q", tt.want)
			}
			errs := err.(interface{ Unwrap() []error }).Unwrap()
			if len(errs) != len(tt.want) {
				t.Fatalf("got %v; want %d problems", err, len(tt.want))
			}
			for i, w := range tt.want {
				var fe *sinks.FieldError
				if !errors.As(errs[i], &fe) || !strings.Contains(fe.Error(), w) {
					t.Errorf("problem %d = %v; want a FieldError containing %q", i, errs[i], w)
				}
			}
		})
	}
}

func TestMessageChecks(t *testing.T) {
	s := newTestSink(t, testConfig("127.0.0.1:1", "topic-x"))
	ev := sinktest.Events("checks", 1)[0]
	ev.CorrelationID = "run-1"
	m, err := s.message(&ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"id": ev.ID, "topic": ev.Topic, "tenant": "acme", "metadata.source": "sinktest", "metadata.case": "checks"}
	if len(m.Attributes) != len(want) {
		t.Errorf("attributes %v, want %v", m.Attributes, want)
	}
	for k, v := range want {
		if m.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, m.Attributes[k], v)
		}
	}
	for name, edit := range map[string]func(e *event.Event){
		"is 1025 bytes":          func(e *event.Event) { e.Metadata["big"] = strings.Repeat("v", 1025) },
		"attributes":             func(e *event.Event) { e.Metadata = map[string]string{}; fill(e.Metadata, 98) },
		"over Pub/Sub's limit":   func(e *event.Event) { e.Data = sinktest.OversizedData(10_000_000) },
		"attribute name":         func(e *event.Event) { e.Metadata[strings.Repeat("k", 300)] = "v" },
		"ordering key of 2000 b": nil,
	} {
		e := sinktest.Events("checks", 1)[0]
		if edit == nil {
			s.orderingKey = func(*event.Event) string { return strings.Repeat("k", 2000) }
		} else {
			edit(&e)
		}
		_, err := s.message(&e)
		s.orderingKey = orderingKey
		if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassPermanent {
			t.Errorf("%s: %v; want permanent", name, err)
		}
	}
	e := sinktest.Events("checks", 1)[0]
	e.Metadata = map[string]string{}
	fill(e.Metadata, 97) // + id, topic, tenant = 100
	if _, err := s.message(&e); err != nil {
		t.Errorf("100 attributes: %v", err)
	}
}

func fill(m map[string]string, n int) {
	for i := range n {
		m[strings.Repeat("k", i+1)] = "v"
	}
}

// pstest: a fake server in-process, for what the emulator cannot be made to do.
func newFake(t *testing.T) (*pstest.Server, string) {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { _ = srv.Close() })
	topic := uniqueID("fake")
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: "projects/" + testProject + "/topics/" + topic}); err != nil {
		t.Fatal(err)
	}
	return srv, topic
}

func TestFakePublish(t *testing.T) {
	srv, topic := newFake(t)
	s := newTestSink(t, testConfig(srv.Addr, topic))
	evs := sinktest.Events("fake", 7)
	if err := s.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != len(evs) {
		t.Fatalf("server holds %d messages, want %d", len(msgs), len(evs))
	}
	byID := map[string]*pstest.Message{}
	for _, m := range msgs {
		byID[m.Attributes["id"]] = m
	}
	for i := range evs {
		m := byID[evs[i].ID]
		if m == nil {
			t.Fatalf("event %s missing", evs[i].ID)
		}
		sinktest.CheckEnvelope(t, &evs[i], sinktest.Received{ID: m.Attributes["id"], Topic: m.Attributes["topic"], Body: m.Data})
		if m.OrderingKey != "" {
			t.Errorf("ordering key %q without one configured", m.OrderingKey)
		}
	}
}

// Each failure class a publish can meet: what retrying cannot fix is permanent and says how to fix it. (Codes
// the client retries by itself never reach the sink before the attempt's deadline; TestClassify covers them.)
func TestFakeErrors(t *testing.T) {
	tests := []struct {
		code  codes.Code
		class sinks.Class
		want  string
	}{
		{codes.NotFound, sinks.ClassPermanent, "does not exist"},
		{codes.PermissionDenied, sinks.ClassPermanent, "roles/pubsub.publisher"},
		{codes.Unauthenticated, sinks.ClassPermanent, "credentials_file"},
		{codes.InvalidArgument, sinks.ClassPermanent, "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			srv, topic := newFake(t)
			srv.SetAutoPublishResponse(false)
			srv.AddPublishResponse(nil, status.Error(tt.code, "injected"))
			s := newTestSink(t, testConfig(srv.Addr, topic))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := s.Send(ctx, sinktest.Events("fake", 1))
			if c, _ := sinks.Classify(err); err == nil || c != tt.class || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v (%v); want %v containing %q", err, c, tt.class, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	s := newTestSink(t, testConfig("127.0.0.1:1", "topic-x"))
	for _, code := range []codes.Code{codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.Aborted,
		codes.DeadlineExceeded, codes.Unknown} {
		err := s.classify(status.Error(code, "injected"))
		if c, _ := sinks.Classify(err); c != sinks.ClassRetryable || !strings.Contains(err.Error(), code.String()) {
			t.Errorf("%v: %v (%v); want retryable naming the code", code, err, c)
		}
	}
	for _, code := range []codes.Code{codes.NotFound, codes.PermissionDenied, codes.Unauthenticated,
		codes.InvalidArgument, codes.FailedPrecondition} {
		if c, _ := sinks.Classify(s.classify(status.Error(code, "injected"))); c != sinks.ClassPermanent {
			t.Errorf("%v: %v; want permanent", code, c)
		}
	}
	if c, _ := sinks.Classify(s.classify(errors.New("io: connection reset"))); c != sinks.ClassRetryable {
		t.Errorf("plain error: %v; want retryable", c)
	}
}

func TestFakeMissingTopic(t *testing.T) {
	srv := pstest.NewServer()
	t.Cleanup(func() { _ = srv.Close() })
	s := newTestSink(t, testConfig(srv.Addr, "never-created"))
	err := s.Send(context.Background(), sinktest.Events("missing", 3))
	errs, _ := sinktest.PerEvent(err, 3)
	for i, e := range errs {
		if c, _ := sinks.Classify(e); c != sinks.ClassPermanent || !strings.Contains(e.Error(), "projects/sluice-test/topics/never-created does not exist") {
			t.Fatalf("event %d: %v", i, e)
		}
	}
}

// With an ordering key, a failed publish pauses the key in the client; the sink resumes it so the
// dispatcher's retry goes through, and keyed messages carry the key.
func TestFakeOrderingKeyResumes(t *testing.T) {
	srv, topic := newFake(t)
	s := newTestSink(t, testConfig(srv.Addr, topic))
	srv.SetAutoPublishResponse(false)
	srv.AddPublishResponse(nil, status.Error(codes.InvalidArgument, "injected"))
	evs := sinktest.Events("keyed", 1)
	// The dispatcher sets the destination's ordering key on each event it sends.
	evs[0].OrderingKey = "case-7"
	if err := s.Send(context.Background(), evs); err == nil {
		t.Fatal("first publish: want the injected error")
	}
	srv.SetAutoPublishResponse(true)
	if err := s.Send(context.Background(), evs); err != nil {
		t.Fatalf("retry after a failure on the same key: %v", err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || msgs[0].OrderingKey != "case-7" {
		t.Fatalf("messages %+v; want one with ordering key case-7", msgs)
	}
}

func TestCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if typ, err := credentialsType(write("sa.json", `{"type":"service_account","private_key":"SECRET-KEY"}`)); err != nil || typ != "service_account" {
		t.Fatalf("service account: %v %v", typ, err)
	}
	for name, body := range map[string]string{"bad.json": `{"private_key":"SECRET-KEY"`, "odd.json": `{"type":"gdch_service_account","private_key":"SECRET-KEY"}`} {
		_, err := credentialsType(write(name, body))
		if err == nil || strings.Contains(err.Error(), "SECRET-KEY") {
			t.Errorf("%s: %v; want an error that does not show the file", name, err)
		}
	}
	c := NewConfig()
	c.Project, c.Topic, c.CredentialsFile = "my-project", "orders", filepath.Join(dir, "absent.json")
	s := newTestSink(t, c)
	err := s.Send(context.Background(), sinktest.Events("creds", 1))
	if cl, _ := sinks.Classify(err); err == nil || cl != sinks.ClassPermanent || !strings.Contains(err.Error(), "credentials_file") {
		t.Fatalf("missing credentials file: %v", err)
	}
}

func TestConformance(t *testing.T) {
	host := emulatorHost(t)
	sinktest.Run(t, sinktest.Features{
		MaxBatch:  MaxBatch,
		Oversized: maxMessageBytes + 1,
		Outage:    true,
		Reasons: map[string]string{
			sinktest.CaseBadCredentials: "the emulator checks no credentials (TestFakeErrors covers PermissionDenied and Unauthenticated)",
		},
	}, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			ts := newTopicSub(t, host)
			proxy := sinktest.NewProxy(t, host)
			return sinktest.Target{
				Sink:  newTestSink(t, testConfig(proxy.Addr(), ts.topic)),
				Read:  ts.read,
				Stop:  func(*testing.T) { proxy.Stop() },
				Start: func(*testing.T) { proxy.Start() },
			}
		},
		Timeout: 10 * time.Second,
	})
}

// The emulator rejects a topic that does not exist with NotFound: permanent, naming it.
func TestEmulatorMissingTopic(t *testing.T) {
	host := emulatorHost(t)
	s := newTestSink(t, testConfig(host, uniqueID("sluice-test-absent")))
	err := s.Send(context.Background(), sinktest.Events("absent", 1))
	if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassPermanent || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkSend(b *testing.B) {
	host := emulatorHost(b)
	ts := newTopicSub(b, host)
	s := newTestSink(b, testConfig(host, ts.topic))
	batch := sinktest.Events("bench", MaxBatch)
	for i := range batch {
		batch[i].Data = json.RawMessage(`{"case":{"id":"c-1","status":"approved"}}`)
	}
	go func() {
		for {
			time.Sleep(100 * time.Millisecond)
			ts.drain()
		}
	}()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Send(context.Background(), batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*MaxBatch)/b.Elapsed().Seconds(), "events/s")
}
