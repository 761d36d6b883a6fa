package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbit is a private RabbitMQ node for one test: its own node name, ports, cookie, database and logs under a
// temp dir, so restarting it touches nobody else's broker (the shared one on 5672 serves other tests).
type rabbit struct {
	t       *testing.T
	dir     string
	env     []string
	url     string
	server  string // rabbitmq-server
	ctl     string // rabbitmqctl
	pidFile string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startRabbit starts a private node, or skips the test with the reason it cannot.
func startRabbit(t *testing.T) *rabbit {
	t.Helper()
	server, ctl := "/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmqctl"
	if _, err := os.Stat(server); err != nil {
		// Elsewhere the scripts are on PATH (they may be wrappers that switch user; those need root).
		var e1, e2 error
		server, e1 = exec.LookPath("rabbitmq-server")
		ctl, e2 = exec.LookPath("rabbitmqctl")
		if e1 != nil || e2 != nil {
			t.Skip("rabbitmq-server is not installed: the broker-restart case needs a private RabbitMQ node")
		}
	}
	dir, err := os.MkdirTemp("", "sluice-faults-rabbit")
	if err != nil {
		t.Fatal(err)
	}
	port, dist := freePort(t), freePort(t)
	name := fmt.Sprintf("sluice-faults-%d-%d@localhost", os.Getpid(), port)
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "home"), 0o700); err != nil {
		t.Fatal(err)
	}
	r := &rabbit{t: t, dir: dir, server: server, ctl: ctl, pidFile: filepath.Join(dir, "rabbit.pid"),
		url: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)}
	r.env = append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"), // its own Erlang cookie, shared by the node and rabbitmqctl
		"RABBITMQ_NODENAME="+name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"), // none: the defaults
		"RABBITMQ_PID_FILE="+r.pidFile,
	)
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("private rabbitmq output (tail):\n%s", b)
		}
		os.RemoveAll(dir)
	})
	if err := r.start(); err != nil {
		t.Skipf("cannot start a private RabbitMQ node: %v", err)
	}
	return r
}

// start launches the node on its existing database and waits until it accepts connections.
func (r *rabbit) start() error {
	out, err := os.OpenFile(filepath.Join(r.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(r.server)
	cmd.Env, cmd.Stdout, cmd.Stderr = r.env, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); close(done) }(cmd, r.exited)
	wait := exec.Command(r.ctl, "wait", r.pidFile, "--timeout", "90")
	wait.Env = r.env
	if b, err := wait.CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmqctl wait: %v: %s", err, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := amqp.Dial(r.url)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node does not accept connections: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts the node down cleanly (as an operator's restart does), or kills it if that fails.
func (r *rabbit) stop() {
	if r.cmd == nil {
		return
	}
	stop := exec.Command(r.ctl, "stop", r.pidFile)
	stop.Env = r.env
	if b, err := stop.CombinedOutput(); err != nil {
		r.t.Logf("rabbitmqctl stop: %v: %s", err, b)
	}
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
	r.cmd = nil
}

// TestRabbitMQRestart: sluice consumes events from a queue (AMQP intake) and publishes them to another queue
// (RabbitMQ sink) on a private broker, which is restarted mid-stream. Every event the broker confirmed on the
// way in reaches the queue on the way out.
func TestRabbitMQRestart(t *testing.T) {
	total := pick(6000, 30000)
	r := startRabbit(t)
	suffix := fmt.Sprint(time.Now().UnixNano())
	in, out := "faults.in."+suffix, "faults.out."+suffix
	conn, err := amqp.Dial(r.url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{in, out} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	confirmed := map[string]bool{}
	got := map[string]int{}
	var gotAt []time.Time
	// The consumer of the out queue, reconnecting across the restart. It acks each message after counting it:
	// with auto-ack the broker forgets a message once it is sent, and those still on their way to this
	// consumer when the broker stops would be lost by the test, not by Sluice.
	go func() {
		for ctx.Err() == nil {
			c, err := amqp.Dial(r.url)
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			cch, err := c.Channel()
			var msgs <-chan amqp.Delivery
			if err == nil {
				msgs, err = cch.Consume(out, "", false, false, false, false, nil)
			}
			for err == nil {
				select {
				case m, ok := <-msgs:
					if !ok {
						err = amqp.ErrClosed
						break
					}
					mu.Lock()
					got[m.MessageId]++
					gotAt = append(gotAt, time.Now())
					mu.Unlock()
					// An ack lost with the connection brings the message again: a duplicate, counted as one.
					err = m.Ack(false)
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			c.Close()
		}
	}()
	// The producer into the in queue: each message is published until the broker confirms it.
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		next := 0
		for ctx.Err() == nil && next < total {
			c, err := amqp.Dial(r.url)
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			pch, err := c.Channel()
			if err == nil {
				err = pch.Confirm(false)
			}
			for err == nil && next < total && ctx.Err() == nil {
				// 50 at a time, then wait for their confirms; on any error the unconfirmed ones go again.
				var confs []*amqp.DeferredConfirmation
				n := min(50, total-next)
				for i := range n {
					id := fmt.Sprintf("rmq-%06d", next+i)
					var dc *amqp.DeferredConfirmation
					dc, err = pch.PublishWithDeferredConfirmWithContext(ctx, "", in, false, false, amqp.Publishing{MessageId: id,
						ContentType: "application/json", DeliveryMode: amqp.Persistent,
						Body: []byte(fmt.Sprintf(`{"topic":"fault.test","data":{"n":%d}}`, next+i))})
					if err != nil {
						break
					}
					confs = append(confs, dc)
				}
				acked := 0
				for _, dc := range confs {
					if !dc.Wait() {
						break
					}
					acked++
				}
				mu.Lock()
				for i := range acked {
					confirmed[fmt.Sprintf("rmq-%06d", next+i)] = true
				}
				mu.Unlock()
				if acked < n && err == nil {
					err = amqp.ErrClosed
				}
				next += acked
				time.Sleep(20 * time.Millisecond) // a steady stream (at most 2,500/s) rather than one burst
			}
			c.Close()
		}
	}()

	intake := fmt.Sprintf("intake:\n  amqp:\n    - {url: %q, queue: %s, prefetch: 256}\n", r.url, in)
	dests := fmt.Sprintf("  - name: out\n    type: rabbitmq\n    topics: [\"*\"]\n    config: {url: %q, exchange: \"\", routing_key: %s, mandatory: true}\n", r.url, out)
	n := newNode(t, baseConfig("", intake, dests))
	n.start()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	waitFor(t, "events through the broker before the restart", 60*time.Second, func() bool { return count() >= total/4 })
	r.stop()
	before := count()
	downAt := time.Now()
	if err := r.start(); err != nil {
		t.Fatalf("restart the private RabbitMQ node: %v", err)
	}
	back := time.Now()
	t.Logf("broker restarted (down %s) with %d events through", ms(back.Sub(downAt)), before)
	<-produced
	mu.Lock()
	ids := make([]string, 0, len(confirmed))
	for id := range confirmed {
		ids = append(ids, id)
	}
	mu.Unlock()
	has := func(id string) bool { mu.Lock(); defer mu.Unlock(); return got[id] > 0 }
	missing := awaitAll(ids, has, 3*time.Minute)
	drained := time.Since(back)
	mu.Lock()
	d, all := len(got), 0
	for _, c := range got {
		all += c
	}
	var first time.Time
	for _, at := range gotAt {
		if !at.Before(back) {
			first = at
			break
		}
	}
	mu.Unlock()
	resumed := "none"
	if !first.IsZero() {
		resumed = ms(first.Sub(back))
	}
	record(t, row{Case: "RabbitMQ restart (intake + sink)", Acked: len(ids), Delivered: d, Lost: len(missing), Duplicates: all - d,
		Recovery: fmt.Sprintf("broker down %s; first event out %s after it was back, all %s after", ms(back.Sub(downAt)), resumed, ms(drained))})
	if len(missing) > 0 {
		t.Fatalf("%d confirmed events never reached the out queue, e.g. %s", len(missing), missing[0])
	}
}
