package rabbitmq

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

const wrongPassword = "not-the-password-7Qx9"

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want []string // substrings, one per expected problem; none means valid
	}{
		{"defaults with a url", func(c *Config) {}, nil},
		{"missing url", func(c *Config) { c.URL = "" }, []string{"url: required"}},
		{"not amqp", func(c *Config) { c.URL = "http://u:hunter2@h/" }, []string{"url: not an AMQP URL"}},
		{"bad url hides the password", func(c *Config) { c.URL = "amqp://u:hunter2@h:port/" }, []string{"url: not an AMQP URL"}},
		{"bad routing key", func(c *Config) { c.RoutingKey = "{topik}" }, []string{"routing_key: unknown placeholder {topik}; valid placeholders: {topic}"}},
		{"unclosed routing key", func(c *Config) { c.RoutingKey = "{topic" }, []string{"routing_key: unclosed"}},
		{"declare default exchange", func(c *Config) { c.Declare = true }, []string{"declare: the default exchange"}},
		{"declare bad type", func(c *Config) { c.Exchange, c.Declare, c.ExchangeType = "x", true, "queue" }, []string{`exchange_type: "queue" is not an exchange type`}},
		{"declare plugin type", func(c *Config) { c.Exchange, c.Declare, c.ExchangeType = "x", true, "x-delayed-message" }, nil},
		{"type ignored without declare", func(c *Config) { c.ExchangeType = "nonsense" }, nil},
		{"max message bytes", func(c *Config) { c.MaxMessageBytes = 0 }, []string{"max_message_bytes: must be between 1 and"}},
		{"long exchange", func(c *Config) { c.Exchange = strings.Repeat("x", 256) }, []string{"exchange: is 256 bytes"}},
		{"several at once", func(c *Config) { c.URL, c.RoutingKey = "", "{" }, []string{"url:", "routing_key:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConfig()
			c.URL = "amqp://guest:guest@127.0.0.1:5672/"
			tt.edit(c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid; want %q", tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows the password: %v", err)
			}
			var fes []*sinks.FieldError
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *sinks.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is not a *sinks.FieldError", e)
				}
				fes = append(fes, fe)
			}
			if len(fes) != len(tt.want) {
				t.Fatalf("got %d problems (%v), want %d", len(fes), err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(fes[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, fes[i], w)
				}
			}
		})
	}
}

func TestDescribeMasksURL(t *testing.T) {
	c := NewConfig()
	c.URL = "amqp://sluice:hunter2-long-password@mq:5672/prod"
	m := sinks.MaskSecrets(c).(map[string]any)
	if s, _ := m["url"].(string); strings.Contains(s, "hunter2") {
		t.Fatalf("masked url shows the password: %q", s)
	}
	var url sinks.Field
	for _, f := range sinks.Describe(c) {
		if f.Name == "url" {
			url = f
		}
	}
	if !url.Secret || !url.Required {
		t.Fatalf("url field: %+v; want required and secret", url)
	}
	if got := redact(c.URL); strings.Contains(got, "hunter2") || !strings.Contains(got, "mq:5672") {
		t.Fatalf("redact = %q", got)
	}
}

func TestMessage(t *testing.T) {
	c := NewConfig()
	c.URL = "amqp://guest:guest@127.0.0.1:5672/"
	c.RoutingKey = "{tenant}.{topic}.{data.case.id}"
	s := newTestSink(t, c, "unit")
	ev := event.Event{
		ID: "e-1", Topic: "case.approved", Tenant: "acme", CorrelationID: "run-9",
		Time:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Metadata: map[string]string{"source": "crm"},
		Data:     json.RawMessage(`{"case":{"id":"c-1"}}`),
	}
	var msg amqp.Publishing
	var key string
	if err := s.message(&ev, "", time.Now(), &msg, &key); err != nil {
		t.Fatal(err)
	}
	if key != "acme.case.approved.c-1" {
		t.Errorf("routing key %q", key)
	}
	want := amqp.Table{"id": "e-1", "topic": "case.approved", "tenant": "acme", "metadata.source": "crm"}
	if len(msg.Headers) != len(want) {
		t.Errorf("headers %v, want %v", msg.Headers, want)
	}
	for k, v := range want {
		if msg.Headers[k] != v {
			t.Errorf("header %s = %v, want %v", k, msg.Headers[k], v)
		}
	}
	if msg.MessageId != "e-1" || msg.Type != "case.approved" || msg.CorrelationId != "run-9" ||
		msg.ContentType != "application/json" || msg.DeliveryMode != amqp.Persistent || !msg.Timestamp.Equal(ev.Time) {
		t.Errorf("properties %+v", msg)
	}
	env, _ := ev.Envelope()
	if string(msg.Body) != string(env) {
		t.Errorf("body %s, want %s", msg.Body, env)
	}

	// A missing data path fails that event permanently, naming the template.
	ev.Data = json.RawMessage(`{}`)
	err := s.message(&ev, "", time.Now(), &msg, &key)
	if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassPermanent || !strings.Contains(err.Error(), "{data.case.id}") {
		t.Fatalf("missing path: %v", err)
	}
	s.cfg.Persistent = false
	ev.Data = json.RawMessage(`{"case":{"id":"c-1"}}`)
	if err := s.message(&ev, "", time.Now(), &msg, &key); err != nil || msg.DeliveryMode != amqp.Transient {
		t.Fatalf("persistent false: mode %d, %v", msg.DeliveryMode, err)
	}
}

// Connection refused is retryable, names the server without its password, and is answered at once (from the
// backoff) on the next Send instead of re-dialling.
func TestConnectRefused(t *testing.T) {
	c := NewConfig()
	c.URL = "amqp://guest:" + wrongPassword + "@127.0.0.1:1/"
	s := newTestSink(t, c, "refused")
	err := s.Send(context.Background(), sinktest.Events("refused", 1))
	if cl, _ := sinks.Classify(err); err == nil || cl != sinks.ClassRetryable {
		t.Fatalf("got %v; want retryable", err)
	}
	if strings.Contains(err.Error(), wrongPassword) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %q: want the server named and the password hidden", err)
	}
	start := time.Now()
	err = s.Send(context.Background(), sinktest.Events("refused", 1))
	if cl, after := sinks.Classify(err); cl != sinks.ClassRetryable || after <= 0 {
		t.Fatalf("second Send: %v (after %v); want retryable with the backoff left", err, after)
	}
	if time.Since(start) > 50*time.Millisecond {
		t.Fatalf("second Send took %v; it should answer from the backoff", time.Since(start))
	}
}

func TestConformance(t *testing.T) {
	u := amqpURL(t)
	const limit = 1 << 20
	sinktest.Run(t, sinktest.Features{
		MaxBatch:       MaxBatch,
		Ordered:        true,
		Oversized:      limit + 1,
		BadCredentials: true,
		Outage:         true,
	}, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			b := newBroker(t, "topic")
			proxy := sinktest.NewProxy(t, hostPort(t, u))
			c := b.config(withHost(t, u, proxy.Addr(), ""))
			c.MaxMessageBytes = limit
			return sinktest.Target{
				Sink:  newTestSink(t, c, "conformance"),
				Read:  b.read,
				Stop:  func(*testing.T) { proxy.Stop() },
				Start: func(*testing.T) { proxy.Start() },
			}
		},
		BadCredentials: func(t *testing.T) sinks.Sink {
			return newTestSink(t, newBroker(t, "topic").config(withHost(t, u, "", wrongPassword)), "badcreds")
		},
		Secrets: []string{wrongPassword},
	})
}

// What a consumer sees: properties and headers as DESIGN lists them.
func TestIntegrationProperties(t *testing.T) {
	b := newBroker(t, "topic")
	s := newTestSink(t, b.config(b.url), "props")
	evs := sinktest.Events("props", 1)
	evs[0].CorrelationID = "run-1"
	if err := s.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	ds := waitMessages(t, b, 1)
	d := ds[0]
	if d.MessageId != evs[0].ID || d.ContentType != "application/json" || d.DeliveryMode != amqp.Persistent ||
		d.Type != evs[0].Topic || d.CorrelationId != "run-1" || d.AppId != "sluice" ||
		!d.Timestamp.Equal(evs[0].Time.Truncate(time.Second)) || d.RoutingKey != evs[0].Topic {
		t.Errorf("delivery properties %+v", d)
	}
	for k, v := range map[string]string{"id": evs[0].ID, "topic": evs[0].Topic, "tenant": "acme",
		"metadata.source": "sinktest", "metadata.case": "props"} {
		if d.Headers[k] != v {
			t.Errorf("header %s = %v, want %s", k, d.Headers[k], v)
		}
	}
}

func waitMessages(t *testing.T, b *broker, n int) []amqp.Delivery {
	t.Helper()
	var out []amqp.Delivery
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n {
		ds, err := b.get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ds...)
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d messages", len(out), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// With mandatory on, an event no queue is bound for fails permanently, naming exchange and key; the rest of
// its batch is delivered.
func TestIntegrationMandatoryUnroutable(t *testing.T) {
	b := newBroker(t, "")
	x := uniqueName("sluice-test-direct")
	if err := b.ch.ExchangeDeclare(x, "direct", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.ch.QueueBind(b.queue, "routed", x, false, nil); err != nil {
		t.Fatal(err)
	}
	c := NewConfig()
	c.URL, c.Exchange, c.Mandatory, c.RoutingKey = b.url, x, true, "{metadata.route}"
	s := newTestSink(t, c, "mandatory")
	evs := sinktest.Events("mandatory", 4)
	for i := range evs {
		evs[i].Metadata["route"] = "routed"
	}
	evs[2].Metadata["route"] = "nowhere"
	errs, _ := sinktest.PerEvent(s.Send(context.Background(), evs), len(evs))
	for i, err := range errs {
		if i == 2 {
			if cl, _ := sinks.Classify(err); err == nil || cl != sinks.ClassPermanent ||
				!strings.Contains(err.Error(), x) || !strings.Contains(err.Error(), `"nowhere"`) {
				t.Fatalf("unroutable event: %v; want permanent naming exchange %s and key nowhere", err, x)
			}
		} else if err != nil {
			t.Fatalf("routable event %d: %v", i, err)
		}
	}
	if ds := waitMessages(t, b, 3); len(ds) != 3 {
		t.Fatalf("queue holds %d messages, want 3", len(ds))
	}
	// Without mandatory the broker drops it and confirms: delivered as far as AMQP can tell.
	c.Mandatory = false
	s2 := newTestSink(t, c, "mandatory-off")
	if err := s2.Send(context.Background(), evs[2:3]); err != nil {
		t.Fatalf("mandatory off: %v", err)
	}
}

// Publishing to an exchange that does not exist fails permanently and says how to fix it; the sink recovers
// (a new channel) for the next Send.
func TestIntegrationMissingExchange(t *testing.T) {
	u := amqpURL(t)
	c := NewConfig()
	c.URL, c.Exchange = u, uniqueName("sluice-test-missing")
	s := newTestSink(t, c, "missing")
	err := s.Send(context.Background(), sinktest.Events("missing", 3))
	errs, _ := sinktest.PerEvent(err, 3)
	for i, e := range errs {
		if cl, _ := sinks.Classify(e); e == nil || cl != sinks.ClassPermanent || !strings.Contains(e.Error(), "declare: true") {
			t.Fatalf("event %d: %v; want permanent with the fix", i, e)
		}
	}
	if !strings.Contains(err.Error(), c.Exchange) {
		t.Fatalf("error %q does not name the exchange", err)
	}
	// declare: true creates it (durable, of exchange_type); then the same sink config works.
	b := newBroker(t, "")
	c.Declare = true
	s2 := newTestSink(t, c, "declare")
	t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(c.Exchange, false, false)
		}
	})
	if err := s2.Send(context.Background(), sinktest.Events("declare", 1)); err != nil {
		t.Fatalf("with declare: %v", err)
	}
	if err := b.ch.QueueBind(b.queue, "#", c.Exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := s2.Send(context.Background(), sinktest.Events("declare", 1)); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, b, 1)
	// Declaring over an exchange of another type is a permanent error naming the fix.
	c.ExchangeType = "fanout"
	s3 := newTestSink(t, c, "declare-clash")
	err = s3.Send(context.Background(), sinktest.Events("declare", 1))
	if cl, _ := sinks.Classify(err); err == nil || cl != sinks.ClassPermanent || !strings.Contains(err.Error(), "exchange_type") {
		t.Fatalf("declare clash: %v", err)
	}
}

// The broker closes Sluice's connection (an operator's close_connection): the in-flight batch reports only
// unconfirmed events as retryable, the sink reconnects in the background, and a re-send completes the set.
func TestIntegrationBrokerClosesConnection(t *testing.T) {
	b := newBroker(t, "topic")
	dest := uniqueName("forced")
	s := newTestSink(t, b.config(b.url), dest)
	first := sinktest.Events("forced", 10)
	if err := s.Send(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if n := closeConnections(t, dest); n != 1 {
		t.Fatalf("closed %d connections named %q, want 1", n, "sluice "+dest)
	}
	// Wait for the background reconnect, sending as the dispatcher would.
	second := sinktest.Events("forced", 10)
	pending := second
	deadline := time.Now().Add(30 * time.Second)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d events still not delivered 30s after the broker closed the connection", len(pending))
		}
		errs, err := sinktest.PerEvent(s.Send(context.Background(), pending), len(pending))
		if err != nil {
			t.Fatal(err)
		}
		var next = pending[:0:0]
		for i, e := range errs {
			if e == nil {
				continue
			}
			if cl, _ := sinks.Classify(e); cl != sinks.ClassRetryable {
				t.Fatalf("after a forced close: %v; want retryable", e)
			}
			next = append(next, pending[i])
		}
		pending = next
		time.Sleep(50 * time.Millisecond)
	}
	want := map[string]bool{}
	for _, e := range append(first, second...) {
		want[e.ID] = true
	}
	for _, d := range waitMessages(t, b, len(want)) {
		delete(want, d.MessageId)
	}
	if len(want) > 0 {
		t.Fatalf("%d events missing after the reconnect", len(want))
	}
}

// A connection lost in the middle of a batch: the events the broker confirmed before the cut are reported
// delivered (nil), the rest retryable, and re-sending only those completes the set.
func TestIntegrationConnectionLostMidBatch(t *testing.T) {
	u := amqpURL(t)
	b := newBroker(t, "topic")
	proxy := sinktest.NewProxy(t, hostPort(t, u))
	s := newTestSink(t, b.config(withHost(t, u, proxy.Addr(), "")), "midbatch")
	batch := func() []event.Event {
		evs := sinktest.Events("midbatch", MaxBatch)
		for i := range evs {
			evs[i].Data = sinktest.OversizedData(64 << 10)
		}
		return evs
	}
	// How long one batch takes here, and how much of that is encoding before anything is sent, to aim the
	// cuts at the publishing.
	all := batch()
	start := time.Now()
	s.deliver(t, all)
	took := time.Since(start)
	start = time.Now()
	for i := range all {
		var msg amqp.Publishing
		var key string
		_ = s.message(&all[i], "", start, &msg, &key)
	}
	prep := time.Since(start)
	mixed := false
	for attempt := 1; attempt < 10 && !mixed; attempt++ {
		evs := batch()
		all = append(all, evs...)
		// Warm up so the cut hits a live connection, then cut while the batch is on the wire.
		s.deliver(t, sinktest.Events("warm", 1))
		cut := prep + (took-prep)*time.Duration(attempt)/10
		cutDone := make(chan struct{})
		time.AfterFunc(cut, func() { proxy.Stop(); close(cutDone) })
		errs, err := sinktest.PerEvent(s.Send(context.Background(), evs), len(evs))
		if err != nil {
			t.Fatal(err)
		}
		delivered, retry := 0, []event.Event(nil)
		for i, e := range errs {
			if e == nil {
				delivered++
				continue
			}
			if c, _ := sinks.Classify(e); c != sinks.ClassRetryable {
				t.Fatalf("event %d after a lost connection: %v; want retryable", i, e)
			}
			retry = append(retry, evs[i])
		}
		mixed = delivered > 0 && len(retry) > 0
		t.Logf("cut after %v of a %v batch: %d confirmed, %d to retry", cut, took, delivered, len(retry))
		<-cutDone // the batch may have finished before the cut
		proxy.Start()
		s.deliver(t, retry)
	}
	if !mixed {
		t.Log("no cut landed between two confirms of one batch; the invariants held for every cut")
	}
	want := map[string]bool{}
	for _, e := range all {
		want[e.ID] = true
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		ds, err := b.get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			delete(want, d.MessageId)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(want) > 0 {
		t.Fatalf("%d events lost", len(want))
	}
}

// BenchmarkSend measures delivered events/s into the broker: full batches of MaxBatch from 8×GOMAXPROCS
// concurrent Sends (the dispatcher's per-destination concurrency), persistent messages, publisher confirms.
// "durable" queues write each message to disk before the broker confirms it.
func BenchmarkSend(b *testing.B) {
	for _, durable := range []bool{false, true} {
		name := "transient-queue"
		if durable {
			name = "durable-queue"
		}
		b.Run(name, func(b *testing.B) { benchSend(b, durable) })
	}
}

func benchSend(b *testing.B, durable bool) {
	br := newBrokerQueue(b, "topic", durable)
	s := newTestSink(b, br.config(br.url), "bench")
	// A consumer drains as we go, so the queue does not grow without bound.
	ds, err := br.ch.Consume(br.queue, "", true, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for range ds {
		}
	}()
	batch := sinktest.Events("bench", MaxBatch)
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
