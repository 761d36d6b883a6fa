// Command bench is Sluice's load harness: it builds the binary, runs it on the embedded store with webhook
// receivers and publishers on loopback, and reports throughput, latency, memory and CPU beside the machine's
// own HTTP ceiling measured in the same run.
//
//	go run ./bench [-scenario all|http-ceiling|single|single-half|batch-intake|batch-webhook|fanout10|backlog|
//	                          outage|single-pg|fanout10-pg|nodes3-pg|outage-pg] (or a comma-separated list)
//	               [-duration 20s] [-publishers 64] [-rate 0] [-bin PATH] [-json] [-pg-dsn postgres://…]
//	               [-profile DIR]
//
// The -pg scenarios run Sluice on PostgreSQL (-pg-dsn, default $SLUICE_TEST_PG_DSN), each in a fresh schema
// dropped afterwards; nodes3-pg runs three nodes on it with the publishers spread over them. outage and
// outage-pg are single with a second destination whose receiver answers 503 throughout: what one destination's
// growing backlog costs the deliveries of another. Without a DSN
// they are skipped. Each prints PostgreSQL's commits, WAL bytes and server CPU per accepted event; -profile
// adds the nodes' CPU profiles and a sampling of the database backends' wait events and statements.
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
	"syscall"
	"text/tabwriter"
	"time"
)

type result struct {
	Scenario      string  `json:"scenario"`
	Accepted      int64   `json:"accepted"`
	AcceptedPerS  float64 `json:"accepted_per_s"`
	DeliveredPerS float64 `json:"delivered_per_s"`
	Deliveries    int64   `json:"deliveries"`
	AcceptP50MS   float64 `json:"accept_p50_ms"`
	AcceptP99MS   float64 `json:"accept_p99_ms"`
	E2EP50MS      float64 `json:"publish_to_receive_p50_ms"`
	E2EP99MS      float64 `json:"publish_to_receive_p99_ms"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	CPUMicrosPerE float64 `json:"cpu_us_per_event"`
	// HarnessCPUPerE is this process's CPU (the publishers and receivers, all on loopback) per accepted event,
	// over the same span as CPUMicrosPerE; in http-ceiling, per exchange (both of its ends). IdlePct is the
	// machine's idle share (iowait included) while publishing. Together they say what a run was bound by: with
	// no idle left, Sluice's CPU per event plus the harness's (plus PostgreSQL's) sets the rate. StealPct is the
	// share the hypervisor gave other guests (a cloud VM's neighbours): a run with much of it measured a slower
	// machine than its neighbours in the table, and compares only with runs of as much.
	HarnessCPUPerE float64 `json:"harness_cpu_us_per_event"`
	IdlePct        float64 `json:"idle_pct"`
	StealPct       float64 `json:"steal_pct"`
	DrainPerS      float64 `json:"drain_per_s,omitempty"`
	RatioCeiling   float64 `json:"ratio_to_http_ceiling,omitempty"`
	// RatePerS is the publishing cap (events/s) of a rate-capped run; MaxRatePerS is the uncapped delivered/s it
	// was derived from (single-half: half of it), from the same run's single or from a short probe.
	RatePerS    float64 `json:"rate_per_s,omitempty"`
	MaxRatePerS float64 `json:"max_rate_per_s,omitempty"`
	// Slowest and fastest delivered/s (accepted/s without receivers) over the 10 s windows of the publishing
	// period, and how many windows there were: how steady the rate was. A last window shorter than 10 s counts
	// if it is at least 5 s; a run shorter than that is one window.
	WindowMinPerS float64 `json:"window_min_per_s,omitempty"`
	WindowMaxPerS float64 `json:"window_max_per_s,omitempty"`
	Windows       int     `json:"windows,omitempty"`
	// StoreCommitsPerE is how many transactions Sluice's store committed per accepted event while publishing
	// (sluice_store_commits_total, all nodes together), and StoreOpsPerCommit how many operations (appends,
	// completions) each carried: group commit's sharing, whose fixed cost per commit (an fsync embedded) is much of
	// the CPU per event below saturation.
	StoreCommitsPerE  float64 `json:"store_commits_per_event,omitempty"`
	StoreOpsPerCommit float64 `json:"store_ops_per_commit,omitempty"`
	// StoreBusy is how busy each node's store writers were while publishing, in seconds per second
	// (sluice_store_commit_seconds_total, mean of the nodes): 1 is the embedded store's one writer never idle.
	StoreBusy float64 `json:"store_busy_s_per_s,omitempty"`
	// MissedSends counts scheduled sends of a rate-capped run that never went out (Sluice fell too far behind).
	MissedSends int64 `json:"missed_sends,omitempty"`
}

// window is the length of the sustained-rate windows.
const window = 10 * time.Second

// opts are the publishing parameters of one throughSluice run.
type opts struct {
	d          time.Duration
	publishers int
	receivers  int
	batch      int     // events per request; > 1 uses the batch route
	hookBatch  int     // events per webhook request; > 1 gives the destinations a batch block
	rate       float64 // events/s across all publishers; 0 = as fast as possible
	pgDSN      string  // run on PostgreSQL (a fresh schema) instead of the embedded store
	nodes      int     // Sluice processes sharing the store (PostgreSQL only); 0 = 1
	// down adds destinations subscribed to every event whose receivers answer 503 throughout: their breakers
	// open and their deliveries pile up as a backlog beside the live ones, which alone are counted.
	down int
	// name and profile: when profile is set, a CPU profile of each node over the middle half of the publishing
	// period is written there as <name>-node<k>.pprof, and PostgreSQL's backends' wait events are sampled.
	name, profile string
}

func main() {
	scenario := flag.String("scenario", "all", "all, or a comma-separated list of http-ceiling, single, single-half, batch-intake, batch-webhook, fanout10, backlog, outage, single-pg, fanout10-pg, nodes3-pg and outage-pg")
	pgDSN := flag.String("pg-dsn", os.Getenv("SLUICE_TEST_PG_DSN"), "PostgreSQL for the -pg scenarios (each runs in a fresh schema)")
	duration := flag.Duration("duration", 20*time.Second, "publishing time per scenario")
	publishers := flag.Int("publishers", 64, "concurrent publishers")
	rateCap := flag.Float64("rate", 0, "publishing rate in events/s across all publishers, open loop (0 = as fast as possible); single-half sets its own")
	asJSON := flag.Bool("json", false, "print JSON instead of a table")
	backlogN := flag.Int("backlog", 1_000_000, "events held for a down receiver in the backlog scenario")
	binFlag := flag.String("bin", "", "run this Sluice binary instead of building ./cmd/sluice")
	dataBytes := flag.Int("data-bytes", 0, "grow each event's data to about this many bytes with an array of small objects, in every scenario and in http-ceiling's requests alike (0: data of about 60 bytes)")
	flag.DurationVar(&stallAbove, "stalls", 0, "print, for each 100 ms of (scheduled) send time in which an accept took longer than this, its offset, clock time and slowest accept: where the accept tail comes from (0: off)")
	profile := flag.String("profile", "", "write CPU profiles of the Sluice nodes of single, fanout10 and the -pg scenarios here (<scenario>-node<k>.pprof), and sample PostgreSQL's wait events in the -pg ones")
	flag.Parse()
	pad = padding(*dataBytes)
	if *profile != "" {
		// Made here rather than found missing after a whole run.
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			fail(fmt.Errorf("-profile: %w", err))
		}
	}

	bin := *binFlag
	if bin == "" {
		var err error
		if bin, err = build(); err != nil {
			fail(err)
		}
		defer os.RemoveAll(filepath.Dir(bin))
	}
	var results []result
	var ceiling float64
	run := func(name string, f func() (result, error)) {
		if *scenario != "all" && !slices.Contains(strings.Split(*scenario, ","), name) {
			return
		}
		fmt.Fprintf(os.Stderr, "running %s for %v...\n", name, *duration)
		r, err := f()
		if err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
		}
		r.Scenario = name
		switch {
		case name == "http-ceiling":
			if r.RatePerS == 0 { // a capped ceiling is no ceiling
				ceiling = r.DeliveredPerS
			}
		case ceiling > 0 && r.DeliveredPerS > 0 && r.RatePerS == 0: // a capped rate is not a share of capacity
			r.RatioCeiling = r.DeliveredPerS / ceiling
		}
		results = append(results, r)
	}
	single := opts{d: *duration, publishers: *publishers, receivers: 1, batch: 1, rate: *rateCap, name: "single", profile: *profile}
	run("http-ceiling", func() (result, error) { return httpCeiling(*duration, *publishers, *rateCap) })
	run("single", func() (result, error) { return throughSluice(bin, single) })
	run("single-half", func() (result, error) {
		// Half of the maximum rate: the uncapped single of this run if there is one, else a short probe.
		var maxRate float64
		for _, r := range results {
			if r.Scenario == "single" && r.RatePerS == 0 {
				maxRate = r.DeliveredPerS
			}
		}
		if maxRate == 0 {
			probe := single
			probe.d, probe.rate, probe.profile = min(*duration, 10*time.Second), 0, ""
			fmt.Fprintf(os.Stderr, "single-half: probing the maximum rate for %v...\n", probe.d)
			p, err := throughSluice(bin, probe)
			if err != nil {
				return result{}, fmt.Errorf("probe: %w", err)
			}
			maxRate = p.DeliveredPerS
		}
		if maxRate <= 0 {
			return result{}, fmt.Errorf("no maximum rate to halve")
		}
		half := single
		half.rate, half.name = maxRate/2, "single-half"
		fmt.Fprintf(os.Stderr, "single-half: maximum %.0f delivered/s, publishing at %.0f/s for %v...\n", maxRate, half.rate, half.d)
		r, err := throughSluice(bin, half)
		r.MaxRatePerS = maxRate
		return r, err
	})
	run("batch-intake", func() (result, error) {
		return throughSluice(bin, opts{d: *duration, publishers: 8, batch: 100, rate: *rateCap, name: "batch-intake"})
	})
	run("batch-webhook", func() (result, error) {
		// Batched end to end: events published 100 to a request and delivered 100 to a webhook request.
		return throughSluice(bin, opts{d: *duration, publishers: 8, receivers: 1, batch: 100, hookBatch: 100, rate: *rateCap, name: "batch-webhook"})
	})
	run("fanout10", func() (result, error) {
		return throughSluice(bin, opts{d: *duration, publishers: *publishers, receivers: 10, batch: 1, rate: *rateCap, name: "fanout10", profile: *profile})
	})
	run("backlog", func() (result, error) { return backlog(bin, *backlogN) })
	run("outage", func() (result, error) {
		return throughSluice(bin, opts{d: *duration, publishers: *publishers, receivers: 1, down: 1, batch: 1, rate: *rateCap, name: "outage", profile: *profile})
	})
	for _, pg := range []struct {
		name string
		o    opts
	}{
		{"single-pg", opts{d: *duration, publishers: *publishers, receivers: 1, batch: 1, rate: *rateCap, pgDSN: *pgDSN, nodes: 1}},
		{"fanout10-pg", opts{d: *duration, publishers: *publishers, receivers: 10, batch: 1, rate: *rateCap, pgDSN: *pgDSN, nodes: 1}},
		{"nodes3-pg", opts{d: *duration, publishers: *publishers, receivers: 1, batch: 1, rate: *rateCap, pgDSN: *pgDSN, nodes: 3}},
		{"outage-pg", opts{d: *duration, publishers: *publishers, receivers: 1, down: 1, batch: 1, rate: *rateCap, pgDSN: *pgDSN, nodes: 1}},
	} {
		if *pgDSN == "" {
			if *scenario == pg.name || *scenario == "all" {
				fmt.Fprintf(os.Stderr, "skipping %s: no -pg-dsn (or SLUICE_TEST_PG_DSN)\n", pg.name)
			}
			continue
		}
		pg.o.name, pg.o.profile = pg.name, *profile
		run(pg.name, func() (result, error) { return throughSluice(bin, pg.o) })
	}

	harnessRSS := peakRSS(os.Getpid())
	fmt.Fprintf(os.Stderr, "harness peak RSS: %.0f MB\n", harnessRSS)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"machine": machine(), "harness_peak_rss_mb": harnessRSS, "results": results})
		return
	}
	fmt.Println(machine())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trate cap/s\taccepted/s\tdelivered/s\tvs ceiling\t10s windows min–max /s\taccept p50 ms\taccept p99 ms\tp50 ms\tp99 ms\tpeak RSS MB\tCPU µs/event\tharness µs/event\tidle %\tsteal %\tdrain/s\t")
	for _, r := range results {
		rate := ""
		if r.RatePerS > 0 {
			rate = fmt.Sprintf("%.0f", r.RatePerS)
		}
		ratio := ""
		if r.RatioCeiling > 0 {
			ratio = fmt.Sprintf("%.0f%%", 100*r.RatioCeiling)
		}
		windows := ""
		if r.Windows > 0 {
			windows = fmt.Sprintf("%.0f–%.0f ×%d", r.WindowMinPerS, r.WindowMaxPerS, r.Windows)
			if r.RatioCeiling > 0 {
				windows = fmt.Sprintf("%.0f–%.0f (%.0f–%.0f%%) ×%d", r.WindowMinPerS, r.WindowMaxPerS,
					100*r.WindowMinPerS/ceiling, 100*r.WindowMaxPerS/ceiling, r.Windows)
			}
		}
		drain := ""
		if r.DrainPerS > 0 {
			drain = fmt.Sprintf("%.0f", r.DrainPerS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t\n", r.Scenario, rate,
			r.AcceptedPerS, r.DeliveredPerS, ratio, windows, r.AcceptP50MS, r.AcceptP99MS, r.E2EP50MS, r.E2EP99MS, r.PeakRSSMB, r.CPUMicrosPerE,
			r.HarnessCPUPerE, r.IdlePct, r.StealPct, drain)
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

// receiver counts deliveries and records publish→receive latency from the sent_ns field of each event (the
// scheduled send time in a rate-capped run) into a fixed-size histogram.
type receiver struct {
	count atomic.Int64
	lat   hist
	last  atomic.Int64
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := time.Now()
	// A batched webhook carries several events: each one's sent_ns counts.
	n := int64(0)
	for rest := body; ; {
		i := bytes.Index(rest, []byte(`"sent_ns":`))
		if i < 0 {
			break
		}
		rest = rest[i+len(`"sent_ns":`):]
		j := bytes.IndexAny(rest, ",}")
		if j < 0 {
			j = len(rest)
		}
		if ns, err := strconv.ParseInt(string(bytes.TrimSpace(rest[:j])), 10, 64); err == nil {
			rc.lat.record(now.Sub(time.Unix(0, ns)))
		}
		n++
	}
	rc.count.Add(max(n, 1))
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

func client(n int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
}

func httpCeiling(d time.Duration, publishers int, rate float64) (result, error) {
	rc := &receiver{}
	addr, stop := serve(rc)
	defer stop()
	c := client(publishers)
	self0, idle0 := selfCPU(), readIdle()
	start := time.Now()
	pace := newPacer(rate, 1, start, d, grace(d))
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				t0, ok := pace.next()
				if !ok {
					return
				}
				body := fmt.Sprintf(`{"topic":"bench","data":{"sent_ns":%d%s}}`, t0.UnixNano(), pad)
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
	idle, steal := idle0.since()
	n := rc.count.Load()
	return result{Accepted: n, AcceptedPerS: float64(n) / el, DeliveredPerS: float64(n) / el, Deliveries: n,
		E2EP50MS: rc.lat.percentile(0.5), E2EP99MS: rc.lat.percentile(0.99), RatePerS: rate, MissedSends: pace.missed(),
		HarnessCPUPerE: perEvent(selfCPU()-self0, n), IdlePct: idle, StealPct: steal}, nil
}

// grace is how long a rate-capped run may overrun its duration to send the slots it fell behind on.
func grace(d time.Duration) time.Duration { return max(d/2, 5*time.Second) }

// windowSampler reads count every window from start and returns, once stopped, the per-second rate of each
// window; publishing ending between ticks closes a last, shorter window if it is at least half a window long.
func windowSampler(count func() int64, start time.Time) (stop func() []float64) {
	done := make(chan struct{})
	out := make(chan []float64, 1)
	go func() {
		var rates []float64
		prevN, prevT := count(), start
		sample := func() {
			n, t := count(), time.Now()
			rates = append(rates, float64(n-prevN)/t.Sub(prevT).Seconds())
			prevN, prevT = n, t
		}
		for k := 1; ; k++ {
			tick := time.NewTimer(time.Until(start.Add(time.Duration(k) * window)))
			select {
			case <-tick.C:
				sample()
			case <-done:
				tick.Stop()
				if time.Since(prevT) >= window/2 {
					sample()
				}
				out <- rates
				return
			}
		}
	}()
	return func() []float64 { close(done); return <-out }
}

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// throughSluice runs Sluice with o.receivers destinations and publishes for o.d, at o.rate events/s if set.
func throughSluice(bin string, o opts) (result, error) {
	d, publishers, receivers, batch := o.d, o.publishers, o.receivers, o.batch
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
		extra := ""
		if o.hookBatch > 1 {
			extra = fmt.Sprintf(", batch: {max_events: %d, max_bytes: 1MB, max_wait: 200ms}", o.hookBatch)
		}
		fmt.Fprintf(&dests, "  - {name: r%d, type: webhook, topics: [\"*\"], config: {url: \"http://%s/hook\", secrets: [\"%s\"]%s}}\n", i, addr, secret, extra)
	}
	for i := range o.down {
		addr, stop := serve(&gate{})
		defer stop()
		// A breaker that judges 2 s instead of 30: it opens within the first seconds, so the run measures the
		// outage's lasting state (the backlog held in the store, a probe now and then), not its first window.
		fmt.Fprintf(&dests, "  - {name: down%d, type: webhook, topics: [\"*\"], breaker: {window: 2s}, config: {url: \"http://%s/hook\", secrets: [\"%s\"]}}\n", i, addr, secret)
	}
	if receivers+o.down == 0 {
		dests.WriteString("  []\n")
	}
	storeBlock := fmt.Sprintf("{path: %s}", filepath.Join(dir, "data"))
	nodes := max(o.nodes, 1)
	if o.pgDSN != "" {
		dsn, drop, err := pgSchema(o.pgDSN)
		if err != nil {
			return result{}, err
		}
		defer drop()
		storeBlock = fmt.Sprintf("{driver: postgres, dsn: %q, max_conns: 20}", dsn)
	}
	var listens, pprofs []string
	var cmds []*exec.Cmd
	defer func() {
		for _, cmd := range cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	for k := range nodes {
		listen := freePort()
		cfg := fmt.Sprintf(`server: {listen: %s}
auth: {keys: [{name: bench, key: bench-key, role: admin}]}
store: %s
delivery: {concurrency: 32, network: {allow_cidrs: [127.0.0.0/8]}}
telemetry: {log: {level: error}}
destinations:
%s`, listen, storeBlock, dests.String())
		cfgPath := filepath.Join(dir, fmt.Sprintf("sluice%d.yaml", k))
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return result{}, err
		}
		cmd := exec.Command(bin, "serve", "--config", cfgPath)
		cmd.Stderr = os.Stderr
		cmd.Env = os.Environ() // SLUICE_PPROF_ADDR=127.0.0.1:6060 profiles the server under load
		if o.profile != "" {
			// Each node its own pprof listener (one address in the environment would serve only the first).
			addr := freePort()
			pprofs = append(pprofs, addr)
			cmd.Env = append(cmd.Env, "SLUICE_PPROF_ADDR="+addr)
		}
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		cmds = append(cmds, cmd)
		for i := 0; ; i++ {
			resp, err := http.Get("http://" + listen + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if i > 1500 {
				return result{}, fmt.Errorf("sluice did not start")
			}
			time.Sleep(20 * time.Millisecond)
		}
		listens = append(listens, listen)
	}
	cpu := func() (d time.Duration) {
		for _, cmd := range cmds {
			d += cpuTime(cmd.Process.Pid)
		}
		return d
	}
	var pgs *pgStats
	if o.pgDSN != "" {
		if pgs, err = startPGStats(o.pgDSN, o.profile != ""); err != nil {
			return result{}, fmt.Errorf("read PostgreSQL's statistics: %w", err)
		}
	}
	var profiled sync.WaitGroup
	if o.profile != "" {
		// Over the middle half of the publishing period, every node at once.
		for k, addr := range pprofs {
			profiled.Add(1)
			go func() {
				defer profiled.Done()
				time.Sleep(d / 4)
				url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(int(d/2/time.Second), 1))
				resp, err := http.Get(url)
				if err != nil {
					fmt.Fprintf(os.Stderr, "profile node %d: %v\n", k, err)
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				path := filepath.Join(o.profile, fmt.Sprintf("%s-node%d.pprof", o.name, k))
				if err := os.WriteFile(path, b, 0o644); err != nil {
					fmt.Fprintf(os.Stderr, "profile node %d: %v\n", k, err)
				}
			}()
		}
	}
	cpu0, self0, idle0 := cpu(), selfCPU(), readIdle()
	commits0, ops0, busy0 := storeCommits(listens)
	busyFrom := time.Now()
	c := client(publishers)
	var accepted atomic.Int64
	var acceptLat hist
	total := func() (n int64) {
		for _, rc := range rcs {
			n += rc.count.Load()
		}
		return n
	}
	start := time.Now()
	slow := newStalls(stallAbove, start)
	pace := newPacer(o.rate, batch, start, d, grace(d))
	count := total
	if receivers == 0 {
		count = accepted.Load // batch-intake: the windows show the durable intake rate instead
	}
	stopWindows := windowSampler(count, start)
	var wg sync.WaitGroup
	for p := range publishers {
		listen := listens[p%len(listens)] // publishers spread over the nodes
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				t0, ok := pace.next() // the scheduled send time in a rate-capped run: latency counts from it
				if !ok {
					return
				}
				var body, path string
				if batch > 1 {
					parts := make([]string, batch)
					for i := range parts {
						parts[i] = fmt.Sprintf(`{"topic":"bench.event","data":{"sent_ns":%d,"n":%d%s}}`, t0.UnixNano(), i, pad)
					}
					body, path = `{"events":[`+strings.Join(parts, ",")+`]}`, "/v1/events/batch"
				} else {
					body, path = fmt.Sprintf(`{"topic":"bench.event","data":{"sent_ns":%d,"case":{"id":"c-1","status":"approved"}%s}}`, t0.UnixNano(), pad), "/v1/events"
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
					took := time.Since(t0)
					acceptLat.record(took)
					slow.record(t0, took)
				}
			}
		}()
	}
	wg.Wait()
	pubEnd := time.Since(start).Seconds()
	commits1, ops1, busy1 := storeCommits(listens)
	busyFor := time.Since(busyFrom)
	slow.report(os.Stderr, o.name)
	idle, steal := idle0.since()
	windows := stopWindows()
	if pgs != nil {
		pgs.end(o.name, accepted.Load())
	}
	profiled.Wait()
	if len(windows) == 0 { // shorter than half a window: the publishing period is the window
		windows = []float64{float64(count()) / max(pubEnd, 1e-9)}
	}
	want := accepted.Load() * int64(receivers)
	// Wait for deliveries to drain (bounded).
	drainBy := time.Now().Add(2 * d)
	for total() < want && time.Now().Before(drainBy) {
		time.Sleep(50 * time.Millisecond)
	}
	var last int64
	var lat hist
	for _, rc := range rcs {
		last = max(last, rc.last.Load())
		lat.merge(&rc.lat)
	}
	delivered := total()
	r := result{
		Accepted: accepted.Load(), AcceptedPerS: float64(accepted.Load()) / pubEnd, Deliveries: delivered,
		AcceptP50MS: acceptLat.percentile(0.5), AcceptP99MS: acceptLat.percentile(0.99), E2EP50MS: lat.percentile(0.5), E2EP99MS: lat.percentile(0.99),
		PeakRSSMB: rssOf(cmds), RatePerS: o.rate, MissedSends: pace.missed() * int64(batch),
		WindowMinPerS: slices.Min(windows), WindowMaxPerS: slices.Max(windows), Windows: len(windows), IdlePct: idle, StealPct: steal,
	}
	if r.MissedSends > 0 {
		fmt.Fprintf(os.Stderr, "warning: %d scheduled events were never sent: Sluice fell more than %v behind %.0f/s\n",
			r.MissedSends, grace(d), o.rate)
	}
	if receivers > 0 && last > 0 {
		r.DeliveredPerS = float64(delivered) / time.Unix(0, last).Sub(start).Seconds()
	}
	r.CPUMicrosPerE = perEvent(cpu()-cpu0, r.Accepted)
	if commits := commits1 - commits0; commits > 0 && r.Accepted > 0 {
		r.StoreCommitsPerE, r.StoreOpsPerCommit = commits/float64(r.Accepted), (ops1-ops0)/commits
		r.StoreBusy = (busy1 - busy0) / busyFor.Seconds() / float64(len(listens))
		fmt.Fprintf(os.Stderr, "%s: Sluice's store per accepted event: %.3f commits, %.1f operations per commit; writers busy %.2f s/s a node\n",
			o.name, r.StoreCommitsPerE, r.StoreOpsPerCommit, r.StoreBusy)
	}
	r.HarnessCPUPerE = perEvent(selfCPU()-self0, r.Accepted)
	if delivered < want {
		fmt.Fprintf(os.Stderr, "warning: %d of %d deliveries arrived before the drain deadline\n", delivered, want)
	}
	return r, nil
}

// storeCommits sums the store's commits, the operations they carried and its writers' time on them (seconds)
// over the nodes listening on listens, read from their /metrics (zeros where a node does not answer).
func storeCommits(listens []string) (commits, ops, busy float64) {
	for _, l := range listens {
		resp, err := http.Get("http://" + l + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "sluice_store_commits_total "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				commits += n
			} else if v, ok := strings.CutPrefix(line, "sluice_store_operations_total "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				ops += n
			} else if v, ok := strings.CutPrefix(line, "sluice_store_commit_seconds_total "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				busy += n
			}
		}
	}
	return commits, ops, busy
}

// rssOf is the peak RSS of the Sluice processes together (several nodes: their sum).
func rssOf(cmds []*exec.Cmd) (mb float64) {
	for _, cmd := range cmds {
		mb += peakRSS(cmd.Process.Pid)
	}
	return mb
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

// pad is added to every event's data (-data-bytes): `,"items":[…]`, or "".
var pad string

// stallAbove is -stalls: accepts slower than this are reported by the 100 ms window they were sent in.
var stallAbove time.Duration

// padding returns the `,"items":[…]` member that grows an event's data of about 60 bytes to about n bytes:
// small objects of strings, a number and a boolean, the shape of a typical payload.
func padding(n int) string {
	const item = `{"name":"document","kind":"passport","score":0.93,"ok":true}`
	if n <= 60+len(item) {
		return ""
	}
	var b strings.Builder
	b.WriteString(`,"items":[`)
	for i := 0; 60+b.Len()+len(item)+2 <= n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(item)
	}
	b.WriteByte(']')
	return b.String()
}

// perEvent is d in µs per event, 0 without events.
func perEvent(d time.Duration, events int64) float64 {
	if events <= 0 {
		return 0
	}
	return d.Seconds() * 1e6 / float64(events)
}

// selfCPU is the user and system CPU this process (the harness) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleMark is a reading of the machine's CPU time counters (/proc/stat): idle (with iowait), steal and all.
type idleMark struct{ idle, steal, all uint64 }

func readIdle() idleMark {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return idleMark{}
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	var m idleMark
	// cpu user nice system idle iowait irq softirq steal (guest time is counted in user already)
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		m.all += v
		switch i {
		case 4, 5:
			m.idle += v
		case 8:
			m.steal = v
		}
	}
	return m
}

// since is the idle and the steal share, in %, of the machine's CPU time from m until now.
func (m idleMark) since() (idle, steal float64) {
	n := readIdle()
	if n.all <= m.all {
		return 0, 0
	}
	all := float64(n.all - m.all)
	return 100 * float64(n.idle-m.idle) / all, 100 * float64(n.steal-m.steal) / all
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
					parts[i] = fmt.Sprintf(`{"topic":"bench.event","data":{"sent_ns":%d,"case":{"id":"c-%d","status":"approved"}%s}}`, time.Now().UnixNano(), i, pad)
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
