package host

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
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
