package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeRefusesWeakKeysBeyondLoopback: `serve` on a non-loopback address with the example's dev-admin-key,
// or any key under 24 characters, exits 1 before listening and says how to set a key.
func TestServeRefusesWeakKeysBeyondLoopback(t *testing.T) {
	for name, key := range map[string]string{"dev-admin-key": "dev-admin-key", "short": "abcdefghijklmnopqrstuvw"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "sluice.yaml")
			src := fmt.Sprintf("server: {listen: \"0.0.0.0:0\"}\nauth: {keys: [{name: admin, key: %q, role: admin}]}\nstore: {path: %s}\n",
				key, filepath.Join(dir, "data"))
			if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(sluiceBinary(t), "serve", "--config", cfg)
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("serve with a weak key beyond loopback: %v, want exit 1; stderr:\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "SLUICE_ADMIN_KEY") || !strings.Contains(stderr.String(), "auth.keys[0].key") {
				t.Fatalf("the refusal does not say how to set a key:\n%s", stderr.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
				t.Fatalf("serve opened the store before refusing: %v", err)
			}
		})
	}
}

// TestServeReadTimeoutEndsSlowBodies: an authenticated client that sends its body slower than
// server.read_timeout loses the connection instead of holding it forever.
func TestServeReadTimeoutEndsSlowBodies(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "sluice.yaml")
	src := fmt.Sprintf("server: {listen: %q, read_timeout: 1s}\nauth: {keys: [{name: admin, key: slow-key, role: admin}]}\nstore: {path: %s}\n",
		addr, filepath.Join(dir, "data"))
	if err := os.WriteFile(cfg, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBinary(t), "serve", "--config", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitReady(t, addr)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer slow-key\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	// A guard against hanging forever, not a timed assertion: the server must end this on its own.
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		if res.StatusCode < 400 {
			t.Fatalf("a body that never arrived was answered %d", res.StatusCode)
		}
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the slow connection open: %v", err)
	}
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice did not become ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
