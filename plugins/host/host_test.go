package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-host-test")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for _, name := range []string{"memsink", "v2plugin"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./testdata/"+name).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func digest(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	t    *testing.T
	host *Host
	logs *syncBuffer
	spec sinks.Spec
	out  string // where memsink writes
}

func start(t *testing.T, opts Options, plugins ...config.Plugin) (*fixture, map[int]error) {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := New(opts)
	t.Cleanup(func() {
		h.Close()
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	if len(plugins) == 0 {
		p := filepath.Join(binDir, "memsink")
		plugins = []config.Plugin{{Name: "memsink", Path: p, SHA256: digest(t, p), Env: []string{"MEMSINK_CRASH_FILE", "MEMSINK_LISTED"}}}
	}
	specs, errs := h.Load(plugins)
	f := &fixture{t: t, host: h, logs: logs, out: filepath.Join(t.TempDir(), "out")}
	if len(specs) > 0 {
		f.spec = specs[0]
	}
	return f, errs
}

func mustStart(t *testing.T, opts Options) *fixture {
	f, errs := start(t, opts)
	if len(errs) > 0 {
		t.Fatalf("load: %v", errs)
	}
	return f
}

// config decodes a YAML block the way the config loader does.
func (f *fixture) config(block string) sinks.Config {
	f.t.Helper()
	cfg := f.spec.Config()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(block), &n); err != nil {
		f.t.Fatal(err)
	}
	if err := n.Content[0].Decode(cfg); err != nil {
		f.t.Fatal(err)
	}
	return cfg
}

func (f *fixture) sink(block string) sinks.Sink {
	f.t.Helper()
	cfg := f.config(block)
	if err := cfg.Validate(); err != nil {
		f.t.Fatalf("validate: %v", err)
	}
	s, err := f.spec.New(context.Background(), cfg, sinks.Env{Destination: "dest-" + f.t.Name(), Timeout: 5 * time.Second})
	if err != nil {
		f.t.Fatalf("new: %v", err)
	}
	f.t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func (f *fixture) delivered() []string {
	b, _ := os.ReadFile(f.out)
	return strings.Fields(string(b))
}

func events(ids ...string) []event.Event {
	out := make([]event.Event, len(ids))
	for i, id := range ids {
		out[i] = event.Event{ID: id, Topic: "case.created", Time: time.Now(), Data: []byte(`{"n":1}`)}
	}
	return out
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDescribe(t *testing.T) {
	f := mustStart(t, Options{})
	p := f.host.Plugins()[0]
	if f.spec.Type != "memsink" || !strings.Contains(f.spec.Doc, "test sink writing ids") {
		t.Errorf("spec = %q %q", f.spec.Type, f.spec.Doc)
	}
	names := map[string]sinks.Field{}
	for _, fd := range p.Fields() {
		names[fd.Name] = fd
	}
	if m := names["mirror"]; !m.SecretURL || m.Secret {
		t.Errorf("mirror (secret:\"url\") described as %+v, want SecretURL only", m)
	}
	if !names["file"].Required || !names["token"].Secret || names["delay"].Type != "duration" ||
		names["mode"].Default != "ok" || names["tls.ca_file"].Description != "CA bundle" {
		t.Errorf("fields = %+v", p.Fields())
	}
	s := f.sink("file: " + f.out)
	if l := s.(sinks.Limiter).Limits(); l.MaxBatch != 50 {
		t.Errorf("limits = %+v, want MaxBatch 50 from the plugin", l)
	}
}

func TestValidateReportsFieldPaths(t *testing.T) {
	f := mustStart(t, Options{})
	for _, tc := range []struct {
		block string
		want  []string
	}{
		{"file: /tmp/x", nil},
		{"{}", []string{"file: is required"}},
		{"file: /tmp/x\nfiel: y", []string{`fiel: unknown key "fiel"; valid keys here: file, fail_ids`}},
		{"file: /tmp/x\ndelay: soon", []string{"delay: must be a duration such as 5s"}},
		{"file: /tmp/x\nmode: odd\ntoken: bad", []string{`mode: "odd" is not a mode`, "token: is not accepted"}},
		{"file: /tmp/x\ntls: {ca: y}", []string{`tls.ca: unknown key "ca"`}},
	} {
		err := f.config(tc.block).Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%q: %v", tc.block, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: no error, want %q", tc.block, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want %q", tc.block, err, w)
			}
		}
		var fe *sinks.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%q: %T is not a *sinks.FieldError", tc.block, err)
		}
	}
}

func TestConfigLoaderPointsAtLines(t *testing.T) {
	p := filepath.Join(binDir, "memsink")
	src := fmt.Sprintf(`auth:
  keys: [{name: admin, key: k, role: admin}]
plugins:
  - name: memsink
    path: %s
    sha256: %s
destinations:
  - name: mem
    type: memsink
    topics: ["*"]
    config:
      file: /tmp/x
      mode: odd
      token: s3cret-token-value
      mirror: https://bob:hunter2-pass@mirror.example/x?sig=query-secret-value&plain=1
`, p, digest(t, p))
	h := New(Options{Logger: slog.New(slog.DiscardHandler)})
	defer h.Close()
	_, err := config.ParseWithPlugins("sluice.yaml", []byte(src), func(string) (string, bool) { return "", false }, sinks.NewRegistry(), h.Loader())
	want := `sluice.yaml:13:13: destinations[0].config.mode: "odd" is not a mode; use ok or refuse`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}

	h2 := New(Options{Logger: slog.New(slog.DiscardHandler)})
	defer h2.Close()
	cfg, err := config.ParseWithPlugins("sluice.yaml", []byte(strings.Replace(src, "mode: odd", "mode: ok", 1)),
		func(string) (string, bool) { return "", false }, sinks.NewRegistry(), h2.Loader())
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret-token-value") || !strings.Contains(string(out), "token: …alue") {
		t.Errorf("masked config shows the secret or lost it:\n%s", out)
	}
	// A plugin's secret:"url" field crosses the wire as such: the URL shows, its password and query values do not.
	for _, leak := range []string{"hunter2-pass", "query-secret-value"} {
		if strings.Contains(string(out), leak) {
			t.Errorf("masked config shows %q of the plugin's secret:\"url\" field:\n%s", leak, out)
		}
	}
	if !strings.Contains(string(out), "mirror.example/x") {
		t.Errorf("masked config lost the URL's host and path:\n%s", out)
	}
	// The plugin's defaults show, as a built-in sink's do.
	if !strings.Contains(string(out), "delay: 0s") {
		t.Errorf("masked config lacks the plugin's default delay: 0s:\n%s", out)
	}
}

func TestSendOutcomes(t *testing.T) {
	f := mustStart(t, Options{})
	s := f.sink(fmt.Sprintf("file: %s\nfail_ids: [b]", f.out))
	ctx := context.Background()
	var rep sinks.Report
	if err := s.Send(sinks.WithReport(ctx, &rep), events("a")); err != nil {
		t.Fatal(err)
	}
	if rep.StatusCode != 200 || string(rep.Response) != "ok" {
		t.Errorf("report = %+v", rep)
	}
	err := s.Send(ctx, events("c", "b", "d"))
	var be *sinks.BatchError
	if !errors.As(err, &be) || len(be.Errs) != 3 || be.Errs[0] != nil || be.Errs[2] != nil {
		t.Fatalf("err = %#v, want a batch error failing only the second event", err)
	}
	if c, _ := sinks.Classify(be.Errs[1]); c != sinks.ClassPermanent || !strings.Contains(be.Errs[1].Error(), "event b is refused") {
		t.Errorf("errs[1] = %v (%v)", be.Errs[1], c)
	}
	err = s.Send(ctx, events("b"))
	if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassPermanent {
		t.Errorf("single refused event: %v, want permanent", err)
	}
	if got := strings.Join(f.delivered(), ","); got != "a,c,d" {
		t.Errorf("delivered %s", got)
	}
}

func TestOpenFailureIsReportedBySend(t *testing.T) {
	f := mustStart(t, Options{})
	s := f.sink(fmt.Sprintf("file: %s\nmode: refuse", f.out))
	err := s.Send(context.Background(), events("a"))
	if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassPermanent || !strings.Contains(err.Error(), "credentials refused") {
		t.Errorf("send = %v (%v), want the plugin's permanent open error", err, c)
	}
}

func TestCancelIsNotAFailure(t *testing.T) {
	f := mustStart(t, Options{})
	s := f.sink(fmt.Sprintf("file: %s\ndelay: 10s", f.out))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := s.Send(ctx, events("a"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("send = %v, want context.DeadlineExceeded", err)
	}
}

func TestSHA256Mismatch(t *testing.T) {
	p := filepath.Join(binDir, "memsink")
	wrong := strings.Repeat("ab", 32)
	_, errs := start(t, Options{}, config.Plugin{Name: "memsink", Path: p, SHA256: wrong})
	err := errs[0]
	if err == nil || !strings.Contains(err.Error(), "expected "+wrong) || !strings.Contains(err.Error(), "actual "+digest(t, p)) {
		t.Fatalf("err = %v, want expected and actual digests", err)
	}
}

func TestUnpinnedWarns(t *testing.T) {
	f, errs := start(t, Options{}, config.Plugin{Name: "memsink", Path: filepath.Join(binDir, "memsink"), AllowUnpinned: true})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if !strings.Contains(f.logs.String(), `"level":"WARN","msg":"plugin is not pinned`) {
		t.Errorf("no warning about the unpinned plugin:\n%s", f.logs.String())
	}
}

func TestProtocolVersionMismatch(t *testing.T) {
	p := filepath.Join(binDir, "v2plugin")
	_, errs := start(t, Options{}, config.Plugin{Name: "future", Path: p, SHA256: digest(t, p)})
	err := errs[0]
	if err == nil || !strings.Contains(err.Error(), "speaks plugin protocol version 2, but this Sluice speaks version 1") {
		t.Fatalf("err = %v", err)
	}
}

func TestNotAPlugin(t *testing.T) {
	_, errs := start(t, Options{StartTimeout: 3 * time.Second}, config.Plugin{Name: "true", Path: "/bin/true", AllowUnpinned: true})
	if err := errs[0]; err == nil || !strings.Contains(err.Error(), "plugins/sdk") {
		t.Fatalf("err = %v", err)
	}
}

func TestStderrReachesTheLog(t *testing.T) {
	f := mustStart(t, Options{})
	f.sink("file: " + f.out)
	waitUntil(t, "the plugin's log line", 5*time.Second, func() bool {
		return strings.Contains(f.logs.String(), `"msg":"memsink opened","plugin":"memsink","destination":"dest-TestStderrReachesTheLog"`)
	})
}

func TestRestartAfterKill(t *testing.T) {
	f := mustStart(t, Options{Supervise: true, HealthInterval: 200 * time.Millisecond})
	s := f.sink(fmt.Sprintf("file: %s\ndelay: 300ms", f.out))
	p := f.host.Plugins()[0]
	pid := p.PID()
	inflight := make(chan error, 1)
	go func() { inflight <- s.Send(context.Background(), events("a")) }()
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-inflight
	if c, _ := sinks.Classify(err); err == nil || c != sinks.ClassRetryable {
		t.Fatalf("in-flight send = %v, want retryable", err)
	}
	waitUntil(t, "a new plugin process", 10*time.Second, func() bool { return p.PID() != 0 && p.PID() != pid })
	if err := s.Send(context.Background(), events("b")); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	if got := f.delivered(); len(got) != 1 || got[0] != "b" {
		t.Errorf("delivered %v", got)
	}
	if err := f.host.Check(context.Background()); err != nil {
		t.Errorf("one crash made the host unhealthy: %v", err)
	}
}

func TestHungPluginIsRestarted(t *testing.T) {
	f := mustStart(t, Options{Supervise: true, HealthInterval: 200 * time.Millisecond, HealthTimeout: 300 * time.Millisecond})
	p := f.host.Plugins()[0]
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a new plugin process", 10*time.Second, func() bool { return p.PID() != 0 && p.PID() != pid })
	if !strings.Contains(f.logs.String(), "health check failed") {
		t.Errorf("restart not logged with its reason:\n%s", f.logs.String())
	}
}

func TestCrashLoopMarksUnhealthy(t *testing.T) {
	crash := filepath.Join(t.TempDir(), "crash")
	t.Setenv("MEMSINK_CRASH_FILE", crash)
	f := mustStart(t, Options{Supervise: true, HealthInterval: 100 * time.Millisecond, MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond, UnhealthyAfter: 3, StableAfter: 300 * time.Millisecond})
	f.sink("file: " + f.out)
	p := f.host.Plugins()[0]
	if err := os.WriteFile(crash, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the plugin to be reported unhealthy", 10*time.Second, func() bool { return f.host.Check(context.Background()) != nil })
	err := f.host.Check(context.Background())
	if !strings.Contains(err.Error(), "plugin memsink keeps crashing") || !strings.Contains(err.Error(), "dest-TestCrashLoopMarksUnhealthy") {
		t.Errorf("check = %v", err)
	}
	if !strings.Contains(f.logs.String(), "plugin keeps crashing") {
		t.Errorf("crash loop not logged")
	}
	os.Remove(crash)
	waitUntil(t, "the plugin to recover", 10*time.Second, func() bool { return f.host.Check(context.Background()) == nil })
}

// A plugin sees only the variables its config lists: never Sluice's keys, the encryption key or cloud
// credentials the host has.
func TestPluginEnvironmentIsClean(t *testing.T) {
	t.Setenv("SLUICE_ADMIN_KEY", "admin-key-that-must-not-leak")
	t.Setenv("SLUICE_STORE_ENCRYPTION_KEY", "enc-key-that-must-not-leak")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-that-must-not-leak")
	t.Setenv("MEMSINK_LISTED", "listed-value")
	f := mustStart(t, Options{})
	envFile := filepath.Join(t.TempDir(), "env")
	f.sink("file: " + f.out + "\nenv_file: " + envFile)
	b, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := string(b)
	if !slices.Contains(strings.Split(env, "\n"), "MEMSINK_LISTED=listed-value") {
		t.Errorf("the listed variable is missing from the plugin's environment:\n%s", env)
	}
	for _, leak := range []string{"SLUICE_ADMIN_KEY", "must-not-leak", "AWS_SECRET_ACCESS_KEY", "PATH="} {
		if strings.Contains(env, leak) {
			t.Errorf("the plugin's environment holds %s:\n%s", leak, env)
		}
	}
}

func TestChildEnv(t *testing.T) {
	host := map[string]string{"A": "1", "SLUICE_ADMIN_KEY": "k", "B": "", "sluice_x": "y"}
	lookup := func(n string) (string, bool) { v, ok := host[n]; return v, ok }
	got := childEnv([]string{"A", "B", "MISSING", "SLUICE_ADMIN_KEY", "sluice_x", "A=2"}, lookup)
	if want := []string{"A=1", "B="}; !slices.Equal(got, want) {
		t.Fatalf("childEnv = %q, want %q", got, want)
	}
}
