package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSSRFRefusedThroughTheGateway runs the real binary with no allow_cidrs and webhooks aimed at loopback,
// private, metadata and IPv6 loopback addresses and a hostname resolving to loopback: each delivery must fail
// without retries, and its attempt must say why.
func TestSSRFRefusedThroughTheGateway(t *testing.T) {
	c := &cluster{t: t, dir: t.TempDir(), addr: freeAddr(t)}
	targets := map[string]string{
		"loopback":  "http://127.0.0.1:9/x",
		"private":   "http://10.0.0.1/x",
		"metadata":  "http://169.254.169.254/latest/meta-data",
		"ipv6":      "http://[::1]:9/x",
		"localhost": "http://localhost:9/x",
	}
	var dests strings.Builder
	for name, url := range targets {
		fmt.Fprintf(&dests, "  - {name: %s, type: webhook, topics: [\"*\"], config: {url: %q, secrets: [%q]}}\n", name, url, e2eSecret)
	}
	cfg := fmt.Sprintf("server: {listen: %s}\nauth: {keys: [{name: admin, key: e2e-key, role: admin}]}\nstore: {path: %s}\n"+
		"delivery: {retry: {schedule: [10ms, 10ms]}}\ntelemetry: {log: {level: error}}\ndestinations:\n%s",
		c.addr, filepath.Join(c.dir, "data"), dests.String())
	c.cfg = filepath.Join(c.dir, "sluice.yaml")
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if c.log, err = os.Create(filepath.Join(c.dir, "sluice.log")); err != nil {
		t.Fatal(err)
	}
	c.start()
	defer c.stop(syscall.SIGKILL)

	out, err := exec.CommandContext(context.Background(), sluiceBinary(t), "publish", "--server", "http://"+c.addr,
		"--key", "e2e-key", "--id", "ssrf-1", "--topic", "probe", "--data", `{}`).CombinedOutput()
	if err != nil {
		t.Fatalf("publish: %v %s", err, out)
	}
	want := map[string]string{"loopback": "loopback", "private": "private", "metadata": "metadata",
		"ipv6": "loopback", "localhost": "loopback"}
	waitFor(t, "every delivery to fail", func() bool {
		for _, d := range c.getEvent("ssrf-1")["deliveries"].([]any) {
			if d.(map[string]any)["status"] != "failed" {
				return false
			}
		}
		return true
	})
	for _, d := range c.getEvent("ssrf-1")["deliveries"].([]any) {
		dm := d.(map[string]any)
		name := dm["destination"].(map[string]any)["name"].(string)
		attempts := dm["attempts"].([]any)
		if len(attempts) != 1 {
			t.Errorf("%s: %d attempts; a refused address must not be retried", name, len(attempts))
		}
		msg := attempts[0].(map[string]any)["error"].(string)
		if !strings.Contains(msg, want[name]) || !strings.Contains(msg, "allow_cidrs") {
			t.Errorf("%s: attempt error %q does not say why (%s) and how to allow it", name, msg, want[name])
		}
	}

	// Over the API, an IP-literal URL the guard refuses is refused at create, naming the field and the fix.
	for name, url := range map[string]string{"api-metadata": "http://169.254.169.254/x", "api-private": "http://[fd00::1]/x"} {
		body := fmt.Sprintf(`{"name": %q, "type": "webhook", "topics": ["*"], "config": {"url": %q, "signing": "none"}}`, name, url)
		req, _ := http.NewRequest("POST", "http://"+c.addr+"/v1/destinations", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer e2e-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), `"field":"config.url"`) ||
			!strings.Contains(string(b), "allow_cidrs") {
			t.Errorf("create %s (%s): %d %s", name, url, resp.StatusCode, b)
		}
	}
}
