package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite generated docs (docs/sinks.md)")

// docs/sinks.md is generated from the config structs; it fails when stale, naming the command that refreshes it.
func TestSinksDocs(t *testing.T) {
	want := sinksMarkdown(registry())
	if *update {
		if err := os.WriteFile(sinksDocPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(sinksDocPath)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("docs/sinks.md is stale or missing (%v); regenerate it with:\n\tgo test ./cmd/sluice -run TestSinksDocs -update", err)
	}
}

func runSinksCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = runSinks(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSinksCommand(t *testing.T) {
	code, out, _ := runSinksCmd()
	if code != 0 {
		t.Fatalf("sluice sinks: exit %d", code)
	}
	reg := registry()
	for _, typ := range reg.Types() {
		spec, _ := reg.Lookup(typ)
		if !strings.Contains(out, typ+" ") || !strings.Contains(out, spec.Doc) {
			t.Errorf("sluice sinks does not list %s with its doc line:\n%s", typ, out)
		}
	}

	code, out, _ = runSinksCmd("describe", "rabbitmq")
	if code != 0 {
		t.Fatalf("describe rabbitmq: exit %d", code)
	}
	for _, want := range []string{"NAME", "DEFAULT", "REQUIRED", "SECRET", "routing_key", "{topic}"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe rabbitmq lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[0] == "url" && (f[3] != "yes" || f[4] != "yes") {
			t.Errorf("url should be required and secret: %q", line)
		}
	}

	// Flags after the type, and JSON.
	code, out, _ = runSinksCmd("describe", "pubsub", "--json")
	var info sinkInfo
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Type != "pubsub" || len(info.Fields) < 4 {
		t.Fatalf("describe pubsub --json: exit %d\n%s", code, out)
	}

	if code, _, errs := runSinksCmd("describe", "nope"); code != 1 || !strings.Contains(errs, `no sink type "nope"`) {
		t.Errorf("unknown type: exit %d, %q", code, errs)
	}
	if code, _, _ := runSinksCmd("describe"); code != 2 {
		t.Errorf("describe without a type: exit %d, want 2", code)
	}
	if code, _, _ := runSinksCmd("--config", filepath.Join(t.TempDir(), "absent.yaml")); code != 1 {
		t.Errorf("a missing config: exit %d, want 1", code)
	}
	if code, _, _ := runSinksCmd("--config", "../../config.example.yaml"); code != 0 {
		t.Errorf("config.example.yaml: exit %d", code)
	}
}

// With --config, the plugin sinks the file declares are listed and described beside the built-in ones.
func TestSinksCommandPlugins(t *testing.T) {
	path, digest := natsPlugin(t)
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	cfg := fmt.Sprintf("auth:\n  keys: [{name: admin, key: k, role: admin}]\nplugins:\n  - {name: nats, path: %s, sha256: %s}\n", path, digest)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runSinksCmd("--config", file)
	if code != 0 || !strings.Contains(out, "nats") || !strings.Contains(out, "(plugin)") {
		t.Fatalf("sluice sinks --config: exit %d\n%s\n%s", code, out, errs)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "nats ") && strings.Count(line, "(plugin") != 1 {
			t.Errorf("the plugin's line says plugin %d times: %q", strings.Count(line, "(plugin"), line)
		}
	}
	code, out, errs = runSinksCmd("describe", "nats", "--config", file)
	if code != 0 || !strings.Contains(out, "NAME") {
		t.Fatalf("describe nats: exit %d\n%s\n%s", code, out, errs)
	}
	// The plugin's own fields, from its config struct's tags, as for a built-in sink.
	for _, want := range []string{"url ", "subject ", "{topic}", "password ", "connect_timeout "} {
		if !strings.Contains(out, want) {
			t.Errorf("describe nats lacks %q:\n%s", want, out)
		}
	}
	if code, _, _ := runSinksCmd("describe", "nats"); code != 1 {
		t.Errorf("describe nats without --config: exit %d, want 1", code)
	}
}
