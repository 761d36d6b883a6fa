package host

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
)

// TestLogIsJSONWithOnePluginKey: with a JSON handler configured, everything the host, go-plugin and the
// plugin log — the plugin's slog records and a plain line it writes to stderr alike — arrives as JSON
// records of that handler, each naming the plugin once.
func TestLogIsJSONWithOnePluginKey(t *testing.T) {
	f := mustStart(t, Options{})
	f.sink("file: " + f.out)
	waitUntil(t, "the plugin's plain stderr line", 5*time.Second, func() bool {
		return strings.Contains(f.logs.String(), "memsink: a plain line on stderr")
	})
	f.host.Close() // go-plugin logs the process's exit, naming it
	var sawExit bool
	for _, line := range strings.Split(strings.TrimSpace(f.logs.String()), "\n") {
		keys, err := topLevelKeys(line)
		if err != nil {
			t.Errorf("not a JSON record: %q (%v)", line, err)
			continue
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %q twice in %s", k, line)
			}
			seen[k] = true
		}
		if !seen["plugin"] {
			t.Errorf("a record does not name the plugin: %s", line)
		}
		sawExit = sawExit || strings.Contains(line, `"msg":"plugin process exited"`)
	}
	if !sawExit {
		t.Errorf("go-plugin's exit record is missing:\n%s", f.logs.String())
	}
}

// topLevelKeys lists an object's keys in order, duplicates included (encoding/json keeps only the last).
func topLevelKeys(line string) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(line)))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	_, err := dec.Token()
	return keys, err
}

// TestEarlyRecordsWaitForTheConfiguredHandler: a host made before the program configures logging (as
// `sluice serve` must: the config that says how to log is loaded with the plugins' help) writes nothing as
// the standard library's plain text; its first records reach the handler configured afterwards.
func TestEarlyRecordsWaitForTheConfiguredHandler(t *testing.T) {
	prev := slog.Default()
	if !isStandardDefault(prev) {
		t.Skip("slog.Default is not the standard library's here")
	}
	plain := &syncBuffer{}
	oldOut, oldFlags := log.Writer(), log.Flags()
	log.SetOutput(plain) // where the standard default handler writes
	t.Cleanup(func() {
		slog.SetDefault(prev)
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
	})

	h := New(Options{}) // follows slog.Default
	p := filepath.Join(binDir, "memsink")
	if _, errs := h.Load([]config.Plugin{{Name: "memsink", Path: p, SHA256: digest(t, p)}}); len(errs) > 0 {
		t.Fatal(errs)
	}
	configured := &syncBuffer{}
	slog.SetDefault(slog.New(slog.NewJSONHandler(configured, nil)))
	h.Close()

	if plain.String() != "" {
		t.Errorf("plain-text lines before logging was configured:\n%s", plain.String())
	}
	var started bool
	for _, line := range strings.Split(strings.TrimSpace(configured.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if rec["msg"] == "plugin started" && rec["plugin"] == "memsink" && rec["level"] == "INFO" {
			started = true
		}
		if rec["level"] == "DEBUG" {
			t.Errorf("a debug record passed the configured handler's info level: %s", line)
		}
	}
	if !started {
		t.Errorf("the early \"plugin started\" record did not reach the configured handler:\n%s", configured.String())
	}
}
