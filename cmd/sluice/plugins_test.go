package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The plugin tests run the real sluice binary with the example NATS plugin built as its own executable,
// against the NATS server in SLUICE_TEST_NATS_URL where they need one.

func natsPlugin(t *testing.T) (path, digest string) {
	t.Helper()
	path = buildOnce(t, "../../plugins/examples/nats", "sluice-nats")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}

func testNatsURL(t *testing.T) string {
	u := os.Getenv("SLUICE_TEST_NATS_URL")
	if u == "" {
		t.Skip("SLUICE_TEST_NATS_URL is not set (.ci/services/nats.sh starts NATS and sets it)")
	}
	return u
}

// pluginConfig writes a config with one nats plugin destination and returns its path.
func pluginConfig(t *testing.T, dir, addr, natsURL, digest, stream string) string {
	path, _ := natsPlugin(t)
	cfg := fmt.Sprintf(`server:
  listen: %s
  shutdown_timeout: 5s
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store:
  path: %s
delivery:
  timeout: 5s
  network: {allow_cidrs: [127.0.0.0/8]}
  retry:
    schedule: [100ms, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s, 2s, 2s]
    jitter: 0.1
telemetry:
  log: {level: info}
plugins:
  - name: nats
    path: %s
    sha256: %s
destinations:
  - name: to-nats
    type: nats
    topics: ["case.*"]
    config:
      url: %s
      subject: "%s.{topic}"
      stream: %s
      create_stream: true
`, addr, filepath.Join(dir, "data"), path, digest, natsURL, strings.ToLower(stream), stream)
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

type sluiceProc struct {
	cmd  *exec.Cmd
	addr string
	log  *os.File
}

func startSluice(t *testing.T, dir, addr, cfg string) *sluiceProc {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, "sluice.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &sluiceProc{cmd: exec.Command(sluiceBinary(t), "serve", "--config", cfg), addr: addr, log: logf}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_, _ = p.cmd.Process.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sluice log (last 6 KiB):\n%s", tail(b, 6144))
		}
	})
	waitFor(t, "sluice to be ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// children returns the pids whose parent is pid.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			child = child + 0
			out = append(out, child)
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func pluginPID(t *testing.T, sluicePID int) int {
	t.Helper()
	var pid int
	waitFor(t, "the plugin process", func() bool {
		for _, c := range children(sluicePID) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(b)) == "sluice-nats" && alive(c) {
				pid = c
				return true
			}
		}
		return false
	})
	return pid
}

// publishN publishes n events with workers in parallel and records every acknowledged id; after calls
// hook once, when half are acknowledged.
func publishN(t *testing.T, addr string, n, workers int, acked *sync.Map, hook func()) int64 {
	client := &http.Client{Timeout: 10 * time.Second}
	var next, count atomic.Int64
	var once sync.Once
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
				id := fmt.Sprintf("plg-%d-%05d", time.Now().UnixNano(), i)
				body := fmt.Sprintf(`{"id":%q,"topic":"case.status_updated","data":{"n":%d}}`, id, i)
				for attempt := 0; attempt < 100; attempt++ {
					req, _ := http.NewRequest("POST", "http://"+addr+"/v1/events", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer e2e-key")
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == http.StatusAccepted {
							acked.Store(id, true)
							if count.Add(1) == int64(n/2) && hook != nil {
								once.Do(hook)
							}
							break
						}
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return count.Load()
}

// jetstream runs plugins/host/testdata/jetstream, a module of its own that reads and deletes streams, so
// Sluice's go.mod needs no NATS client (only the example plugin's module talks NATS).
func jetstream(t *testing.T, args ...string) []byte {
	t.Helper()
	tool := buildOnce(t, "../../plugins/host/testdata/jetstream", "jetstream")
	out, err := exec.Command(tool, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Logf("jetstream %v: %v: %s", args, err, ee.Stderr)
		}
		return nil
	}
	return out
}

// streamIDs returns the Nats-Msg-Id of every message in stream.
func streamIDs(t *testing.T, natsURL, stream string) map[string]int {
	t.Helper()
	out := map[string]int{}
	dec := json.NewDecoder(bytes.NewReader(jetstream(t, "read", natsURL, stream)))
	for dec.More() {
		var m struct {
			ID string `json:"id"`
		}
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("read stream %s: %v", stream, err)
		}
		out[m.ID]++
	}
	return out
}

func TestPluginCrashLosesNothing(t *testing.T) {
	natsURL := testNatsURL(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	_, digest := natsPlugin(t)
	stream := fmt.Sprintf("SLUICE_E2E_%d", time.Now().UnixNano())
	cfg := pluginConfig(t, dir, addr, natsURL, digest, stream)

	t.Cleanup(func() { jetstream(t, "delete", natsURL, stream) })

	sl := startSluice(t, dir, addr, cfg)
	first := pluginPID(t, sl.cmd.Process.Pid)

	var acked sync.Map
	const n = 400
	killed := make(chan struct{})
	count := publishN(t, addr, n, 8, &acked, func() {
		if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
			t.Errorf("kill -9 the plugin: %v", err)
		}
		close(killed)
	})
	<-killed
	if count != n {
		t.Fatalf("only %d of %d events were acknowledged", count, n)
	}
	second := pluginPID(t, sl.cmd.Process.Pid)
	if second == first {
		t.Fatalf("plugin pid %d did not change after kill -9", first)
	}

	var missing []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := streamIDs(t, natsURL, stream)
		missing = missing[:0]
		acked.Range(func(k, _ any) bool {
			if got[k.(string)] == 0 {
				missing = append(missing, k.(string))
			}
			return true
		})
		if len(missing) == 0 {
			for id, c := range got {
				if c > 1 {
					t.Errorf("event %s is in the stream %d times; Nats-Msg-Id should have deduplicated it", id, c)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged events never reached the stream, e.g. %v", len(missing), missing[:min(5, len(missing))])
		}
		time.Sleep(500 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "sluice.log"))
	if !strings.Contains(string(b), "plugin restarted") {
		t.Errorf("the restart is not in the log")
	}
	checkJSONLog(t, b)
}

// checkJSONLog: with the default JSON log, every line is a JSON record — also those about the plugins
// launched before the config that configures logging was loaded — and none names its plugin twice.
func checkJSONLog(t *testing.T, log []byte) {
	t.Helper()
	started := false
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		dec := json.NewDecoder(strings.NewReader(line))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Errorf("not a JSON record in the log: %q", line)
			continue
		}
		plugins := 0
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				t.Errorf("not a JSON record in the log: %q", line)
				break
			}
			if key == "plugin" {
				plugins++
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Errorf("not a JSON record in the log: %q", line)
				break
			}
		}
		if plugins > 1 {
			t.Errorf("the plugin is named %d times in %s", plugins, line)
		}
		started = started || strings.Contains(line, `"msg":"plugin started"`)
	}
	if !started {
		t.Errorf("the log lacks the plugin's start, logged before logging was configured")
	}
}

func TestPluginCrashOfSluiceLeavesNoOrphans(t *testing.T) {
	natsURL := testNatsURL(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	_, digest := natsPlugin(t)
	stream := fmt.Sprintf("SLUICE_ORPHAN_%d", time.Now().UnixNano())
	sl := startSluice(t, dir, addr, pluginConfig(t, dir, addr, natsURL, digest, stream))
	t.Cleanup(func() { jetstream(t, "delete", natsURL, stream) })
	plugin := pluginPID(t, sl.cmd.Process.Pid)
	if err := sl.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = sl.cmd.Process.Wait()
	waitFor(t, "the plugin to die with sluice", func() bool { return !alive(plugin) })
}

func TestPluginWrongSHA256RefusesToStart(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	path, actual := natsPlugin(t)
	wrong := strings.Repeat("0f", 32)
	cfg := pluginConfig(t, dir, addr, "nats://127.0.0.1:4222", wrong, "S")
	cmd := exec.Command(sluiceBinary(t), "serve", "--config", cfg)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("sluice serve with a wrong sha256 exited %d (%v); want 1\n%s", code, err, out)
	}
	for _, want := range []string{"expected " + wrong, "actual " + actual, path, "refusing to start"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
}

func TestPluginConfigErrorAtYAMLLine(t *testing.T) {
	dir := t.TempDir()
	_, digest := natsPlugin(t)
	cfg := pluginConfig(t, dir, freeAddr(t), "nats://127.0.0.1:4222", digest, "S")
	b, _ := os.ReadFile(cfg)
	src := strings.Replace(string(b), `      subject: "s.{topic}"`, "      subject: \"s.{nope}\"\n      max_batch: lots\n      colour: blue", 1)
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	line := func(prefix string) int {
		for i, l := range strings.Split(src, "\n") {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q", prefix)
		return 0
	}
	out, err := exec.Command(sluiceBinary(t), "validate", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("validate accepted a bad plugin config:\n%s", out)
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d:18: destinations[0].config.max_batch: must be an integer, got \"lots\"", cfg, line("      max_batch:")),
		fmt.Sprintf("%s:%d:15: destinations[0].config.colour: unknown key \"colour\"", cfg, line("      colour:")),
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}

	// With the types right, the plugin's own rule (the subject template) is checked, at its line.
	src = strings.Replace(strings.Replace(src, "      max_batch: lots\n", "", 1), "      colour: blue\n", "", 1)
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command(sluiceBinary(t), "validate", "--config", cfg).CombinedOutput()
	want := fmt.Sprintf("%s:%d:16: destinations[0].config.subject: ", cfg, line("      subject:"))
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "nope") {
		t.Errorf("validate output lacks %q naming the bad placeholder:\n%s", want, out)
	}
}
