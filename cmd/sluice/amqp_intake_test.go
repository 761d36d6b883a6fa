package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/intake"
)

// TestAMQPIntakeCrashLosesNothing fills a queue with 10,000 events and one malformed message, lets Sluice
// consume it, kills Sluice with SIGKILL mid-stream, restarts it, and checks that every message was either
// acknowledged and delivered to the webhook receiver or was still in the queue (and so delivered after the
// restart): none lost. The malformed message ends in the dead-letter queue with its reason.
func TestAMQPIntakeCrashLosesNothing(t *testing.T) {
	url := os.Getenv("SLUICE_TEST_AMQP_URL")
	if url == "" {
		t.Skip("SLUICE_TEST_AMQP_URL is not set (run .ci/services/rabbitmq.sh)")
	}
	const n = 10000
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%d", time.Now().UnixNano())
	q, dlx, dlq := "sluice-test.crash."+id, "sluice-test.crash-dlx."+id, "sluice-test.crash-dlq."+id
	for _, name := range []string{q, dlq} {
		if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(q, false, false, false)
			_, _ = c.QueueDelete(dlq, false, false, false)
			_ = c.ExchangeDelete(dlx, false, false)
		}
	})
	if err := ch.ExchangeDeclare(dlx, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var confs []*amqp.DeferredConfirmation
	for i := range n {
		if i == n/2 {
			c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{
				MessageId: "malformed", DeliveryMode: amqp.Persistent, Body: []byte(`{"topic": "case.x", "data": `)})
			if err != nil {
				t.Fatal(err)
			}
			confs = append(confs, c)
		}
		body := fmt.Sprintf(`{"topic":"case.status_updated","data":{"case":{"id":"c-%d","status":"approved"}}}`, i)
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{
			MessageId: fmt.Sprintf("amqp-%05d", i), ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, c)
	}
	for _, c := range confs {
		if !c.Wait() {
			t.Fatal("the broker refused a test message")
		}
	}

	dir := t.TempDir()
	rc := newReceiver(t, "amqp", 0)
	rc.start(t)
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`server: {listen: %s, shutdown_timeout: 10s}
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store: {path: %s}
intake:
  amqp:
    - url: %s
      queue: %s
      prefetch: 256
      dead_letter_exchange: %s
delivery:
  timeout: 5s
  retry: {schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s], jitter: 0.1}
  network: {allow_cidrs: [127.0.0.0/8]}
telemetry:
  log: {level: warn}
destinations:
  - name: receiver
    type: webhook
    topics: ["case.*"]
    config:
      url: http://%s/hooks
      secrets: ["%s"]
`, addr, filepath.Join(dir, "data"), url, q, dlx, rc.addr, e2eSecret)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sluice.log"))
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(sluiceBinary(t), "serve", "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sluice log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	depth := func(name string) int {
		c, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		qi, err := c.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Messages
	}

	start()
	waitFor(t, "2,500 events delivered before the crash", func() bool { d, _, _ := rc.count(); return d >= 2500 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	cmd = nil
	// The broker requeues what the dead connection held unacknowledged.
	var left int
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = depth(q)
		if time.Now().After(deadline) || left > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	delivered, _, _ := rc.count()
	t.Logf("killed sluice with SIGKILL: %d events delivered, %d messages still in the queue", delivered, left)
	if left == 0 {
		t.Fatal("the queue was drained before the kill; the crash did not happen mid-stream")
	}

	start()
	deadline = time.Now().Add(3 * time.Minute)
	for i := range n {
		id := fmt.Sprintf("amqp-%05d", i)
		for !rc.has(id) {
			if time.Now().After(deadline) {
				d, _, _ := rc.count()
				t.Fatalf("message %s was lost: neither delivered nor in the queue (%d of %d delivered, queue holds %d)", id, d, n, depth(q))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(t, "the queue drained", func() bool { return depth(q) == 0 })
	d, total, bad := rc.count()
	t.Logf("receiver: %d distinct events, %d deliveries (%d duplicates), %d bad signatures", d, total, total-d, bad)
	if d != n || bad != 0 {
		t.Fatalf("receiver got %d distinct events (want %d), %d bad signatures", d, n, bad)
	}

	// The malformed message was rejected without requeue and dead-lettered with its reason.
	var dead amqp.Delivery
	waitFor(t, "the malformed message in the dead-letter queue", func() bool {
		m, ok, err := ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			dead = m
		}
		return ok
	})
	reason, _ := dead.Headers[intake.HeaderRejectReason].(string)
	if dead.MessageId != "malformed" || !strings.Contains(reason, "not a Sluice event") {
		t.Fatalf("dead-lettered %q with reason %q", dead.MessageId, reason)
	}
	if rest := depth(dlq); rest != 0 {
		t.Fatalf("%d more messages dead-lettered; only the malformed one should be", rest)
	}
}
