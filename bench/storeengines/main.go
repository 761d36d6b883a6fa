// Command storeengines benchmarks candidate embedded engines for Sluice's
// durable event store with group commit: SQLite (modernc.org/sqlite, WAL,
// synchronous=FULL), bbolt and pebble.
//
//	cd bench/storeengines && go run . [-engine all|sqlite|bbolt|pebble|<mode>] \
//	    [-publishers 32] [-events 20000] [-dir DIR] [-json]
//
// It is a separate Go module so the main go.mod never sees bbolt/pebble.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// Store is what Sluice's store needs for this benchmark. Append and
// MarkDelivered return only once the data is durable (fsynced).
type Store interface {
	Append(evs []*Event) error
	MarkDelivered(ids []int64) error
	Due(dest string, now int64, limit int, bodies bool) (int, error)
	Commits() int64                           // durable commit rounds so far
	Fsyncs() (wal, total int64, counted bool) // fsync calls observed in-process (pebble only)
	Verify() ([]string, error)
	Close() error
}

type mode struct {
	name, engine, desc string
	open               func(dir string) (Store, error)
}

type config struct {
	engine      string
	publishers  int
	events      int
	batchEvents int
	batchSize   int
	maxBatch    int
	marks       int
	markWorkers int
	dueReps     int
	dir         string
	jsonOut     bool
	keep        bool
	boltDelay   time.Duration
	boltSize    int
	rounds      int
	quietPct    float64
}

func modes(c *config) []mode {
	return []mode{
		{"sqlite-writer", "sqlite", "single writer goroutine, 1 tx per drained queue (cap " + strconv.Itoa(c.maxBatch) + " calls)",
			func(d string) (Store, error) { return openSQLite(d, c.maxBatch) }},
		{"bbolt-batch", "bbolt", "db.Batch (MaxBatchDelay/MaxBatchSize)",
			func(d string) (Store, error) {
				return openBolt(d, true, c.maxBatch, boltOpts{c.boltDelay, c.boltSize})
			}},
		{"bbolt-writer", "bbolt", "single writer goroutine, 1 db.Update per drained queue",
			func(d string) (Store, error) { return openBolt(d, false, c.maxBatch, boltOpts{}) }},
		{"pebble-sync", "pebble", "each caller commits its own Batch with pebble.Sync (commit pipeline groups fsyncs)",
			func(d string) (Store, error) { return openPebble(d, false, c.maxBatch) }},
		{"pebble-writer", "pebble", "single writer goroutine, 1 Batch+Sync per drained queue",
			func(d string) (Store, error) { return openPebble(d, true, c.maxBatch) }},
	}
}

// ---- results ----

type phase struct {
	Events      int     `json:"events"`
	PerCall     int     `json:"events_per_call"`
	Calls       int     `json:"calls"`
	Publishers  int     `json:"publishers"`
	Seconds     float64 `json:"seconds"`
	EventsPerS  float64 `json:"events_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Maxms       float64 `json:"max_ms"`
	Commits     int64   `json:"commits"`
	EvPerCommit float64 `json:"events_per_commit"`
	WALFsyncs   int64   `json:"wal_fsyncs,omitempty"`         // pebble only (counted in VFS)
	AllFsyncs   int64   `json:"all_fsyncs,omitempty"`         // pebble only (WAL+flush+compaction+manifest)
	DevFlushes  int64   `json:"device_flushes"`               // block device flush requests during the phase (-1 unknown)
	CPUusPerEv  float64 `json:"cpu_us_per_event"`             // process user+sys CPU per event (includes event generation)
	WrBytesEv   float64 `json:"write_bytes_per_event"`        // bytes passed to write syscalls (/proc/self/io wchar) per event
	EvPerSMin   float64 `json:"events_per_sec_min,omitempty"` // across rounds
	EvPerSMax   float64 `json:"events_per_sec_max,omitempty"`
}

type result struct {
	Mode        string   `json:"mode"`
	Engine      string   `json:"engine"`
	Desc        string   `json:"desc"`
	Settings    []string `json:"settings"`
	Single      phase    `json:"single"`
	Batch       phase    `json:"batch"`
	DueIdxMs    float64  `json:"due100_index_only_ms"`        // median
	DueBodyMs   float64  `json:"due100_with_bodies_ms"`       // median
	DueFirstMs  float64  `json:"due100_with_bodies_first_ms"` // first query after load
	DueRows     int      `json:"due_rows"`
	Mark        phase    `json:"mark"`
	SizeMB      float64  `json:"disk_mb"`
	LoadAvg     string   `json:"loadavg_start_end"`
	OtherCPUPct float64  `json:"other_processes_cpu_pct"`
	Rounds      int      `json:"rounds,omitempty"`
	Error       string   `json:"error,omitempty"`
}

func main() {
	c := &config{}
	flag.StringVar(&c.engine, "engine", "all", "all|sqlite|bbolt|pebble or a mode name (sqlite-writer, bbolt-batch, bbolt-writer, pebble-sync, pebble-writer); comma-separated ok")
	flag.IntVar(&c.publishers, "publishers", 32, "concurrent publishers")
	flag.IntVar(&c.events, "events", 20000, "events in the 1-event-per-call phase")
	flag.IntVar(&c.batchEvents, "batch-events", 0, "events in the batch-intake phase (default: = -events, min 10x batch-size)")
	flag.IntVar(&c.batchSize, "batch-size", 100, "events per call in the batch-intake phase")
	flag.IntVar(&c.maxBatch, "maxbatch", 512, "single-writer: max queued calls per transaction")
	flag.IntVar(&c.marks, "mark", 10000, "deliveries to mark delivered")
	flag.IntVar(&c.markWorkers, "mark-workers", 32, "concurrent dispatcher workers marking deliveries (1 per call)")
	flag.IntVar(&c.dueReps, "due-reps", 25, "repetitions of the due query (median reported)")
	flag.StringVar(&c.dir, "dir", "", "parent dir for temp stores (default ./.tmp, same disk as the repo)")
	flag.BoolVar(&c.jsonOut, "json", false, "also print JSON results")
	flag.BoolVar(&c.keep, "keep", false, "keep store directories")
	flag.DurationVar(&c.boltDelay, "bbolt-batch-delay", 0, "bbolt db.MaxBatchDelay (0 = library default 10ms)")
	flag.IntVar(&c.boltSize, "bbolt-batch-size", 0, "bbolt db.MaxBatchSize (0 = library default 1000)")
	flag.IntVar(&c.rounds, "rounds", 1, "repeat all selected modes N times (order rotated each round); tables show medians")
	ckpt := flag.Int("sqlite-autocheckpoint", 1000, "SQLite PRAGMA wal_autocheckpoint (pages)")
	flag.DurationVar(&sqliteBGCheckpoint, "sqlite-bg-checkpoint", 0, "if > 0: run PRAGMA wal_checkpoint(PASSIVE) from a background goroutine at this interval and set wal_autocheckpoint=0")
	flag.Float64Var(&c.quietPct, "quiet-pct", 0, "if > 0 and rounds > 1: also print medians over only the rounds in which other processes used <= this % of the machine's CPU")
	flag.Parse()
	if sqliteBGCheckpoint > 0 {
		*ckpt = 0
	}
	setSQLiteAutocheckpoint(*ckpt)
	if c.batchEvents == 0 {
		c.batchEvents = max(c.events, 10*c.batchSize)
	}
	if c.dir == "" {
		c.dir = ".tmp"
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		fatal(err)
	}

	var sel []mode
	wants := strings.Split(c.engine, ",")
	for _, m := range modes(c) {
		for _, w := range wants {
			if w == "all" || w == m.engine || w == m.name {
				sel = append(sel, m)
				break
			}
		}
	}
	if len(sel) == 0 {
		fatal(fmt.Errorf("no mode matches -engine %q", c.engine))
	}

	fmt.Printf("storeengines: %s, GOMAXPROCS=%d, publishers=%d, events=%d (1/call), batch-intake=%d (%d/call), mark=%d (%d workers)\n",
		runtime.Version(), runtime.GOMAXPROCS(0), c.publishers, c.events, c.batchEvents, c.batchSize, c.marks, c.markWorkers)
	fmt.Printf("libraries: %s\n", strings.Join(libVersions(), ", "))
	abs, _ := filepath.Abs(c.dir)
	fmt.Printf("store parent dir: %s (device flush counter: %s)\n\n", abs, devDesc(abs))

	fmt.Printf("harness: generating one event (UUIDv7 + ~400B JSON) costs %.1f us CPU; it is done outside the timed call but inside the CPU/event figures\n\n", genCost())
	start := time.Now()
	all := map[string][]result{}
	for round := range max(c.rounds, 1) {
		if c.rounds > 1 {
			fmt.Printf("--- round %d/%d ---\n", round+1, c.rounds)
		}
		for i := range sel {
			m := sel[(i+round)%len(sel)]
			all[m.name] = append(all[m.name], runMode(c, m))
		}
	}
	var results []result
	for _, m := range sel {
		results = append(results, aggregate(all[m.name]))
	}
	if c.rounds > 1 {
		fmt.Printf("=== medians over %d rounds (events/s min-max in brackets) ===\n", c.rounds)
	}
	printTables(results)
	var quiet []result
	if c.rounds > 1 && c.quietPct > 0 {
		fmt.Printf("\n\n=== medians over QUIET rounds only (other processes <= %.0f%% CPU) ===\n", c.quietPct)
		for _, m := range sel {
			var q []result
			for _, r := range all[m.name] {
				if r.OtherCPUPct <= c.quietPct {
					q = append(q, r)
				}
			}
			fmt.Printf("  %-14s %d of %d rounds quiet\n", m.name, len(q), len(all[m.name]))
			if len(q) == 0 {
				q = all[m.name]
				fmt.Printf("  %-14s (no quiet round: using all rounds)\n", "")
			}
			a := aggregate(q)
			a.Rounds = len(q)
			quiet = append(quiet, a)
		}
		printTables(quiet)
	}
	fmt.Printf("\ntotal wall time %s\n", time.Since(start).Round(time.Millisecond))
	if c.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{
			"go": runtime.Version(), "gomaxprocs": runtime.GOMAXPROCS(0), "libraries": libVersions(),
			"publishers": c.publishers, "events": c.events, "batch_events": c.batchEvents, "batch_size": c.batchSize,
			"rounds": c.rounds, "results": results, "all_rounds": all, "quiet_pct": c.quietPct, "quiet_results": quiet,
		})
	}
}

func genCost() float64 {
	r := rand.New(rand.NewPCG(1, 2))
	c0 := cpuTime()
	const n = 20000
	for range n {
		_ = genEvent(r)
	}
	return float64((cpuTime() - c0).Microseconds()) / n
}

func med(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// aggregate returns the per-field median over rounds.
func aggregate(rs []result) result {
	if len(rs) == 1 {
		return rs[0]
	}
	out := rs[0]
	out.Rounds = len(rs)
	var loads []string
	var errs []string
	for _, r := range rs {
		loads = append(loads, r.LoadAvg)
		if r.Error != "" {
			errs = append(errs, r.Error)
		}
	}
	out.LoadAvg = strings.Join(loads, " ")
	out.Error = strings.Join(errs, "; ")
	f := func(get func(*result) *float64) {
		var v []float64
		for i := range rs {
			v = append(v, *get(&rs[i]))
		}
		*get(&out) = med(v)
	}
	fi := func(get func(*result) *int64) {
		var v []float64
		for i := range rs {
			v = append(v, float64(*get(&rs[i])))
		}
		*get(&out) = int64(med(v))
	}
	for _, ph := range []func(*result) *phase{
		func(r *result) *phase { return &r.Single },
		func(r *result) *phase { return &r.Batch },
		func(r *result) *phase { return &r.Mark },
	} {
		f(func(r *result) *float64 { return &ph(r).Seconds })
		f(func(r *result) *float64 { return &ph(r).EventsPerS })
		f(func(r *result) *float64 { return &ph(r).P50ms })
		f(func(r *result) *float64 { return &ph(r).P99ms })
		f(func(r *result) *float64 { return &ph(r).Maxms })
		f(func(r *result) *float64 { return &ph(r).EvPerCommit })
		f(func(r *result) *float64 { return &ph(r).CPUusPerEv })
		f(func(r *result) *float64 { return &ph(r).WrBytesEv })
		fi(func(r *result) *int64 { return &ph(r).Commits })
		fi(func(r *result) *int64 { return &ph(r).WALFsyncs })
		fi(func(r *result) *int64 { return &ph(r).AllFsyncs })
		fi(func(r *result) *int64 { return &ph(r).DevFlushes })
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range rs {
			lo = min(lo, ph(&rs[i]).EventsPerS)
			hi = max(hi, ph(&rs[i]).EventsPerS)
		}
		ph(&out).EvPerSMin, ph(&out).EvPerSMax = lo, hi
	}
	f(func(r *result) *float64 { return &r.DueIdxMs })
	f(func(r *result) *float64 { return &r.DueBodyMs })
	f(func(r *result) *float64 { return &r.DueFirstMs })
	f(func(r *result) *float64 { return &r.SizeMB })
	f(func(r *result) *float64 { return &r.OtherCPUPct })
	return out
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func libVersions() []string {
	var out []string
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return []string{"(no build info)"}
	}
	for _, d := range bi.Deps {
		switch d.Path {
		case "modernc.org/sqlite", "go.etcd.io/bbolt", "github.com/cockroachdb/pebble/v2", "github.com/cockroachdb/pebble", "github.com/google/uuid":
			out = append(out, d.Path+"@"+d.Version)
		}
	}
	return out
}

func runMode(c *config, m mode) (res result) {
	res = result{Mode: m.name, Engine: m.engine, Desc: m.desc}
	load0 := loadAvg()
	busy0, cpuM0, tM0 := sysBusy(), cpuTime(), time.Now()
	defer func() {
		res.LoadAvg = load0 + "->" + loadAvg()
		el := time.Since(tM0).Seconds() * float64(runtime.NumCPU())
		if b := sysBusy(); b >= 0 && busy0 >= 0 && el > 0 {
			res.OtherCPUPct = 100 * ((b - busy0) - (cpuTime() - cpuM0).Seconds()) / el
		}
	}()
	fail := func(err error) result {
		res.Error = err.Error()
		fmt.Printf("[%s] ERROR: %v\n", m.name, err)
		return res
	}
	dir, err := os.MkdirTemp(c.dir, m.name+"-")
	if err != nil {
		return fail(err)
	}
	if !c.keep {
		defer os.RemoveAll(dir)
	}
	st, err := m.open(dir)
	if err != nil {
		return fail(err)
	}
	closed := false
	defer func() {
		if !closed {
			st.Close()
		}
	}()
	res.Settings, err = st.Verify()
	fmt.Printf("[%s] %s\n", m.name, m.desc)
	for _, s := range res.Settings {
		fmt.Printf("    %s\n", s)
	}
	if err != nil {
		return fail(err)
	}

	// Phase 1: one event per call.
	res.Single, err = appendPhase(st, dir, c.publishers, c.events, 1)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("    single: %s\n", res.Single)
	// Phase 2: batch intake.
	res.Batch, err = appendPhase(st, dir, c.publishers, c.batchEvents, c.batchSize)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("    batch : %s\n", res.Batch)

	// Phase 3: due query for one destination, all loaded deliveries are due.
	now := time.Now().Add(time.Hour).UnixMilli()
	runtime.GC()
	t0 := time.Now()
	n, err := st.Due("dest-3", now, 100, true)
	res.DueFirstMs = ms(time.Since(t0))
	if err != nil {
		return fail(err)
	}
	res.DueRows = n
	var idx, body []time.Duration
	for range c.dueReps {
		t := time.Now()
		if _, err := st.Due("dest-3", now, 100, false); err != nil {
			return fail(err)
		}
		idx = append(idx, time.Since(t))
		t = time.Now()
		if _, err := st.Due("dest-3", now, 100, true); err != nil {
			return fail(err)
		}
		body = append(body, time.Since(t))
	}
	res.DueIdxMs, res.DueBodyMs = ms(pct(idx, 50)), ms(pct(body, 50))
	fmt.Printf("    due   : %d rows, index-only %.3f ms, with bodies %.3f ms (first %.3f ms)\n", n, res.DueIdxMs, res.DueBodyMs, res.DueFirstMs)
	if n != 100 {
		return fail(fmt.Errorf("due query returned %d rows, want 100", n))
	}

	// Phase 4: mark deliveries 1..marks delivered by concurrent dispatcher workers.
	marks := c.marks
	if loaded := 2 * (res.Single.Events + res.Batch.Events); marks > loaded {
		fmt.Printf("    note  : only %d deliveries loaded, marking %d instead of %d\n", loaded, loaded, marks)
		marks = loaded
	}
	res.Mark, err = markPhase(st, dir, c.markWorkers, marks)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("    mark  : %s\n", res.Mark)
	// Sanity: marked deliveries must have left the pending index.
	if cnt, err := st.Due("dest-3", now, 1<<30, false); err == nil {
		fmt.Printf("    check : dest-3 pending after marking: %d\n", cnt)
	}

	closed = true
	if err := st.Close(); err != nil {
		return fail(err)
	}
	res.SizeMB = float64(dirSize(dir)) / (1 << 20)
	fmt.Printf("    disk  : %.1f MiB\n\n", res.SizeMB)
	return res
}

func (p phase) String() string {
	s := fmt.Sprintf("%d ev in %d calls, %.2fs, %.0f ev/s, p50 %.3f ms, p99 %.3f ms, max %.1f ms, commits %d (%.1f ev/commit), dev flushes %d",
		p.Events, p.Calls, p.Seconds, p.EventsPerS, p.P50ms, p.P99ms, p.Maxms, p.Commits, p.EvPerCommit, p.DevFlushes)
	if p.AllFsyncs > 0 {
		s += fmt.Sprintf(", fsync calls WAL %d / all %d", p.WALFsyncs, p.AllFsyncs)
	}
	return s
}

func appendPhase(st Store, dir string, publishers, total, perCall int) (phase, error) {
	calls := total / perCall
	var next atomic.Int64
	lat := make([][]time.Duration, publishers)
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	runtime.GC()
	c0, w0, a0, f0 := snapshot(st, dir)
	cpu0, wr0 := cpuTime(), wchar()
	t0 := time.Now()
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(p)+1, uint64(time.Now().UnixNano())))
			l := make([]time.Duration, 0, calls/publishers+1)
			evs := make([]*Event, perCall)
			for next.Add(1) <= int64(calls) {
				for i := range evs {
					evs[i] = genEvent(r) // not timed
				}
				t := time.Now()
				if err := st.Append(evs); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(t))
			}
			lat[p] = l
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	c1, w1, a1, f1 := snapshot(st, dir)
	select {
	case err := <-errs:
		return phase{}, err
	default:
	}
	ph := mkPhase(lat, el, calls*perCall, perCall, publishers, c1-c0, w1-w0, a1-a0, delta(f0, f1))
	ph.CPUusPerEv = float64((cpuTime() - cpu0).Microseconds()) / float64(ph.Events)
	ph.WrBytesEv = float64(wchar()-wr0) / float64(ph.Events)
	return ph, nil
}

func markPhase(st Store, dir string, workers, total int) (phase, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	runtime.GC()
	c0, w0, a0, f0 := snapshot(st, dir)
	cpu0, wr0 := cpuTime(), wchar()
	t0 := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var l []time.Duration
			ids := make([]int64, 1)
			for {
				id := next.Add(1)
				if id > int64(total) {
					break
				}
				ids[0] = id
				t := time.Now()
				if err := st.MarkDelivered(ids); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(t))
			}
			lat[w] = l
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	c1, w1, a1, f1 := snapshot(st, dir)
	select {
	case err := <-errs:
		return phase{}, err
	default:
	}
	ph := mkPhase(lat, el, total, 1, workers, c1-c0, w1-w0, a1-a0, delta(f0, f1))
	ph.CPUusPerEv = float64((cpuTime() - cpu0).Microseconds()) / float64(ph.Events)
	ph.WrBytesEv = float64(wchar()-wr0) / float64(ph.Events)
	return ph, nil
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// wchar: bytes this process passed to write/pwrite syscalls (includes the
// WAL/page writes of the engine, i.e. its write amplification before the FS).
func wchar() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// sysBusy returns machine-wide CPU seconds spent in user/nice/system/steal
// (/proc/stat, USER_HZ=100) MINUS the CPU of kernel threads (jbd2, kworkers,
// ...), which mostly do this benchmark's own I/O (fsync -> journal commit).
// irq/softirq are left out for the same reason. Subtracting our own CPU then
// leaves what other user processes (other people's builds/tests) consumed.
func sysBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	var busy float64
	for _, i := range []int{1, 2, 3, 8} { // user nice system steal
		n, _ := strconv.ParseFloat(f[i], 64)
		busy += n
	}
	return (busy - kthreadTicks()) / 100
}

// kthreadTicks sums utime+stime of kernel threads (children of kthreadd, pid 2).
func kthreadTicks() float64 {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum float64
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:])) // f[0]=state f[1]=ppid ... f[11]=utime f[12]=stime
		if len(f) < 13 || (f[1] != "2" && e.Name() != "2") {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		sum += u + st
	}
	return sum
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return "?"
	}
	return f[0]
}

func snapshot(st Store, dir string) (commits, wal, all, flushes int64) {
	commits = st.Commits()
	wal, all, _ = st.Fsyncs()
	flushes = devFlushes(dir)
	return
}

func delta(a, b int64) int64 {
	if a < 0 || b < 0 {
		return -1
	}
	return b - a
}

func mkPhase(lat [][]time.Duration, el time.Duration, events, perCall, pubs int, commits, wal, all, flushes int64) phase {
	var all2 []time.Duration
	for _, l := range lat {
		all2 = append(all2, l...)
	}
	p := phase{
		Events: events, PerCall: perCall, Calls: len(all2), Publishers: pubs,
		Seconds: el.Seconds(), EventsPerS: float64(events) / el.Seconds(),
		P50ms: ms(pct(all2, 50)), P99ms: ms(pct(all2, 99)), Maxms: ms(pct(all2, 100)),
		Commits: commits, WALFsyncs: wal, AllFsyncs: all, DevFlushes: flushes,
	}
	if commits > 0 {
		p.EvPerCommit = float64(events) / float64(commits)
	}
	return p
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// ---- block-device flush counter ----
// /sys/dev/block/MAJ:MIN/stat field 15 (0-based) = flush requests completed
// (Linux >= 5.5). An fsync/fdatasync on ext4 with a write-back cache issues a
// device flush, so this is ground truth for "the disk was asked to persist".
// It is device-wide: other processes writing to the same disk add noise.

func statFile(dir string) string {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return ""
	}
	maj, min := unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev))
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", maj, min)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func devFlushes(dir string) int64 {
	p := statFile(dir)
	if p == "" {
		return -1
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 16 {
		return -1
	}
	v, err := strconv.ParseInt(f[15], 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func devDesc(dir string) string {
	p := statFile(dir)
	if p == "" || devFlushes(dir) < 0 {
		return "unavailable"
	}
	return p
}

// ---- output ----

func rng(p phase) string {
	if p.EvPerSMax == 0 {
		return ""
	}
	return fmt.Sprintf("[%.0f-%.0f]", p.EvPerSMin, p.EvPerSMax)
}

func printTables(rs []result) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	f := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	if len(rs) == 0 {
		return
	}
	fmt.Printf("=== Append, 1 event per call, %d publishers, durable ack ===\n", rs[0].Single.Publishers)
	f("mode\tevents/s\trange\tp50 ms\tp99 ms\tmax ms\tcommits\tev/commit\tdev flushes\tCPU us/ev\twrite KiB/ev\t\n")
	for _, r := range rs {
		p := r.Single
		f("%s\t%.0f\t%s\t%.3f\t%.3f\t%.1f\t%d\t%.1f\t%d\t%.0f\t%.1f\t\n", r.Mode, p.EventsPerS, rng(p), p.P50ms, p.P99ms, p.Maxms, p.Commits, p.EvPerCommit, p.DevFlushes, p.CPUusPerEv, p.WrBytesEv/1024)
	}
	w.Flush()
	fmt.Printf("\n=== Batch intake, %d events per call, %d publishers ===\n", rs[0].Batch.PerCall, rs[0].Batch.Publishers)
	f("mode\tevents/s\trange\tcalls/s\tp50 ms\tp99 ms\tcommits\tev/commit\tdev flushes\tCPU us/ev\twrite KiB/ev\t\n")
	for _, r := range rs {
		p := r.Batch
		f("%s\t%.0f\t%s\t%.0f\t%.3f\t%.3f\t%d\t%.1f\t%d\t%.0f\t%.1f\t\n", r.Mode, p.EventsPerS, rng(p), p.EventsPerS/float64(max(p.PerCall, 1)), p.P50ms, p.P99ms, p.Commits, p.EvPerCommit, p.DevFlushes, p.CPUusPerEv, p.WrBytesEv/1024)
	}
	w.Flush()
	fmt.Printf("\n=== Read side (after load): due query = first 100 pending deliveries of dest-3 by next_at; mark = %d workers x 1 delivery/call ===\n", rs[0].Mark.Publishers)
	f("mode\tdue100 idx ms\tdue100+body ms\tfirst ms\tmark/s\trange\tmark p50 ms\tmark p99 ms\tmark commits\tmark KiB/op\tdisk MiB\t\n")
	for _, r := range rs {
		f("%s\t%.3f\t%.3f\t%.3f\t%.0f\t%s\t%.3f\t%.3f\t%d\t%.1f\t%.1f\t\n", r.Mode, r.DueIdxMs, r.DueBodyMs, r.DueFirstMs,
			r.Mark.EventsPerS, rng(r.Mark), r.Mark.P50ms, r.Mark.P99ms, r.Mark.Commits, r.Mark.WrBytesEv/1024, r.SizeMB)
	}
	w.Flush()
	fmt.Println("\nbackground: CPU used by OTHER user processes (not kernel I/O threads) while each mode ran (% of the 2-core machine, median over rounds), and load average start->end per round:")
	for _, r := range rs {
		fmt.Printf("  %-14s other CPU %4.0f%%   load %s\n", r.Mode, r.OtherCPUPct, r.LoadAvg)
	}
	for _, r := range rs {
		if r.Error != "" {
			fmt.Printf("%s: ERROR %s\n", r.Mode, r.Error)
		}
	}
	fmt.Println("\ncommits = durable commit rounds: sqlite/bbolt-writer = writer transactions (sqlite: 1 WAL fsync each;")
	fmt.Println("bbolt: 2 fdatasync each); bbolt-batch = committed write txs (meta txid delta); pebble = WAL fsync calls counted in its VFS.")
}
