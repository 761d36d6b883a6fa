package intake

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// amqpURL returns the test broker, skipping when none is configured.
func amqpURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("SLUICE_TEST_AMQP_URL")
	if u == "" {
		t.Skip("SLUICE_TEST_AMQP_URL is not set (run .ci/services/rabbitmq.sh)")
	}
	return u
}

// broker is a test-side AMQP channel with unique names and cleanup.
type broker struct {
	t    *testing.T
	conn *amqp.Connection
	ch   *amqp.Channel
	id   string
}

func newBroker(t *testing.T, url string) *broker {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	b := &broker{t: t, conn: conn, ch: ch, id: fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())}
	t.Cleanup(func() { conn.Close() })
	return b
}

func (b *broker) name(s string) string { return "sluice-test." + b.id + "." + s }

func (b *broker) queue(name string) {
	b.t.Helper()
	if _, err := b.ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
			ch.Close()
		}
	})
}

func (b *broker) exchange(name, kind string) {
	b.t.Helper()
	if err := b.ch.ExchangeDeclare(name, kind, false, true, false, false, nil); err != nil {
		b.t.Fatal(err)
	}
}

func (b *broker) publish(exchange, key string, p amqp.Publishing) {
	b.t.Helper()
	conf, err := b.ch.PublishWithDeferredConfirmWithContext(context.Background(), exchange, key, false, false, p)
	if err != nil {
		b.t.Fatal(err)
	}
	if !conf.Wait() {
		b.t.Fatal("broker nacked a test message")
	}
}

func (b *broker) depth(q string) int {
	b.t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		b.t.Fatal(err)
	}
	defer ch.Close()
	qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return qi.Messages
}

func TestAMQPIntake(t *testing.T) {
	url := amqpURL(t)
	b := newBroker(t, url)
	q, rq, dlq := b.name("events"), b.name("raw"), b.name("rejected")
	ex, dlx := b.name("platform"), b.name("dlx")
	b.exchange(ex, "topic")
	b.exchange(dlx, "fanout")
	b.queue(dlq)
	if err := b.ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	b.queue(rq)

	f := newFixture(t, t.TempDir(), testConfig, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	t.Cleanup(func() { cancel(); <-done; <-done })
	go func() {
		f.in.ConsumeAMQP(ctx, config.AMQPIntake{Name: "events", URL: url, Queue: q, Declare: true, Prefetch: 16,
			TopicFrom: config.TopicFromBody, DeadLetterExchange: dlx,
			Bindings: []config.AMQPBinding{{Exchange: ex, RoutingKeys: []string{"case.#"}}}})
		done <- struct{}{}
	}()
	go func() {
		f.in.ConsumeAMQP(ctx, config.AMQPIntake{Name: "raw", URL: url, Queue: rq, Prefetch: 16, TopicFrom: config.TopicFromRoutingKey})
		done <- struct{}{}
	}()
	// The consumer declares and binds the queue; wait for the binding before publishing through the exchange.
	waitUntil(t, "the consumer declared its queue", func() bool {
		ch, _ := b.conn.Channel()
		defer ch.Close()
		_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return err == nil
	})
	time.Sleep(200 * time.Millisecond)

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	b.publish(ex, "case.created", amqp.Publishing{MessageId: "m-1", ContentType: "application/json",
		Headers: amqp.Table{"traceparent": tp}, Body: []byte(`{"topic":"case.created","data":{"case":{"id":"c-1"}}}`)})
	b.publish(ex, "case.created", amqp.Publishing{ContentType: "application/cloudevents+json",
		Body: []byte(`{"specversion":"1.0","id":"m-2","source":"urn:crm","type":"case.status_updated","data":{"case":{"status":"approved"}}}`)})
	b.publish(ex, "case.created", amqp.Publishing{ContentType: "application/json", Body: []byte(`{"x":1}`),
		Headers: amqp.Table{"cloudEvents:specversion": "1.0", "cloudEvents:id": "m-3", "cloudEvents:source": "urn:erp", "cloudEvents:type": "case.closed"}})
	b.publish(ex, "case.created", amqp.Publishing{ContentType: "application/cloudevents-batch+json",
		Body: []byte(`[{"specversion":"1.0","id":"m-4a","source":"s","type":"case.a"},{"specversion":"1.0","id":"m-4b","source":"s","type":"case.b","data":2}]`)})
	b.publish(ex, "case.bad", amqp.Publishing{MessageId: "bad-1", Body: []byte(`not json`), Headers: amqp.Table{"origin": "test"}})
	b.publish(ex, "case.bad", amqp.Publishing{MessageId: "bad-2", Body: []byte(`{"topic":"a.*","data":{}}`)})
	b.publish("", rq, amqp.Publishing{MessageId: "r-1", CorrelationId: "run-9", Timestamp: time.Unix(1700000000, 0), Body: []byte(`{"n":1}`)})

	ids := []string{"m-1", "m-2", "m-3", "m-4a", "m-4b", "r-1"}
	waitUntil(t, "every valid message stored", func() bool {
		for _, id := range ids {
			if _, err := f.st.Event(context.Background(), id); err != nil {
				return false
			}
		}
		return true
	})
	if rec, _ := f.st.Event(context.Background(), "m-1"); rec.Event.Traceparent != tp {
		t.Fatalf("traceparent header over AMQP: stored %q", rec.Event.Traceparent)
	}
	rec, _ := f.st.Event(context.Background(), "m-3")
	if rec.Event.Topic != "case.closed" || string(rec.Event.Data) != `{"x":1}` || rec.Event.Metadata[MetaCESource] != "urn:erp" {
		t.Fatalf("binary CloudEvent over AMQP: %+v", rec.Event)
	}
	rec, _ = f.st.Event(context.Background(), "r-1")
	if rec.Event.Topic != rq || string(rec.Event.Data) != `{"n":1}` || rec.Event.CorrelationID != "run-9" || rec.Event.Time.Unix() != 1700000000 {
		t.Fatalf("routing-key message: %+v", rec.Event)
	}

	// Malformed messages are dead-lettered with the reason, and nothing stays in the source queues.
	reasons := map[string]string{}
	waitUntil(t, "both malformed messages dead-lettered", func() bool {
		d, ok, err := b.ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			reasons[d.MessageId], _ = d.Headers[HeaderRejectReason].(string)
			if d.MessageId == "bad-1" && (d.Headers["origin"] != "test" || string(d.Body) != "not json" || d.Headers[HeaderRejectQueue] != q) {
				t.Fatalf("dead-lettered message lost its content: %+v", d)
			}
		}
		return len(reasons) == 2
	})
	if !strings.Contains(reasons["bad-1"], "not a Sluice event") || !strings.Contains(reasons["bad-2"], "topic:") {
		t.Fatalf("reasons: %v", reasons)
	}
	waitUntil(t, "the queues drained (every message settled)", func() bool { return b.depth(q) == 0 && b.depth(rq) == 0 })
}

// TestAMQPConsumerCancelled deletes the queue under the consumer: the broker cancels it, and it reconnects,
// declares the queue again and goes on consuming.
func TestAMQPConsumerCancelled(t *testing.T) {
	url := amqpURL(t)
	b := newBroker(t, url)
	q := b.name("events")
	f := newFixture(t, t.TempDir(), testConfig, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		f.in.ConsumeAMQP(ctx, config.AMQPIntake{Name: "c", URL: url, Queue: q, Declare: true, Prefetch: 4, TopicFrom: config.TopicFromBody})
		close(done)
	}()
	b.t.Cleanup(func() {
		if ch, err := b.conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	waitUntil(t, "the queue is declared", func() bool {
		ch, _ := b.conn.Channel()
		defer ch.Close()
		_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return err == nil
	})
	b.publish("", q, amqp.Publishing{MessageId: "before", Body: []byte(`{"topic":"a","data":{}}`)})
	waitUntil(t, "the first message stored", func() bool { _, err := f.st.Event(context.Background(), "before"); return err == nil })
	if _, err := b.ch.QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the consumer declared the queue again", func() bool {
		ch, _ := b.conn.Channel()
		defer ch.Close()
		_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return err == nil
	})
	b.publish("", q, amqp.Publishing{MessageId: "after", Body: []byte(`{"topic":"a","data":{}}`)})
	waitUntil(t, "the message after the cancel stored", func() bool { _, err := f.st.Event(context.Background(), "after"); return err == nil })
}

// TestAMQPTrust: a consumer bound to a tenant stamps it and refuses others; an unbound one takes no tenant
// and no per-run subscriptions from messages unless its config says so.
func TestAMQPTrust(t *testing.T) {
	url := amqpURL(t)
	b := newBroker(t, url)
	bound, open, trusting, dlq, dlx := b.name("bound"), b.name("open"), b.name("trusting"), b.name("rejected"), b.name("dlx")
	b.exchange(dlx, "fanout")
	b.queue(dlq)
	if err := b.ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{bound, open, trusting} {
		b.queue(q)
	}
	f := newFixture(t, t.TempDir(), testConfig, nil)
	ctx, cancel := context.WithCancel(context.Background())
	consumers := []config.AMQPIntake{
		{Name: "bound", URL: url, Queue: bound, Prefetch: 8, TopicFrom: config.TopicFromBody, DeadLetterExchange: dlx, Tenant: "acme"},
		{Name: "open", URL: url, Queue: open, Prefetch: 8, TopicFrom: config.TopicFromBody, DeadLetterExchange: dlx},
		{Name: "trusting", URL: url, Queue: trusting, Prefetch: 8, TopicFrom: config.TopicFromBody, DeadLetterExchange: dlx,
			AllowTenantFromMessage: true},
	}
	done := make(chan struct{}, len(consumers))
	t.Cleanup(func() {
		cancel()
		for range consumers {
			<-done
		}
	})
	for _, c := range consumers {
		go func() { f.in.ConsumeAMQP(ctx, c); done <- struct{}{} }()
	}
	msg := func(q, id, extra string) {
		b.publish("", q, amqp.Publishing{MessageId: id, ContentType: "application/json",
			Body: []byte(`{"topic":"case.created","data":{}` + extra + `}`)})
	}
	msg(bound, "b-plain", "")
	msg(bound, "b-same", `,"tenant":"acme"`)
	msg(bound, "b-other", `,"tenant":"globex"`)
	msg(open, "o-plain", "")
	msg(open, "o-tenant", `,"tenant":"globex"`)
	msg(open, "o-subs", `,"correlation_id":"run-1","subscriptions":[{"url":"https://example.com/cb","topics":["case.*"]}]`)
	msg(trusting, "t-tenant", `,"tenant":"globex"`)

	want := map[string]string{"b-plain": "acme", "b-same": "acme", "o-plain": "", "t-tenant": "globex"}
	waitUntil(t, "the admitted messages stored", func() bool {
		for id := range want {
			if _, err := f.st.Event(context.Background(), id); err != nil {
				return false
			}
		}
		return true
	})
	for id, tenant := range want {
		if rec, _ := f.st.Event(context.Background(), id); rec.Event.Tenant != tenant {
			t.Errorf("%s stored with tenant %q, want %q", id, rec.Event.Tenant, tenant)
		}
	}
	reasons := map[string]string{}
	waitUntil(t, "the refused messages dead-lettered", func() bool {
		d, ok, err := b.ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			reasons[d.MessageId], _ = d.Headers[HeaderRejectReason].(string)
		}
		return len(reasons) == 3
	})
	for id, want := range map[string]string{"b-other": `tenant "acme" only`, "o-tenant": "allow_tenant_from_message",
		"o-subs": "allow_subscriptions"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("%s dead-lettered with %q, want it to mention %q", id, reasons[id], want)
		}
	}
	for _, id := range []string{"b-other", "o-tenant", "o-subs"} {
		if _, err := f.st.Event(context.Background(), id); err == nil {
			t.Errorf("refused message %s was stored", id)
		}
	}
}

// fanoutStore refuses one event id as the PostgreSQL store refuses an event with more deliveries than it can
// number (store.ErrFanout), and appends the rest.
type fanoutStore struct {
	store.Store
	refuse string
}

func (s fanoutStore) Append(ctx context.Context, evs []store.NewEvent, o store.AppendOptions) ([]store.AppendResult, error) {
	out := make([]store.AppendResult, len(evs))
	var keep []store.NewEvent
	var at []int
	for i, ne := range evs {
		if ne.Event.ID == s.refuse {
			out[i] = store.AppendResult{ID: ne.Event.ID, Err: fmt.Errorf("%w: at most 65536", store.ErrFanout)}
			continue
		}
		keep, at = append(keep, ne), append(at, i)
	}
	res, err := s.Store.Append(ctx, keep, o)
	if err != nil {
		return nil, err
	}
	for k, i := range at {
		out[i] = res[k]
	}
	return out, nil
}

// TestAMQPFanoutRefusalDeadLettered: an event the store refuses for its fan-out would match as many
// destinations if sent again, so it goes to the dead letters with the reason instead of back to the queue;
// the message beside it is stored.
func TestAMQPFanoutRefusalDeadLettered(t *testing.T) {
	url := amqpURL(t)
	b := newBroker(t, url)
	q, dlq, dlx := b.name("events"), b.name("rejected"), b.name("dlx")
	b.exchange(dlx, "fanout")
	b.queue(dlq)
	if err := b.ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	b.queue(q)
	f := newFixture(t, t.TempDir(), testConfig, nil)
	cfg, err := config.Parse("t.yaml", []byte(testConfig), func(string) (string, bool) { return "", false }, sinks.NewRegistry(webhook.Spec))
	if err != nil {
		t.Fatal(err)
	}
	in := New(fanoutStore{Store: f.st, refuse: "wide"}, f.disp, routerFor(cfg.Destinations), f.opts)
	t.Cleanup(in.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		in.ConsumeAMQP(ctx, config.AMQPIntake{Name: "events", URL: url, Queue: q, Prefetch: 8, TopicFrom: config.TopicFromBody,
			DeadLetterExchange: dlx})
		close(done)
	}()
	for _, id := range []string{"wide", "fine"} {
		b.publish("", q, amqp.Publishing{MessageId: id, ContentType: "application/json", Body: []byte(`{"topic":"case.created","data":{}}`)})
	}
	var reason string
	waitUntil(t, "the refused message dead-lettered", func() bool {
		d, ok, err := b.ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok && d.MessageId == "wide" {
			reason, _ = d.Headers[HeaderRejectReason].(string)
		}
		return reason != ""
	})
	if !strings.Contains(reason, "at most 65536") {
		t.Errorf("dead-lettered with %q, want the limit named", reason)
	}
	waitUntil(t, "the other message stored", func() bool { _, err := f.st.Event(context.Background(), "fine"); return err == nil })
	if _, err := f.st.Event(context.Background(), "wide"); err == nil {
		t.Error("the refused event was stored")
	}
	if n := b.depth(q); n != 0 {
		t.Errorf("%d messages left in the source queue, want none (the refused one must not come back)", n)
	}
}
