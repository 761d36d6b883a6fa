package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/sinktest"
	"gopkg.in/yaml.v3"
)

// The example NATS plugin (plugins/examples/nats, a module of its own built only on plugins/sdk) through
// this host, against the real NATS server in SLUICE_TEST_NATS_URL: Sluice's sink conformance suite, and the
// cost of the plugin boundary.

// natsExampleDir is the example's module directory, relative to this package.
const natsExampleDir = "../examples/nats"

// The tests read the streams back with testdata/jetstream, a module of its own: Sluice's go.mod needs no NATS
// client, as the example plugin's module is the only one that talks NATS.
var (
	jsOnce sync.Once
	jsTool string
	jsErr  error
)

type jsMessage struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
	Body  []byte `json:"body"`
}

func jetstreamTool(t testing.TB) string {
	t.Helper()
	jsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-jetstream-tool")
		if err != nil {
			jsErr = err
			return
		}
		jsTool = filepath.Join(dir, "jetstream")
		cmd := exec.Command("go", "build", "-o", jsTool, ".")
		cmd.Dir = "testdata/jetstream"
		if out, err := cmd.CombinedOutput(); err != nil {
			jsErr = fmt.Errorf("go build testdata/jetstream: %v\n%s", err, out)
		}
	})
	if jsErr != nil {
		t.Fatal(jsErr)
	}
	return jsTool
}

// readStream returns every message in stream, oldest first (none when it does not exist).
func readStream(t testing.TB, natsURL, stream string) ([]jsMessage, error) {
	out, err := exec.Command(jetstreamTool(t), "read", natsURL, stream).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("read stream %s: %v: %s", stream, err, ee.Stderr)
		}
		return nil, err
	}
	var msgs []jsMessage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var m jsMessage
		if err := dec.Decode(&m); err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func deleteStream(t testing.TB, natsURL, stream string) {
	if out, err := exec.Command(jetstreamTool(t), "delete", natsURL, stream).CombinedOutput(); err != nil {
		t.Logf("delete stream %s: %v: %s", stream, err, out)
	}
}

func natsURL(t testing.TB) string {
	u := os.Getenv("SLUICE_TEST_NATS_URL")
	if u == "" {
		t.Skip("SLUICE_TEST_NATS_URL is not set (.ci/services/nats.sh starts NATS and sets it)")
	}
	return u
}

func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

var (
	buildOnce sync.Once
	pluginBin string
	buildErr  error
)

// build compiles this plugin the way ops would get it: a separate executable.
func buildNATS(t testing.TB) (path, digest string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-nats-plugin")
		if err != nil {
			buildErr = err
			return
		}
		pluginBin = filepath.Join(dir, "sluice-nats")
		// Built inside its own module, as its author would: its go.mod, not Sluice's.
		cmd := exec.Command("go", "build", "-o", pluginBin, ".")
		cmd.Dir = natsExampleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	b, err := os.ReadFile(pluginBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return pluginBin, hex.EncodeToString(sum[:])
}

// loadThroughHost launches the built plugin with Sluice's plugin host and returns its sink spec.
func loadThroughHost(t testing.TB) sinks.Spec {
	path, sum := buildNATS(t)
	h := New(Options{Supervise: true, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	t.Cleanup(h.Close)
	specs, errs := h.Load([]config.Plugin{{Name: "nats", Path: path, SHA256: sum}})
	if len(errs) > 0 {
		t.Fatalf("load: %v", errs[0])
	}
	return specs[0]
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newThroughHost(t testing.TB, spec sinks.Spec, block string) sinks.Sink {
	t.Helper()
	cfg := spec.Config()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(block), &n); err != nil {
		t.Fatal(err)
	}
	if err := n.Content[0].Decode(cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	// The plugin dials through sdk.Dialer under the policy the host sends: loopback allowed, as a config
	// with delivery.network.allow_cidrs: [127.0.0.0/8] would.
	allow, _ := netguard.ParseCIDRs([]string{"127.0.0.0/8"})
	s, err := spec.New(context.Background(), cfg, sinks.Env{Destination: t.Name(), UserAgent: "Sluice/test", Timeout: 10 * time.Second,
		Network: netguard.NewDialer(netguard.New(allow), nil)})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return s
}

var streams atomic.Int64

func TestIntegrationConformanceThroughHost(t *testing.T) {
	base := natsURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	spec := loadThroughHost(t)
	const password = "right-password-1234"

	sinktest.Run(t, sinktest.Features{
		Ordered:        true,
		Oversized:      2 << 20, // over nats-server's default max_payload of 1 MiB
		BadCredentials: authServerAvailable(),
		Outage:         true,
		Reasons:        map[string]string{sinktest.CaseBadCredentials: "nats-server is not installed to start one with a password"},
	}, sinktest.Harness{
		New: func(t *testing.T) sinktest.Target {
			n := streams.Add(1)
			stream := fmt.Sprintf("SINKTEST_%d_%d", os.Getpid(), n)
			prefix := fmt.Sprintf("t%d_%d", os.Getpid(), n)
			proxy := sinktest.NewProxy(t, u.Host)
			sink := newThroughHost(t, spec, fmt.Sprintf("url: nats://%s\nsubject: '%s.{topic}'\nstream: %s\ncreate_stream: true\nconnect_timeout: 1s",
				proxy.Addr(), prefix, stream))
			t.Cleanup(func() { deleteStream(t, base, stream) })
			seen := 0 // a stream keeps everything: Read returns what came after the last call
			return sinktest.Target{
				Sink: sink,
				Read: func(context.Context) ([]sinktest.Received, error) {
					msgs, err := readStream(t, base, stream)
					if err != nil {
						return nil, err
					}
					var out []sinktest.Received
					for _, m := range msgs[min(seen, len(msgs)):] {
						out = append(out, sinktest.Received{ID: m.ID, Topic: m.Topic, Body: m.Body})
					}
					seen = max(seen, len(msgs))
					return out, nil
				},
				Stop:  func(*testing.T) { proxy.Stop() },
				Start: func(*testing.T) { proxy.Start() },
			}
		},
		BadCredentials: func(t *testing.T) sinks.Sink {
			addr := startAuthServer(t, password)
			return newThroughHost(t, spec, fmt.Sprintf("url: nats://%s\nusername: sluice\npassword: wrong-password-5678\nconnect_timeout: 1s", addr))
		},
		Secrets: []string{password, "wrong-password-5678"},
	})
}

func authServerAvailable() bool {
	_, err := exec.LookPath("nats-server")
	if err != nil {
		_, err = os.Stat("/usr/sbin/nats-server")
	}
	return err == nil
}

// startAuthServer runs a private nats-server that wants a password, on a free loopback port.
func startAuthServer(t *testing.T, password string) string {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	addr := deadAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port, "--user", "sluice", "--pass", password)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nats-server on %s did not come up", addr)
	return ""
}

// TestBuiltOnlyOnTheSDK keeps the example honest: besides the standard library and the NATS client it
// imports only plugins/sdk, as a third-party plugin would.

// BenchmarkNATSThroughHost measures a batch sent through the plugin boundary (gRPC over the AutoMTLS
// connection to the subprocess), per batch size; the example's own BenchmarkSend measures the same sink
// in-process, so the difference is what the boundary costs. events/s is reported as a metric.
func BenchmarkNATSThroughHost(b *testing.B) {
	base := natsURL(b)
	stream := fmt.Sprintf("BENCH_%d", os.Getpid())
	defer deleteStream(b, base, stream)
	block := fmt.Sprintf("url: %s\nsubject: 'bench%d.{topic}'\nstream: %s\ncreate_stream: true", base, os.Getpid(), stream)
	viaHost := newThroughHost(b, loadThroughHost(b), block)
	defer viaHost.Close(context.Background())
	for _, size := range []int{1, 10, 100} {
		batch := make([]event.Event, size)
		for i := range batch {
			batch[i] = event.Event{ID: event.NewID(), Topic: "bench.event", Time: time.Now(), Data: []byte(`{"case":{"id":"c-1","status":"approved"}}`)}
		}
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				for i := range batch {
					batch[i].ID = event.NewID() // new ids: JetStream would drop repeats as duplicates
				}
				if err := viaHost.Send(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// A plugin that dials through sdk.Dialer is held to the destination's network policy: under the default
// guard (no allow_cidrs) the NATS server on loopback is refused inside the plugin, with the refusal's advice.
func TestIntegrationPluginInsideTheGuard(t *testing.T) {
	base := natsURL(t)
	spec := loadThroughHost(t)
	cfg := spec.Config()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("url: "+base+"\nsubject: guard.test\nconnect_timeout: 2s"), &n); err != nil {
		t.Fatal(err)
	}
	if err := n.Content[0].Decode(cfg); err != nil {
		t.Fatal(err)
	}
	s, err := spec.New(context.Background(), cfg, sinks.Env{Destination: t.Name(), Timeout: 5 * time.Second,
		Network: netguard.NewDialer(netguard.New(nil), nil)})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	err = s.Send(context.Background(), sinktest.Events("guard", 1))
	if err == nil || !strings.Contains(err.Error(), "is loopback") || !strings.Contains(err.Error(), "delivery.network.allow_cidrs") {
		t.Fatalf("send under the default guard = %v, want the loopback refusal", err)
	}
}
