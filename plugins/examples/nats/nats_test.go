package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/plugins/sdk"
	"github.com/sluicehq/sluice/plugins/sdk/sdktest"
)

// The tests here use sdktest, as a plugin author would. Sluice's conformance suite runs this plugin through
// Sluice's plugin host from Sluice's own module (plugins/host/nats_test.go): this module needs only the SDK.

func TestConfigChecks(t *testing.T) {
	p := sdktest.Start(t, newPlugin())
	d := p.Describe()
	if d.Name != "nats" || d.Limits.MaxBatch != 100 {
		t.Errorf("describe = %+v", d)
	}
	for _, tc := range []struct{ block, want string }{
		{"url: nats://127.0.0.1:4222", ""},
		{"subject: x", "url: is required"},
		{"url: http://x", `url: "http://x" is not a NATS URL`},
		{"url: nats://u:hunter2@x:4222/\nurl2: 1", `url2: unknown key "url2"`},
		{"url: nats://x:4222\nsubject: '{nope}'", "subject: "},
		{"url: nats://x:4222\ncreate_stream: true", "stream: is required when create_stream is true"},
		{"url: nats://x:4222\ncreate_stream: true\nstream: S\nsubject: '{topic}'", "stream_subjects: cannot be derived"},
		{"url: nats://x:4222\nmax_batch: lots", `max_batch: must be an integer, got "lots"`},
		{"url: nats://x:4222\nusername: u", "password: username and password go together"},
	} {
		err := p.Validate(tc.block)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.block, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want %q", tc.block, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error shows the password: %v", tc.block, err)
		}
	}
}

func TestServerDownIsRetryable(t *testing.T) {
	p := sdktest.Start(t, newPlugin())
	_, err := p.Open(context.Background(), "url: nats://"+deadAddr(t)+"\nconnect_timeout: 500ms")
	if c, _ := sdk.Classify(err); err == nil || c != sdk.ClassRetryable {
		t.Errorf("open with the server down = %v (%v), want retryable", err, c)
	}
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func natsURL(t testing.TB) string {
	u := os.Getenv("SLUICE_TEST_NATS_URL")
	if u == "" {
		t.Skip("SLUICE_TEST_NATS_URL is not set (.ci/services/nats.sh starts NATS and sets it)")
	}
	return u
}

// TestBuiltOnlyOnTheSDK keeps the example honest: besides the standard library and the NATS client it
// imports only plugins/sdk, as a third-party plugin would.
func TestBuiltOnlyOnTheSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range strings.Fields(string(out)) {
		switch {
		case !strings.Contains(imp, "."): // standard library
		case imp == "github.com/sluicehq/sluice/plugins/sdk":
		case strings.HasPrefix(imp, "github.com/nats-io/nats.go"):
		default:
			t.Errorf("the example imports %s; a plugin builds only on plugins/sdk", imp)
		}
	}
}
