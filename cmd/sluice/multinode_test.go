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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The multi-node tests run three real sluice binaries on one PostgreSQL schema (SLUICE_TEST_PG_DSN).

// testEncryptionKey seals API destinations' secrets in these tests (base64 of 32 bytes).
const testEncryptionKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

type pgNode struct {
	t          *testing.T
	name, addr string
	cfg        string
	cmd        *exec.Cmd
	log        *os.File
}

// startNodes writes one config per node (same store, same destinations, own listen address) and starts them.
func startNodes(t *testing.T, n int, destinations string) []*pgNode {
	t.Helper()
	return startNodesOn(t, pgSchema(t), n, destinations)
}

// startNodesOn starts n nodes on the store at dsn.
func startNodesOn(t *testing.T, dsn string, n int, destinations string) []*pgNode {
	t.Helper()
	dir := t.TempDir()
	var nodes []*pgNode
	for i := range n {
		nd := &pgNode{t: t, name: fmt.Sprintf("node%d", i+1), addr: freeAddr(t)}
		cfg := fmt.Sprintf(`server:
  listen: %s
  shutdown_timeout: 10s
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store:
  driver: postgres
  dsn: %q
  max_conns: 8
  encryption_key: %q
delivery:
  timeout: 5s
  retry:
    schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s, 2s, 2s]
    jitter: 0.1
  network:
    allow_cidrs: [127.0.0.0/8]
telemetry:
  log: {level: warn}
destinations:%s
`, nd.addr, dsn, testEncryptionKey, destinations)
		nd.cfg = filepath.Join(dir, nd.name+".yaml")
		if err := os.WriteFile(nd.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		var err error
		if nd.log, err = os.Create(filepath.Join(dir, nd.name+".log")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			nd.kill()
			if t.Failed() {
				b, _ := os.ReadFile(nd.log.Name())
				t.Logf("%s log (last 4 KiB):\n%s", nd.name, tail(b, 4096))
			}
		})
		nodes = append(nodes, nd)
	}
	// Started one by one: the first applies the migrations, the others find them applied (concurrent starts
	// are covered by the store's own test).
	for _, nd := range nodes {
		nd.start()
	}
	return nodes
}

func (nd *pgNode) start() {
	nd.t.Helper()
	nd.cmd = exec.Command(sluiceBinary(nd.t), "serve", "--config", nd.cfg)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
	if err := nd.cmd.Start(); err != nil {
		nd.t.Fatal(err)
	}
	waitFor(nd.t, nd.name+" ready", func() bool {
		resp, err := http.Get("http://" + nd.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (nd *pgNode) kill() {
	if nd.cmd == nil || nd.cmd.Process == nil {
		return
	}
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	_ = nd.cmd.Wait()
	nd.cmd = nil
}

// api calls the node's API as admin and decodes the answer into out (when not nil).
func (nd *pgNode) api(method, path, body string, out any) int {
	nd.t.Helper()
	req, _ := http.NewRequest(method, "http://"+nd.addr+path, bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer e2e-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		nd.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(b, out)
	}
	return resp.StatusCode
}

// publishSpread posts n events (ids prefix-00000…) from workers publishers, each starting at node i%len and
// moving to the next node when one does not answer 202, retrying with the same id until acknowledged.
func publishSpread(ctx context.Context, nodes []*pgNode, prefix string, n, workers int, acked *sync.Map, ackCount *atomic.Int64) {
	client := &http.Client{Timeout: 10 * time.Second}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := w
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				id := fmt.Sprintf("%s-%05d", prefix, i)
				body, _ := json.Marshal(map[string]any{"id": id, "topic": "case.status_updated",
					"data": map[string]any{"case": map[string]any{"id": fmt.Sprint("c-", i%50), "status": "approved"}}})
				for ctx.Err() == nil {
					nd := nodes[at%len(nodes)]
					req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+nd.addr+"/v1/events", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer e2e-key")
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							acked.Store(id, true)
							ackCount.Add(1)
							at++ // spread the load
							break
						}
					}
					at++ // that node is down or refused: the next one
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

func pgWebhookDest(name string, rc *receiver, extra string) string {
	return fmt.Sprintf(`
  - name: %s
    type: webhook
    topics: ["case.*"]%s
    config:
      url: http://%s/hooks
      secrets: ["%s"]`, name, extra, rc.addr, e2eSecret)
}

// TestThreeNodesSurviveKills: three nodes share the load; one is killed with SIGKILL mid-load, then a second.
// Every acknowledged event reaches both receivers (one of them failing the first two attempts of each).
func TestThreeNodesSurviveKills(t *testing.T) {
	healthy, flaky := newReceiver(t, "healthy", 0), newReceiver(t, "flaky", 2)
	healthy.start(t)
	flaky.start(t)
	nodes := startNodes(t, 3, pgWebhookDest("healthy", healthy, "")+pgWebhookDest("flaky", flaky, "\n    breaker: {failures: 0}"))
	var acked sync.Map
	var n atomic.Int64
	const total = 6000
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishSpread(context.Background(), nodes, "mn", total, 24, &acked, &n)
	}()
	waitFor(t, "1500 acknowledged events", func() bool { return n.Load() >= 1500 })
	nodes[0].kill()
	t.Logf("killed node1 with SIGKILL after %d acknowledged events", n.Load())
	waitFor(t, "3500 acknowledged events", func() bool { return n.Load() >= 3500 })
	nodes[1].kill()
	t.Logf("killed node2 with SIGKILL after %d acknowledged events", n.Load())
	<-done
	if n.Load() != total {
		t.Fatalf("acknowledged %d of %d", n.Load(), total)
	}
	var ids []string
	acked.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
	// The dead nodes' leases run out (30 s) before node3 takes their deliveries over.
	deadline := time.Now().Add(3 * time.Minute)
	for _, rc := range []*receiver{healthy, flaky} {
		for _, id := range ids {
			for !rc.has(id) {
				if time.Now().After(deadline) {
					d, _, _ := rc.count()
					t.Fatalf("receiver %s never got acknowledged event %s (%d of %d arrived)", rc.name, id, d, len(ids))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		d, all, bad := rc.count()
		t.Logf("receiver %-8s %d distinct events, %d deliveries (%d duplicates), %d bad signatures", rc.name, d, all, all-d, bad)
		if bad > 0 {
			t.Errorf("receiver %s saw %d requests with bad signatures", rc.name, bad)
		}
	}
}

// TestDestinationChangesReachEveryNode: a destination created over the API on node1 receives events published
// on node3; disabled on node2, it stops receiving from every node.
func TestDestinationChangesReachEveryNode(t *testing.T) {
	witness, api := newReceiver(t, "witness", 0), newReceiver(t, "api", 0)
	witness.start(t)
	api.start(t)
	nodes := startNodes(t, 3, pgWebhookDest("witness", witness, ""))
	var created map[string]any
	body := fmt.Sprintf(`{"name": "from-api", "type": "webhook", "topics": ["case.*"], "config": {"url": "http://%s/hooks", "secrets": [%q]}}`,
		api.addr, e2eSecret)
	if code := nodes[0].api("POST", "/v1/destinations", body, &created); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create on node1: %d %v", code, created)
	}
	id, _ := created["id"].(string)
	if id == "" {
		t.Fatalf("create answered no id: %v", created)
	}
	began := time.Now()
	waitFor(t, "node3 to know the new destination", func() bool { return nodes[2].api("GET", "/v1/destinations/"+id, "", nil) == http.StatusOK })
	t.Logf("node3 learned of the destination created on node1 after %s", time.Since(began).Round(time.Millisecond))
	var acked sync.Map
	var n atomic.Int64
	publishSpread(context.Background(), nodes[2:], "created", 20, 4, &acked, &n)
	waitFor(t, "events published on node3 at the API destination", func() bool {
		for i := range 20 {
			if !api.has(fmt.Sprintf("created-%05d", i)) {
				return false
			}
		}
		return true
	})

	if code := nodes[1].api("POST", "/v1/destinations/"+id+"/disable", `{"reason": "test"}`, nil); code != http.StatusOK {
		t.Fatalf("disable on node2: %d", code)
	}
	began = time.Now()
	for _, nd := range nodes {
		waitFor(t, nd.name+" to see the destination disabled", func() bool {
			var v map[string]any
			nd.api("GET", "/v1/destinations/"+id, "", &v)
			return v["enabled"] == false
		})
	}
	t.Logf("every node saw the destination disabled on node2 after %s", time.Since(began).Round(time.Millisecond))
	publishSpread(context.Background(), []*pgNode{nodes[0], nodes[2]}, "after", 40, 4, &acked, &n)
	// The witness destination gets the same events: once it has them all, the disabled one had its chance.
	waitFor(t, "the witness to get the events published after the disable", func() bool {
		for i := range 40 {
			if !witness.has(fmt.Sprintf("after-%05d", i)) {
				return false
			}
		}
		return true
	})
	for i := range 40 {
		if id := fmt.Sprintf("after-%05d", i); api.has(id) {
			t.Fatalf("the disabled destination received %s", id)
		}
	}
}

// orderedReceiver records, per case id, the order in which events first arrived; it refuses a random share
// of requests with 503.
type orderedReceiver struct {
	addr string
	mu   sync.Mutex
	seen map[string]bool
	keys map[string][]int
	rnd  *mathrand.Rand
	srv  *http.Server
}

func (rc *orderedReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Data struct {
			Case struct{ ID string } `json:"case"`
			N    int                 `json:"n"`
		} `json:"data"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.rnd.IntN(4) == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	id := r.Header.Get("webhook-id")
	if !rc.seen[id] {
		rc.seen[id] = true
		rc.keys[body.Data.Case.ID] = append(rc.keys[body.Data.Case.ID], body.Data.N)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *orderedReceiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}

// TestOrderingAcrossThreeNodes: events of one case, published one after another through all three nodes, reach
// a receiver that refuses a quarter of requests at random in the order they were published.
func TestOrderingAcrossThreeNodes(t *testing.T) {
	rc := &orderedReceiver{addr: freeAddr(t), seen: map[string]bool{}, keys: map[string][]int{}, rnd: mathrand.New(mathrand.NewPCG(1, 2))}
	ln, err := net.Listen("tcp", rc.addr)
	if err != nil {
		t.Fatal(err)
	}
	rc.srv = &http.Server{Handler: rc}
	go rc.srv.Serve(ln)
	t.Cleanup(func() { rc.srv.Close() })
	nodes := startNodes(t, 3, fmt.Sprintf(`
  - name: ordered
    type: webhook
    topics: ["case.*"]
    ordering_key: data.case.id
    breaker: {failures: 0}
    config:
      url: http://%s/hooks
      signing: none`, rc.addr))
	const keys, perKey = 12, 25
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perKey {
				body := fmt.Sprintf(`{"id": "o-%d-%d", "topic": "case.status_updated", "data": {"case": {"id": "c-%d"}, "n": %d}}`, k, i, k, i)
				for at := k + i; ; at++ { // each event through the next node: a key's events cross all three
					req, _ := http.NewRequest("POST", "http://"+nodes[at%3].addr+"/v1/events", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer e2e-key")
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err == nil {
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							break
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(3 * time.Minute)
	for rc.count() < keys*perKey {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events arrived", rc.count(), keys*perKey)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for key, ns := range rc.keys {
		for i, n := range ns {
			if n != i {
				t.Fatalf("key %s arrived in the order %v, want 0..%d", key, ns, perKey-1)
			}
		}
	}
}
