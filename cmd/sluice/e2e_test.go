package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sinks/webhook"
)

// The end-to-end tests build the real binary, run it as a separate process on the embedded store, publish
// over HTTP and count what real webhook receivers on loopback get.

const e2eSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var (
	buildMu  sync.Mutex
	builds   = map[string]string{} // package → built binary
	buildErr = map[string]error{}
)

// buildOnce builds a main package once per test process and returns the binary's path.
func buildOnce(t *testing.T, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if path, ok := builds[pkg]; ok {
		return path
	}
	if err, ok := buildErr[pkg]; ok {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sluice-test-bin")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", path, pkg)
	if _, err := os.Stat(filepath.Join(pkg, "go.mod")); err == nil {
		// A module of its own (the example plugin): build it inside its module, with its own go.mod.
		cmd = exec.Command("go", "build", "-o", path, ".")
		cmd.Dir = pkg
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		buildErr[pkg] = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		t.Fatal(buildErr[pkg])
	}
	builds[pkg] = path
	return path
}

func sluiceBinary(t *testing.T) string { return buildOnce(t, ".", "sluice") }

func freeAddr(t *testing.T) string {
	t.Helper()
	// Below the kernel's ephemeral range (32768 and up on Linux): a port picked there can be taken, between this
	// check and the binary's bind, by any outgoing connection of the tests running beside this one. Down here
	// only an explicit bind can take it, and picks are random and never repeated within this process.
	freeMu.Lock()
	defer freeMu.Unlock()
	for range 1000 {
		port := 20000 + mathrand.IntN(12000)
		if freeTaken[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		freeTaken[port] = true
		return ln.Addr().String()
	}
	t.Fatal("no free port between 20000 and 32000")
	return ""
}

var (
	freeMu    sync.Mutex
	freeTaken = map[int]bool{}
)

// receiver is a webhook endpoint that verifies signatures and records every event id it accepted.
type receiver struct {
	name string
	addr string
	// failFirst answers 503 to the first failFirst attempts of each event.
	failFirst int

	mu       sync.Mutex
	got      map[string]int
	tries    map[string]int
	badSig   int
	requests int
	srv      *http.Server
}

func newReceiver(t *testing.T, name string, failFirst int) *receiver {
	return &receiver{name: name, addr: freeAddr(t), failFirst: failFirst, got: map[string]int{}, tries: map[string]int{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("webhook-id")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	if err := webhook.VerifyStandard([]string{e2eSecret}, r.Header, body, 5*time.Minute); err != nil {
		rc.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rc.tries[id]++
	if rc.tries[id] <= rc.failFirst {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	rc.got[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", rc.addr)
	if err != nil {
		t.Fatalf("receiver %s: %v", rc.name, err)
	}
	rc.srv = &http.Server{Handler: rc}
	go rc.srv.Serve(ln)
	t.Cleanup(func() { rc.srv.Close() })
}

func (rc *receiver) has(id string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got[id] > 0
}

func (rc *receiver) count() (distinct, total, badSig int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, n := range rc.got {
		distinct++
		total += n
	}
	return distinct, total, rc.badSig
}

type cluster struct {
	t                          *testing.T
	dir, cfg, addr             string
	healthy, flaky, late, excl *receiver
	cmd                        *exec.Cmd
	log                        *os.File
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), addr: freeAddr(t)}
	c.healthy = newReceiver(t, "healthy", 0)
	c.flaky = newReceiver(t, "flaky", 2)
	c.late = newReceiver(t, "late", 0)
	c.excl = newReceiver(t, "excluded", 0)
	c.healthy.start(t)
	c.flaky.start(t)
	c.excl.start(t)
	dest := func(name string, rc *receiver, extra string) string {
		return fmt.Sprintf(`
  - name: %s
    type: webhook
    topics: ["case.*"]%s
    config:
      url: http://%s/hooks
      secrets: ["%s"]`, name, extra, rc.addr, e2eSecret)
	}
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
    schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s, 2s, 2s]
    jitter: 0.1
  network:
    allow_cidrs: [127.0.0.0/8]
telemetry:
  log: {level: warn}
destinations:%s%s%s%s
`, c.addr, filepath.Join(c.dir, "data"),
		// The flaky receiver refuses two of every three requests by design; a breaker would rightly call that
		// unhealthy, so it is off for that destination (the late one keeps the default breaker).
		dest("healthy", c.healthy, ""), dest("flaky", c.flaky, "\n    breaker: {failures: 0}"), dest("late", c.late, ""),
		dest("excluded", c.excl, "\n    filter: {data: {never: true}}"))
	c.cfg = filepath.Join(c.dir, "sluice.yaml")
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.log, err = os.Create(filepath.Join(c.dir, "sluice.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(c.log.Name())
			t.Logf("sluice log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	return c
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (c *cluster) start() {
	c.t.Helper()
	c.cmd = exec.Command(sluiceBinary(c.t), "serve", "--config", c.cfg)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + c.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("sluice did not become ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) stop(sig syscall.Signal) error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(sig)
	err := c.cmd.Wait()
	c.cmd = nil
	return err
}

// publish sends n events from workers concurrent publishers; see publishEvents.
func (c *cluster) publish(ctx context.Context, n, workers int, acked *sync.Map, ackCount *atomic.Int64) {
	publishEvents(ctx, c.addr, "evt", nil, n, workers, acked, ackCount)
}

// publishEvents posts n approved-case events (ids prefix-00000…) from workers publishers, retrying each with
// the same id until Sluice acknowledges it; acked records the ids that got a 202.
func publishEvents(ctx context.Context, addr, prefix string, metadata map[string]string, n, workers int, acked *sync.Map, ackCount *atomic.Int64) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				id := fmt.Sprintf("%s-%05d", prefix, i)
				ev := map[string]any{"id": id, "topic": "case.status_updated",
					"data": map[string]any{"case": map[string]any{"id": fmt.Sprint("c-", i), "status": "approved"}}}
				if metadata != nil {
					ev["metadata"] = metadata
				}
				body, _ := json.Marshal(ev)
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/v1/events", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer e2e-key")
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							acked.Store(id, true)
							ackCount.Add(1)
							break
						}
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

// verify waits until every acknowledged event reached every subscribed receiver and checks none reached the
// excluded one.
func (c *cluster) verify(acked *sync.Map) {
	c.t.Helper()
	var ids []string
	acked.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
	deadline := time.Now().Add(3 * time.Minute)
	for _, rc := range []*receiver{c.healthy, c.flaky, c.late} {
		for _, id := range ids {
			for !rc.has(id) {
				if time.Now().After(deadline) {
					d, _, _ := rc.count()
					c.t.Fatalf("receiver %s never got acknowledged event %s (%d of %d arrived)", rc.name, id, d, len(ids))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		d, total, bad := rc.count()
		c.t.Logf("receiver %-8s %d distinct events, %d deliveries (%d duplicates), %d bad signatures", rc.name, d, total, total-d, bad)
		if bad > 0 {
			c.t.Errorf("receiver %s saw %d requests with bad signatures", rc.name, bad)
		}
	}
	if d, _, _ := c.excl.count(); d != 0 || c.excl.requests != 0 {
		c.t.Fatalf("the excluded destination received %d events", d)
	}
}

func (c *cluster) getEvent(id string) map[string]any {
	c.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+c.addr+"/v1/events/"+id, nil)
	req.Header.Set("Authorization", "Bearer e2e-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// TestEndToEnd: 10,000 events from 32 publishers to a healthy receiver, one failing the first two attempts of
// each event, one down for the first 5 seconds, and one whose filter excludes everything.
func TestEndToEnd(t *testing.T) {
	c := newCluster(t)
	c.start()
	time.AfterFunc(5*time.Second, func() { c.late.start(t) })
	var acked sync.Map
	var n atomic.Int64
	start := time.Now()
	c.publish(context.Background(), 10000, 32, &acked, &n)
	took := time.Since(start)
	t.Logf("accepted %d events in %v (%.0f/s, durable)", n.Load(), took.Round(time.Millisecond), float64(n.Load())/took.Seconds())
	if n.Load() != 10000 {
		t.Fatalf("acknowledged %d of 10000", n.Load())
	}
	c.verify(&acked)
	t.Logf("all deliveries done %v after the first publish", time.Since(start).Round(time.Millisecond))

	// The attempt log shows the flaky receiver's two refusals before its success.
	ev := c.getEvent("evt-00042")
	deliveries, _ := ev["deliveries"].([]any)
	if len(deliveries) != 3 {
		t.Fatalf("event has %d deliveries, want 3 (excluded destination must have none): %v", len(deliveries), ev)
	}
	waitFor(t, "flaky delivery recorded as delivered", func() bool {
		for _, d := range c.getEvent("evt-00042")["deliveries"].([]any) {
			dm := d.(map[string]any)
			if dm["destination"].(map[string]any)["name"] == "flaky" {
				at := dm["attempts"].([]any)
				return dm["status"] == "delivered" && len(at) == 3 &&
					at[0].(map[string]any)["status_code"] == 503.0 && at[2].(map[string]any)["status_code"] == 204.0
			}
		}
		return false
	})

	// SIGTERM drains and exits 0.
	if err := c.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("sluice did not exit cleanly on SIGTERM: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashLosesNothing runs the same load, kills Sluice with SIGKILL mid-stream, restarts it on the same
// store, and checks every acknowledged event still reaches every subscribed receiver.
func TestCrashLosesNothing(t *testing.T) {
	c := newCluster(t)
	c.late.start(t)
	c.start()
	var acked sync.Map
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publish(context.Background(), 10000, 32, &acked, &n)
	}()
	waitFor(t, "3000 acknowledged events", func() bool { return n.Load() >= 3000 })
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	c.cmd = nil
	killedAt := n.Load()
	t.Logf("killed sluice with SIGKILL after %d acknowledged events", killedAt)
	time.Sleep(300 * time.Millisecond)
	c.start()
	<-done
	if n.Load() != 10000 {
		t.Fatalf("acknowledged %d of 10000", n.Load())
	}
	c.verify(&acked)
}
