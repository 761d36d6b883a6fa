package config_test

import (
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/sinks"
)

// TestRelativePluginPathIsNextToTheConfig: a relative plugins[].path names a file beside the config file,
// wherever sluice was started from; an absolute one is kept.
func TestRelativePluginPathIsNextToTheConfig(t *testing.T) {
	dir := t.TempDir()
	src := `plugins:
  - {name: nats, path: ./bin/sluice-nats, allow_unpinned: true}
  - {name: other, path: /opt/sluice/other, allow_unpinned: true}
`
	var got []config.Plugin
	load := func(ps []config.Plugin) ([]sinks.Spec, map[int]error) {
		got = ps
		return nil, nil
	}
	_, _ = config.ParseWithPlugins(filepath.Join(dir, "sluice.yaml"), []byte(src), noEnv, reg(), load)
	if len(got) != 2 {
		t.Fatalf("the loader got %v", got)
	}
	if want := filepath.Join(dir, "bin", "sluice-nats"); got[0].Path != want {
		t.Errorf("relative path resolved to %s, want %s", got[0].Path, want)
	}
	if got[1].Path != "/opt/sluice/other" {
		t.Errorf("absolute path became %s", got[1].Path)
	}

	// A config named without a directory: the plugin beside it, never a bare name exec would look up in PATH.
	t.Chdir(dir)
	_, _ = config.ParseWithPlugins("sluice.yaml", []byte("plugins:\n  - {name: nats, path: sluice-nats, allow_unpinned: true}\n"), noEnv, reg(), load)
	if want := filepath.Join(dir, "sluice-nats"); len(got) != 1 || got[0].Path != want {
		t.Errorf("the loader got %v, want the path %s", got, want)
	}
}
