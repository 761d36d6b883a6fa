package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
)

// amqpURL is the test broker, from SLUICE_TEST_AMQP_URL; integration tests skip only when it is unset.
func amqpURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("SLUICE_TEST_AMQP_URL")
	if u == "" {
		t.Skip("SLUICE_TEST_AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/); .ci/services/rabbitmq.sh starts RabbitMQ and sets it")
	}
	return u
}

func uniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// withHost returns raw with its host:port replaced (to go through a proxy) and, if pass is not empty, its
// password replaced.
func withHost(t testing.TB, raw, hostport, pass string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if hostport != "" {
		u.Host = hostport
	}
	if pass != "" {
		u.User = url.UserPassword(u.User.Username(), pass)
	}
	return u.String()
}

func hostPort(t testing.TB, raw string) string {
	t.Helper()
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		t.Fatal(err)
	}
	return uri.Host + ":" + itoa(uri.Port)
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n >= 10 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	b[i] = byte('0' + n)
	return string(b[i:])
}

// broker is a test's own exchange and queue (bound with "#", so every routing key reaches it) plus a
// consumer connection straight to the broker.
type broker struct {
	url      string
	exchange string
	queue    string
	conn     *amqp.Connection
	ch       *amqp.Channel
	mu       sync.Mutex
}

func newBroker(t testing.TB, exchangeType string) *broker {
	t.Helper()
	return newBrokerQueue(t, exchangeType, false)
}

// newBrokerQueue is newBroker with a durable queue when durable is set (persistent messages then go to disk
// before the broker confirms them).
func newBrokerQueue(t testing.TB, exchangeType string, durable bool) *broker {
	t.Helper()
	u := amqpURL(t)
	conn, err := amqp.Dial(u)
	if err != nil {
		t.Fatalf("connect to the test broker: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{url: u, exchange: uniqueName("sluice-test-x"), queue: uniqueName("sluice-test-q"), conn: conn, ch: ch}
	if exchangeType != "" {
		if err := ch.ExchangeDeclare(b.exchange, exchangeType, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare(b.queue, durable, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if exchangeType != "" {
		if err := ch.QueueBind(b.queue, "#", b.exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// The sink's channel may have closed ours (a test that publishes to a missing exchange does not share
		// it), so clean up on a fresh one.
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(b.queue, false, false, false)
			if exchangeType != "" {
				_ = c.ExchangeDelete(b.exchange, false, false)
			}
		}
		_ = conn.Close()
	})
	return b
}

// config returns a sink config publishing to this broker's exchange, through url u.
func (b *broker) config(u string) *Config {
	c := NewConfig()
	c.URL = u
	c.Exchange = b.exchange
	return c
}

// get drains the queue.
func (b *broker) get(context.Context) ([]amqp.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []amqp.Delivery
	for {
		d, ok, err := b.ch.Get(b.queue, true)
		if err != nil || !ok {
			return out, err
		}
		out = append(out, d)
	}
}

func (b *broker) read(ctx context.Context) ([]sinktest.Received, error) {
	ds, err := b.get(ctx)
	out := make([]sinktest.Received, len(ds))
	for i, d := range ds {
		id, _ := d.Headers["id"].(string)
		topic, _ := d.Headers["topic"].(string)
		out[i] = sinktest.Received{ID: id, Topic: topic, Body: d.Body}
	}
	return out, err
}

func newTestSink(t testing.TB, c *Config, dest string) *Sink {
	t.Helper()
	s, err := New(context.Background(), c, sinks.Env{Destination: dest, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// closeConnections makes the broker itself close the connections named "sluice <dest>" (CONNECTION_FORCED),
// leaving every other client alone. It needs rabbitmqctl on this machine.
func closeConnections(t testing.TB, dest string) int {
	t.Helper()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl is not on PATH; the broker-side close needs it")
	}
	out, err := exec.Command("rabbitmqctl", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
	if err != nil {
		t.Skipf("rabbitmqctl list_connections: %v: %s", err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `{"connection_name","sluice `+dest+`"}`) {
			continue
		}
		pid, _, _ := strings.Cut(line, "\t")
		if o, err := exec.Command("rabbitmqctl", "-q", "close_connection", pid, "sluice test: forced close").CombinedOutput(); err != nil {
			t.Logf("close_connection %s: %v: %s", pid, err, o)
			continue
		}
		n++
	}
	return n
}

// deliver sends evs as the dispatcher would until all are delivered (30s at most), failing on a permanent error.
func (s *Sink) deliver(t testing.TB, evs []event.Event) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(evs) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d events not delivered within 30s", len(evs))
		}
		errs, err := sinktest.PerEvent(s.Send(context.Background(), evs), len(evs))
		if err != nil {
			t.Fatal(err)
		}
		var next []event.Event
		for i, e := range errs {
			if e == nil {
				continue
			}
			if c, _ := sinks.Classify(e); c != sinks.ClassRetryable {
				t.Fatalf("permanent: %v", e)
			}
			next = append(next, evs[i])
		}
		evs = next
		if len(evs) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
}
