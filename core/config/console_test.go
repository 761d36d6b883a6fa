package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/config"
)

func TestConsoleDefaults(t *testing.T) {
	cfg, err := config.Parse("f.yaml", []byte(base), noEnv, reg())
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Console.Enabled || cfg.Console.SessionTTL.D() != 12*time.Hour || len(cfg.Console.FrameAncestors) != 0 {
		t.Fatalf("console defaults: %+v", cfg.Console)
	}
	cfg, err = config.Parse("f.yaml", []byte(base+"console: {enabled: false, session_ttl: 1h, frame_ancestors: [\"https://app.example.com\", \"'self'\"]}\n"), noEnv, reg())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Console.Enabled || cfg.Console.SessionTTL.D() != time.Hour || len(cfg.Console.FrameAncestors) != 2 {
		t.Fatalf("console as written: %+v", cfg.Console)
	}
}

func TestConsoleErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"console: {session_ttl: 0s}", "console.session_ttl: must be"},
		{"console: {session_ttl: 10s}", "console.session_ttl: 10s is too short"},
		{"console: {frame_ancestors: [\"https://a.example.com\", \"*; script-src *\"]}", "console.frame_ancestors[1]: "},
		{"console: {public_url: \"ftp://x\"}", "console.public_url: "},
		{"console: {enabeld: true}", "console.enabeld: unknown key"},
	}
	for _, c := range cases {
		_, err := config.Parse("f.yaml", []byte(base+c.src+"\n"), noEnv, reg())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.src, err, c.want)
		}
	}
}
