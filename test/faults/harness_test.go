package faults

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/time/rate"
)

var fullFlag = flag.Bool("faults.full", false, "run the full fault suite (also SLUICE_FAULTS_FULL=1)")

// full reports whether the long form runs: more kill cycles, longer outages, more events.
func full() bool { return *fullFlag || os.Getenv("SLUICE_FAULTS_FULL") == "1" }

// pick returns short or long by the form that runs.
func pick[T any](short, long T) T {
	if full() {
		return long
	}
	return short
}

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	if binDir, err = os.MkdirTemp("", "sluice-faults-bin"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	printReport(os.Stdout)
	os.RemoveAll(binDir)
	os.Exit(code)
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// build compiles a main package of this module once per run and returns the binary's path.
func build(t *testing.T, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	p := filepath.Join(binDir, name)
	if out, err := exec.Command("go", "build", "-o", p, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	built[pkg] = p
	return p
}

func sluiceBinary(t *testing.T) string {
	return build(t, "github.com/sluicehq/sluice/cmd/sluice", "sluice")
}

var (
	portMu sync.Mutex
	ports  = map[int]bool{}
)

// freePort picks a free loopback port below the kernel's ephemeral range (32768 and up), where no outgoing
// connection of a test running beside this one can take it between this check and the bind.
func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		p := 20000 + mathrand.IntN(12000)
		if ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		ports[p] = true
		return p
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }

// receiver is a webhook endpoint that records each event id it accepted (by webhook-id) and when.
type receiver struct {
	addr string
	// failFirst answers 503 to the first attempt of each event.
	failFirst bool
	// delay holds each request this long, so attempts are in flight when a fault strikes.
	delay time.Duration

	mu    sync.Mutex
	got   map[string]int
	tries map[string]int
	times []time.Time // of each accepted delivery
	srv   *http.Server
}

func newReceiver(t *testing.T) *receiver {
	return &receiver{addr: freeAddr(t), got: map[string]int{}, tries: map[string]int{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if rc.delay > 0 {
		time.Sleep(rc.delay)
	}
	id := r.Header.Get("webhook-id")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.tries[id]++
	if rc.failFirst && rc.tries[id] == 1 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	rc.got[id]++
	rc.times = append(rc.times, time.Now())
	w.WriteHeader(http.StatusNoContent)
}

// up starts serving (again) on the receiver's address.
func (rc *receiver) up(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 100 { // the port of a just-closed server may take a moment to be free
		if ln, err = net.Listen("tcp", rc.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("receiver: %v", err)
	}
	srv := &http.Server{Handler: rc}
	rc.mu.Lock()
	rc.srv = srv
	rc.mu.Unlock()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// down stops serving: connections are refused until up.
func (rc *receiver) down() {
	rc.mu.Lock()
	srv := rc.srv
	rc.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (rc *receiver) has(id string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got[id] > 0
}

func (rc *receiver) counts() (distinct, total int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, n := range rc.got {
		distinct++
		total += n
	}
	return distinct, total
}

// firstAfter returns the first accepted delivery at or after t (zero if none yet).
func (rc *receiver) firstAfter(t time.Time) time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, at := range rc.times {
		if !at.Before(t) {
			return at
		}
	}
	return time.Time{}
}

// span is the time between the first and the last accepted delivery.
func (rc *receiver) span() time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.times) < 2 {
		return 0
	}
	return rc.times[len(rc.times)-1].Sub(rc.times[0])
}

// node is one sluice serve process on a config file.
type node struct {
	t    *testing.T
	dir  string
	cfg  string
	addr string
	cmd  *exec.Cmd
	log  *os.File
	exit chan error
}

// newNode writes the config (its %[1]s is the listen address, %[2]s the store directory) and returns a stopped
// node.
func newNode(t *testing.T, cfg string) *node {
	t.Helper()
	n := &node{t: t, dir: t.TempDir(), addr: freeAddr(t)}
	return n.withConfig(cfg, filepath.Join(n.dir, "data"))
}

func (n *node) withConfig(cfg, storeDir string) *node {
	n.cfg = filepath.Join(n.dir, "sluice.yaml")
	if err := os.WriteFile(n.cfg, []byte(fmt.Sprintf(cfg, n.addr, storeDir)), 0o600); err != nil {
		n.t.Fatal(err)
	}
	var err error
	if n.log, err = os.Create(filepath.Join(n.dir, "sluice.log")); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() {
		n.kill()
		if n.t.Failed() {
			b, _ := os.ReadFile(n.log.Name())
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			n.t.Logf("sluice log (tail):\n%s", b)
		}
	})
	return n
}

// start runs sluice and waits until /readyz answers 200.
func (n *node) start() {
	n.t.Helper()
	n.launch()
	n.waitReady(60 * time.Second)
}

func (n *node) launch() {
	n.t.Helper()
	n.cmd = exec.Command(sluiceBinary(n.t), "serve", "--config", n.cfg)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exit = make(chan error, 1)
	go func(cmd *exec.Cmd, exit chan error) { exit <- cmd.Wait() }(n.cmd, n.exit)
}

func (n *node) waitReady(limit time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(limit)
	for !n.ready() {
		select {
		case err := <-n.exit:
			n.cmd = nil
			n.t.Fatalf("sluice exited before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatal("sluice did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var probeClient = &http.Client{Timeout: 3 * time.Second}

func (n *node) ready() bool {
	resp, err := probeClient.Get("http://" + n.addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill ends sluice with SIGKILL, as a crash or the OOM killer would.
func (n *node) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exit
	n.cmd = nil
}

// term sends SIGTERM and waits for the exit.
func (n *node) term() error {
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	err := <-n.exit
	n.cmd = nil
	return err
}

// webhookDest is a destination for rc on every topic; extra lines are indented under it.
func webhookDest(name string, rc *receiver, extra ...string) string {
	s := fmt.Sprintf("  - name: %s\n    type: webhook\n    topics: [\"*\"]\n", name)
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s + fmt.Sprintf("    config: {url: \"http://%s/hooks\", signing: none}\n", rc.addr)
}

// baseConfig is a config with the listen address and store path left as %[1]s and %[2]s, a retry schedule
// long enough to outlast every fault here, and the destinations given.
func baseConfig(delivery, extra, dests string) string {
	return `server: {listen: "%[1]s", shutdown_timeout: 20s}
auth:
  keys: [{name: admin, key: faults-key, role: admin}]
store: {path: "%[2]s"}
delivery:
  timeout: 5s
  retry: {exponential: {base: 200ms, max: 1s, attempts: 600}, jitter: 0.1}
  network: {allow_cidrs: [127.0.0.0/8]}
` + delivery + `
telemetry:
  log: {level: warn}
` + extra + `
destinations:
` + dests
}

// load publishes events over HTTP from workers publishers; each event is posted again with the same id until
// it is acknowledged (202). The ids are prefix-000000….
type load struct {
	addr, prefix string
	next         atomic.Int64
	acked        sync.Map // id → time of the 202
	nAcked       atomic.Int64
	// onAnswer, when set, hears every answer (status 0 = no answer).
	onAnswer func(sent time.Time, status int, h http.Header)
	// pace, when set, limits how fast events are published (an offered load rather than as fast as possible).
	pace *rate.Limiter
}

func newLoad(addr, prefix string) *load { return &load{addr: addr, prefix: prefix} }

var publishClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// run publishes until ctx ends or limit events (0 = no limit) were acknowledged.
func (l *load) run(ctx context.Context, workers, limit int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if l.pace != nil && l.pace.Wait(ctx) != nil {
					return
				}
				i := l.next.Add(1) - 1
				if limit > 0 && i >= int64(limit) {
					return
				}
				l.publish(ctx, fmt.Sprintf("%s-%06d", l.prefix, i))
			}
		}()
	}
	wg.Wait()
}

func (l *load) publish(ctx context.Context, id string) { l.publishTopic(ctx, id, "fault.test") }

func (l *load) publishTopic(ctx context.Context, id, topic string) {
	body, _ := json.Marshal(map[string]any{"id": id, "topic": topic, "data": map[string]any{"n": id}})
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+l.addr+"/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer faults-key")
		req.Header.Set("Content-Type", "application/json")
		sent := time.Now()
		resp, err := publishClient.Do(req)
		status := 0
		var h http.Header
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status, h = resp.StatusCode, resp.Header
		}
		if l.onAnswer != nil {
			l.onAnswer(sent, status, h)
		}
		if status == http.StatusAccepted {
			l.acked.Store(id, time.Now())
			l.nAcked.Add(1)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *load) ids() []string {
	var ids []string
	l.acked.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
	sort.Strings(ids)
	return ids
}

// awaitAll waits up to limit until has reports every id, and returns those still missing.
func awaitAll(ids []string, has func(string) bool, limit time.Duration) (missing []string) {
	deadline := time.Now().Add(limit)
	for _, id := range ids {
		for !has(id) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !has(id) {
			missing = append(missing, id)
		}
	}
	return missing
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fileReceiver counts the event ids a plugin appended to a file, one a line.
func fileCounts(path string) map[string]int {
	got := map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return got
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			got[line]++
		}
	}
	return got
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// row is one line of the report table.
type row struct {
	Case                   string
	Acked, Delivered, Lost int
	Duplicates             int
	Recovery               string
}

var (
	reportMu sync.Mutex
	report   []row
)

func record(t *testing.T, r row) {
	t.Helper()
	t.Logf("%s: acknowledged %d, delivered %d, lost %d, duplicates %d; %s", r.Case, r.Acked, r.Delivered, r.Lost, r.Duplicates, r.Recovery)
	reportMu.Lock()
	report = append(report, r)
	reportMu.Unlock()
}

func printReport(w io.Writer) {
	reportMu.Lock()
	defer reportMu.Unlock()
	if len(report) == 0 {
		return
	}
	form := "short"
	if full() {
		form = "full"
	}
	fmt.Fprintf(w, "\nfault suite (%s form)\n\n", form)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "case\tacknowledged\tdelivered\tlost\tduplicates\trecovery")
	for _, r := range report {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", r.Case, r.Acked, r.Delivered, r.Lost, r.Duplicates, r.Recovery)
	}
	tw.Flush()
}

func ms(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

var errSkip = errors.New("skip")
