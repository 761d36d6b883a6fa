package faults

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// dupBound is the most duplicates one crash can make with this suite's configs, and why: a delivery is sent
// twice only when its outcome was not yet committed when the process died. Those are the sends in flight (at
// most delivery.concurrency, 16, per destination, one event each for a webhook) plus the outcomes waiting for
// the dispatcher's completer (its queue holds 4096 completions, and it writes at most 1024 outcomes at once).
// First attempts leased at birth but not yet sent are not sent twice: the lease is released at the next start.
const dupBound = 16 + 4096 + 1024

// TestKillUnderHTTPLoad: kill -9 and restart sluice again and again while 16 publishers post events and a
// receiver takes them; every acknowledged event arrives, duplicates stay within what was in flight.
func TestKillUnderHTTPLoad(t *testing.T) {
	cycles := pick(3, 20)
	rc := newReceiver(t)
	rc.delay = time.Millisecond
	rc.up(t)
	n := newNode(t, baseConfig("", "", webhookDest("sink", rc)))
	n.start()
	ld := newLoad(n.addr, "kill")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ld.run(ctx, 16, 0) }()
	var slowest time.Duration
	for i := range cycles {
		// Kill mid-stream: a thousand events acknowledged since the last start.
		from := ld.nAcked.Load()
		waitFor(t, "events acknowledged before the kill", 60*time.Second, func() bool { return ld.nAcked.Load() >= from+1000 })
		n.kill()
		t.Logf("cycle %d: killed after %d acknowledged", i+1, ld.nAcked.Load())
		began := time.Now()
		n.start()
		slowest = max(slowest, time.Since(began))
	}
	from := ld.nAcked.Load()
	waitFor(t, "events acknowledged after the last restart", 60*time.Second, func() bool { return ld.nAcked.Load() >= from+1000 })
	cancel()
	<-done
	stopped := time.Now()
	ids := ld.ids()
	missing := awaitAll(ids, rc.has, 2*time.Minute)
	d, total := rc.counts()
	record(t, row{Case: fmt.Sprintf("kill -9 x%d, HTTP intake", cycles), Acked: len(ids), Delivered: d, Lost: len(missing),
		Duplicates: total - d, Recovery: fmt.Sprintf("ready <=%s after restart; drained %s after load stopped", ms(slowest), ms(time.Since(stopped)))})
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged events never arrived, e.g. %s", len(missing), missing[0])
	}
	if total-d > cycles*dupBound {
		t.Fatalf("%d duplicates over %d crashes; at most %d can be in flight per crash", total-d, cycles, dupBound)
	}
}

// TestKillUnderAMQPLoad: sluice consumes a queue of events while it is killed and restarted; every message the
// broker confirmed reaches the receiver.
func TestKillUnderAMQPLoad(t *testing.T) {
	url := os.Getenv("SLUICE_TEST_AMQP_URL")
	if url == "" {
		t.Skip("SLUICE_TEST_AMQP_URL is not set: this case consumes from a real RabbitMQ (source /work/wt/env.sh or .ci/services/rabbitmq.sh)")
	}
	cycles, total := pick(2, 10), pick(6000, 30000)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	q := fmt.Sprintf("sluice-faults.kill.%d", time.Now().UnixNano())
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(q, false, false, false)
		}
	})
	confirmed := publishAMQP(t, ch, q, "amqp", total)

	rc := newReceiver(t)
	rc.delay = time.Millisecond
	rc.up(t)
	intake := fmt.Sprintf("intake:\n  amqp:\n    - {url: %q, queue: %s, prefetch: 256}\n", url, q)
	n := newNode(t, baseConfig("", intake, webhookDest("sink", rc)))
	n.start()
	var slowest time.Duration
	for i := range cycles {
		from, _ := rc.counts()
		waitFor(t, "deliveries before the kill", 60*time.Second, func() bool { d, _ := rc.counts(); return d >= from+total/(cycles+2) })
		n.kill()
		d, _ := rc.counts()
		t.Logf("cycle %d: killed with %d of %d delivered", i+1, d, total)
		began := time.Now()
		n.start()
		slowest = max(slowest, time.Since(began))
	}
	missing := awaitAll(confirmed, rc.has, 3*time.Minute)
	d, all := rc.counts()
	record(t, row{Case: fmt.Sprintf("kill -9 x%d, AMQP intake", cycles), Acked: len(confirmed), Delivered: d, Lost: len(missing),
		Duplicates: all - d, Recovery: fmt.Sprintf("ready <=%s after restart", ms(slowest))})
	if len(missing) > 0 {
		t.Fatalf("%d confirmed messages never arrived, e.g. %s", len(missing), missing[0])
	}
	if all-d > cycles*dupBound {
		t.Fatalf("%d duplicates over %d crashes; at most %d can be in flight per crash", all-d, cycles, dupBound)
	}
}

// publishAMQP puts n persistent events on q with publisher confirms and returns the ids the broker confirmed.
func publishAMQP(t *testing.T, ch *amqp.Channel, q, prefix string, n int) []string {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := make([]string, 0, n)
	var confs []*amqp.DeferredConfirmation
	for i := range n {
		id := fmt.Sprintf("%s-%06d", prefix, i)
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{MessageId: id,
			ContentType: "application/json", DeliveryMode: amqp.Persistent,
			Body: []byte(fmt.Sprintf(`{"topic":"fault.test","data":{"n":%d}}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		confs = append(confs, c)
		ids = append(ids, id)
	}
	var ok []string
	for i, c := range confs {
		if c.Wait() {
			ok = append(ok, ids[i])
		}
	}
	if len(ok) != n {
		t.Fatalf("the broker confirmed %d of %d messages", len(ok), n)
	}
	return ok
}
