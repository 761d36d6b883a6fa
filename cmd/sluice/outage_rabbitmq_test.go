package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/sinks/sinktest"
)

// TestRabbitMQOutage runs the real binary with a rabbitmq destination, publishes events from 16 publishers,
// and while they flow cuts Sluice off RabbitMQ twice: the broker closes Sluice's connection (as
// `rabbitmqctl close_connection` does, CONNECTION_FORCED), then the network to the broker goes away for two
// seconds (a proxy refuses connections) and comes back. Every event Sluice acknowledged must be in the queue;
// duplicates (published, but the confirm was lost with the connection) are counted and logged.
//
// Deliveries are rate-limited to 800/s and publishing goes on until both cuts are over. Only
// Sluice's own connection is closed (found by its connection_name), so tests sharing the broker are not
// disturbed.
func TestRabbitMQOutage(t *testing.T) {
	amqpURL := os.Getenv("SLUICE_TEST_AMQP_URL")
	if amqpURL == "" {
		t.Skip("SLUICE_TEST_AMQP_URL is not set; .ci/services/rabbitmq.sh starts RabbitMQ and sets it")
	}
	uri, err := amqp.ParseURI(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	suffix := randomHex(6)
	exchange, queue, dest := "sluice-outage-x-"+suffix, "sluice-outage-q-"+suffix, "amqp-outage-"+suffix

	// The test's own exchange and queue, and a consumer that records every message id it gets.
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatalf("connect to RabbitMQ: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(queue, false, false, false)
			_ = c.ExchangeDelete(exchange, false, false)
		}
	})
	var mu sync.Mutex
	got := map[string]int{}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range deliveries {
			mu.Lock()
			got[d.MessageId]++
			mu.Unlock()
		}
	}()

	// Sluice reaches the broker through a proxy the test can take away.
	proxy := sinktest.NewProxy(t, fmt.Sprintf("%s:%d", uri.Host, uri.Port))
	sluiceURI := uri
	sluiceURI.Host, sluiceURI.Port = splitHostPort(t, proxy.Addr())

	dir := t.TempDir()
	c := &cluster{t: t, dir: dir, addr: freeAddr(t), cfg: filepath.Join(dir, "sluice.yaml")}
	cfg := fmt.Sprintf(`server:
  listen: %s
  shutdown_timeout: 10s
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store:
  path: %s
delivery:
  timeout: 5s
  retry:
    schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s]
    jitter: 0.1
  network:
    allow_cidrs: [127.0.0.0/8]
telemetry:
  log: {level: warn}
destinations:
  - name: %s
    type: rabbitmq
    topics: ["case.*"]
    # Publishing outpaces the broker-side close (rabbitmqctl takes a second); the limit keeps deliveries
    # flowing for a few seconds so both cuts land mid-load.
    rate_limit: {per_second: 800, burst: 50}
    config:
      url: %q
      exchange: %s
      routing_key: "{topic}.{data.case.id}"
`, c.addr, filepath.Join(dir, "data"), dest, sluiceURI.String(), exchange)
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if c.log, err = os.Create(filepath.Join(dir, "sluice.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop(syscall.SIGKILL)
		b, _ := os.ReadFile(c.log.Name())
		if t.Failed() {
			t.Logf("sluice log (last 4 KiB):\n%s", tail(b, 4096))
		} else if strings.Contains(string(b), uri.Password) && uri.Password != "" && len(uri.Password) > 5 {
			t.Errorf("the sluice log shows the AMQP password")
		}
	})
	c.start()

	consumed := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	// Publishers run until both cuts are over, in rounds of 200 events, holding back while more than 1,500
	// acknowledged events wait for delivery: the cuts always land while deliveries flow, however long
	// rabbitmqctl takes, and the backlog stays small enough to drain quickly.
	var acked sync.Map
	var n atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		for round := 0; !stop.Load(); round++ {
			for !stop.Load() && n.Load()-int64(consumed()) > 1500 {
				time.Sleep(20 * time.Millisecond)
			}
			publishEvents(context.Background(), c.addr, fmt.Sprintf("evt%04d", round), nil, 200, 16, &acked, &n)
		}
	}()

	waitFor(t, "the first deliveries", func() bool { return consumed() >= 100 })
	if closed, why := closeNamedConnections("sluice " + dest); why != "" {
		t.Logf("broker-side close skipped: %s", why)
	} else {
		t.Logf("RabbitMQ closed %d Sluice connection(s) with %d acknowledged and %d delivered", closed, n.Load(), consumed())
	}
	mark := consumed() + 300
	waitFor(t, "deliveries after the forced close", func() bool { return consumed() >= mark })
	proxy.Stop()
	t.Logf("RabbitMQ unreachable with %d acknowledged and %d delivered", n.Load(), consumed())
	time.Sleep(2 * time.Second)
	proxy.Start()
	backlog := n.Load() - int64(consumed())
	t.Logf("RabbitMQ reachable again with %d acknowledged and %d delivered", n.Load(), consumed())
	if backlog <= 0 {
		t.Fatal("nothing was waiting for delivery when RabbitMQ came back; the test proves nothing")
	}
	stop.Store(true)
	<-done
	if n.Load() < 1000 {
		t.Fatalf("only %d events acknowledged", n.Load())
	}

	var ids []string
	acked.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
	deadline := time.Now().Add(3 * time.Minute)
	for {
		mu.Lock()
		missing := 0
		for _, id := range ids {
			if got[id] == 0 {
				missing++
			}
		}
		distinct, copies := len(got), 0
		for _, k := range got {
			copies += k
		}
		mu.Unlock()
		if missing == 0 {
			t.Logf("all %d acknowledged events are in the queue %v after the first publish; %d messages, %d duplicates",
				len(ids), time.Since(start).Round(time.Millisecond), copies, copies-distinct)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged events never reached the queue", missing, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("sluice did not exit cleanly on SIGTERM: %v", err)
	}
}

// closeNamedConnections asks the broker (rabbitmqctl) to close the connections whose connection_name is name.
// why says why it could not.
func closeNamedConnections(name string) (closed int, why string) {
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return 0, "rabbitmqctl is not on PATH"
	}
	var lastErr string
	// The connection may be mid-reconnect; look for it for a few seconds.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := exec.Command("rabbitmqctl", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
		if err != nil {
			return 0, fmt.Sprintf("rabbitmqctl list_connections: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.Contains(line, `{"connection_name","`+name+`"}`) {
				continue
			}
			pid, _, _ := strings.Cut(line, "\t")
			if o, err := exec.Command("rabbitmqctl", "-q", "close_connection", pid, "sluice outage test").CombinedOutput(); err != nil {
				lastErr = fmt.Sprintf("close_connection: %v: %s", err, o)
				continue
			}
			closed++
		}
		if closed > 0 {
			return closed, ""
		}
	}
	if lastErr != "" {
		return 0, lastErr
	}
	return 0, "no connection named " + name
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	if _, err := fmt.Sscan(p, &port); err != nil {
		t.Fatal(err)
	}
	return h, port
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
