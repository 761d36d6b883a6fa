// Command bench is Sluice's load harness: it builds the binary, runs it on the embedded store with webhook
// receivers and publishers on loopback, and reports throughput, latency, memory and CPU beside the machine's
// own HTTP ceiling measured in the same run.
//
//	go run ./bench [-scenario all|http-ceiling|single|batch-intake|fanout10] [-duration 20s] [-json]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

type result struct {
	Scenario      string  `json:"scenario"`
	Accepted      int64   `json:"accepted"`
	AcceptedPerS  float64 `json:"accepted_per_s"`
	DeliveredPerS float64 `json:"delivered_per_s"`
	Deliveries    int64   `json:"deliveries"`
	AcceptP99MS   float64 `json:"accept_p99_ms"`
	E2EP50MS      float64 `json:"publish_to_receive_p50_ms"`
	E2EP99MS      float64 `json:"publish_to_receive_p99_ms"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	CPUMicrosPerE float64 `json:"cpu_us_per_event"`
	DrainPerS     float64 `json:"drain_per_s,omitempty"`
	RatioCeiling  float64 `json:"ratio_to_http_ceiling,omitempty"`
}

func main() {
	scenario := flag.String("scenario", "all", "all, http-ceiling, single, batch-intake, fanout10 or backlog")
	duration := flag.Duration("duration", 20*time.Second, "publishing time per scenario")
	publishers := flag.Int("publishers", 64, "concurrent publishers")
	asJSON := flag.Bool("json", false, "print JSON instead of a table")
	backlogN := flag.Int("backlog", 1_000_000, "events held for a down receiver in the backlog scenario")
	flag.Parse()

	bin, err := build()
	if err != nil {
		fail(err)
	}
	var results []result
	var ceiling float64
	run := func(name string, f func() (result, error)) {
		if *scenario != "all" && *scenario != name {
			return
		}
		fmt.Fprintf(os.Stderr, "running %s for %v...\n", name, *duration)
		r, err := f()
		if err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
		}
		r.Scenario = name
		if name == "http-ceiling" {
			ceiling = r.DeliveredPerS
		} else if ceiling > 0 && r.DeliveredPerS > 0 {
			r.RatioCeiling = r.DeliveredPerS / ceiling
		}
		results = append(results, r)
	}
	run("http-ceiling", func() (result, error) { return httpCeiling(*duration, *publishers) })
	run("single", func() (result, error) { return throughSluice(bin, *duration, *publishers, 1, 1) })
	run("batch-intake", func() (result, error) { return throughSluice(bin, *duration, 8, 0, 100) })
	run("fanout10", func() (result, error) { return throughSluice(bin, *duration, *publishers, 10, 1) })
	run("backlog", func() (result, error) { return backlog(bin, *backlogN) })

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"machine": machine(), "results": results})
		return
	}
	fmt.Println(machine())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\taccepted/s\tdelivered/s\tvs ceiling\taccept p99 ms\tp50 ms\tp99 ms\tpeak RSS MB\tCPU µs/event\tdrain/s\t")
	for _, r := range results {
		ratio := ""
		if r.RatioCeiling > 0 {
			ratio = fmt.Sprintf("%.0f%%", 100*r.RatioCeiling)
		}
		drain := ""
		if r.DrainPerS > 0 {
			drain = fmt.Sprintf("%.0f", r.DrainPerS)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%.1f\t%.1f\t%.1f\t%.0f\t%.0f\t%s\t\n", r.Scenario, r.AcceptedPerS, r.DeliveredPerS,
			ratio, r.AcceptP99MS, r.E2EP50MS, r.E2EP99MS, r.PeakRSSMB, r.CPUMicrosPerE, drain)
	}
	tw.Flush()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s; Sluice, publishers and receivers share the machine", runtime.NumCPU(), model, runtime.Version())
}

func build() (string, error) {
	dir, err := os.MkdirTemp("", "sluice-bench")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return bin, cmd.Run()
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// receiver counts deliveries and records publish→receive latency from the sent_ns field of each event.
type receiver struct {
	count atomic.Int64
	mu    sync.Mutex
	lat   []time.Duration
	last  atomic.Int64
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := time.Now()
	if i := bytes.Index(body, []byte(`"sent_ns":`)); i >= 0 {
		rest := body[i+len(`"sent_ns":`):]
		j := bytes.IndexAny(rest, ",}")
		if ns, err := strconv.ParseInt(string(bytes.TrimSpace(rest[:j])), 10, 64); err == nil {
			rc.mu.Lock()
			rc.lat = append(rc.lat, now.Sub(time.Unix(0, ns)))
			rc.mu.Unlock()
		}
	}
	rc.count.Add(1)
	rc.last.Store(now.UnixNano())
	w.WriteHeader(http.StatusNoContent)
}

func serve(h http.Handler) (string, func()) {
	addr := freePort()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fail(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	return addr, func() { srv.Close() }
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
}

func client(n int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
}

func httpCeiling(d time.Duration, publishers int) (result, error) {
	rc := &receiver{}
	addr, stop := serve(rc)
	defer stop()
	c := client(publishers)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				body := fmt.Sprintf(`{"topic":"bench","data":{"sent_ns":%d}}`, time.Now().UnixNano())
				resp, err := c.Post("http://"+addr+"/", "application/json", strings.NewReader(body))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	n := rc.count.Load()
	return result{Accepted: n, AcceptedPerS: float64(n) / el, DeliveredPerS: float64(n) / el, Deliveries: n,
		E2EP50MS: percentile(rc.lat, 0.5), E2EP99MS: percentile(rc.lat, 0.99)}, nil
}

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// throughSluice runs Sluice with receivers destinations and publishes for d; batch > 1 uses the batch route.
func throughSluice(bin string, d time.Duration, publishers, receivers, batch int) (result, error) {
	dir, err := os.MkdirTemp("", "sluice-bench-run")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	rcs := make([]*receiver, receivers)
	var dests strings.Builder
	for i := range rcs {
		rcs[i] = &receiver{}
		addr, stop := serve(rcs[i])
		defer stop()
		fmt.Fprintf(&dests, "  - {name: r%d, type: webhook, topics: [\"*\"], config: {url: \"http://%s/hook\", secrets: [\"%s\"]}}\n", i, addr, secret)
	}
	if receivers == 0 {
		dests.WriteString("  []\n")
	}
	listen := freePort()
	cfg := fmt.Sprintf(`server: {listen: %s}
auth: {keys: [{name: bench, key: bench-key, role: admin}]}
store: {path: %s}
delivery: {concurrency: 32, network: {allow_cidrs: [127.0.0.0/8]}}
telemetry: {log: {level: error}}
destinations:
%s`, listen, filepath.Join(dir, "data"), dests.String())
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return result{}, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stderr = os.Stderr
	cmd.Env = os.Environ() // SLUICE_PPROF_ADDR=127.0.0.1:6060 profiles the server under load
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i > 300 {
			return result{}, fmt.Errorf("sluice did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpu0 := cpuTime(cmd.Process.Pid)
	c := client(publishers)
	var accepted atomic.Int64
	var mu sync.Mutex
	var acceptLat []time.Duration
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				var body, path string
				if batch > 1 {
					parts := make([]string, batch)
					for i := range parts {
						parts[i] = fmt.Sprintf(`{"topic":"bench.event","data":{"sent_ns":%d,"n":%d}}`, t0.UnixNano(), i)
					}
					body, path = `{"events":[`+strings.Join(parts, ",")+`]}`, "/v1/events/batch"
				} else {
					body, path = fmt.Sprintf(`{"topic":"bench.event","data":{"sent_ns":%d,"case":{"id":"c-1","status":"approved"}}}`, t0.UnixNano()), "/v1/events"
				}
				req, _ := http.NewRequest("POST", "http://"+listen+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer bench-key")
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					accepted.Add(int64(batch))
					local = append(local, time.Since(t0))
				}
			}
			mu.Lock()
			acceptLat = append(acceptLat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	pubEnd := time.Since(start).Seconds()
	want := accepted.Load() * int64(receivers)
	// Wait for deliveries to drain (bounded).
	drainBy := time.Now().Add(2 * d)
	total := func() (n int64) {
		for _, rc := range rcs {
			n += rc.count.Load()
		}
		return n
	}
	for total() < want && time.Now().Before(drainBy) {
		time.Sleep(50 * time.Millisecond)
	}
	var last int64
	var lat []time.Duration
	for _, rc := range rcs {
		last = max(last, rc.last.Load())
		lat = append(lat, rc.lat...)
	}
	delivered := total()
	r := result{
		Accepted: accepted.Load(), AcceptedPerS: float64(accepted.Load()) / pubEnd, Deliveries: delivered,
		AcceptP99MS: percentile(acceptLat, 0.99), E2EP50MS: percentile(lat, 0.5), E2EP99MS: percentile(lat, 0.99),
		PeakRSSMB: peakRSS(cmd.Process.Pid),
	}
	if receivers > 0 && last > 0 {
		r.DeliveredPerS = float64(delivered) / time.Unix(0, last).Sub(start).Seconds()
	}
	if r.Accepted > 0 {
		r.CPUMicrosPerE = (cpuTime(cmd.Process.Pid) - cpu0).Seconds() * 1e6 / float64(r.Accepted)
	}
	if delivered < want {
		fmt.Fprintf(os.Stderr, "warning: %d of %d deliveries arrived before the drain deadline\n", delivered, want)
	}
	return r, nil
}

func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// gate is a receiver that answers 503 until opened.
type gate struct {
	receiver
	open atomic.Bool
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.open.Load() {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	g.receiver.ServeHTTP(w, r)
}

// backlog holds n events for a receiver that is down, then brings it back: peak RSS and drain rate.
func backlog(bin string, n int) (result, error) {
	dir, err := os.MkdirTemp("", "sluice-bench-backlog")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	g := &gate{}
	addr, stop := serve(g)
	defer stop()
	listen := freePort()
	cfg := fmt.Sprintf(`server: {listen: %s}
auth: {keys: [{name: bench, key: bench-key, role: admin}]}
store: {path: %s}
delivery:
  concurrency: 32
  retry: {schedule: [1s, 2s, 3s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s, 5s]}
  network: {allow_cidrs: [127.0.0.0/8]}
telemetry: {log: {level: error}}
destinations:
  - {name: down, type: webhook, topics: ["*"], config: {url: "http://%s/hook", secrets: ["%s"]}}
`, listen, filepath.Join(dir, "data"), addr, secret)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return result{}, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stderr = os.Stderr
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := waitReady(listen); err != nil {
		return result{}, err
	}
	c := client(8)
	var next, accepted atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(100) <= int64(n) {
				parts := make([]string, 100)
				for i := range parts {
					parts[i] = fmt.Sprintf(`{"topic":"bench.event","data":{"sent_ns":%d,"case":{"id":"c-%d","status":"approved"}}}`, time.Now().UnixNano(), i)
				}
				req, _ := http.NewRequest("POST", "http://"+listen+"/v1/events/batch", strings.NewReader(`{"events":[`+strings.Join(parts, ",")+`]}`))
				req.Header.Set("Authorization", "Bearer bench-key")
				resp, err := c.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					accepted.Add(100)
				}
			}
		}()
	}
	wg.Wait()
	pub := time.Since(start).Seconds()
	fmt.Fprintf(os.Stderr, "backlog: %d events accepted in %.0fs; RSS now %.0f MB; releasing the receiver\n", accepted.Load(), pub, peakRSS(cmd.Process.Pid))
	released := time.Now()
	g.open.Store(true)
	for g.count.Load() < accepted.Load() && time.Since(released) < 20*time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	drained := time.Since(released).Seconds()
	return result{Accepted: accepted.Load(), AcceptedPerS: float64(accepted.Load()) / pub, Deliveries: g.count.Load(),
		PeakRSSMB: peakRSS(cmd.Process.Pid), DrainPerS: float64(g.count.Load()) / drained}, nil
}

func waitReady(listen string) error {
	for i := 0; i < 300; i++ {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("sluice did not start")
}
