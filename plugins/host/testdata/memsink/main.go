// Command memsink is the host tests' plugin: it appends each delivered event id to a file.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk"
)

type Config struct {
	File    string        `yaml:"file" required:"true" desc:"file to append delivered event ids to"`
	FailIDs []string      `yaml:"fail_ids" desc:"event ids that fail permanently"`
	Delay   time.Duration `yaml:"delay" default:"0s" desc:"how long each send takes"`
	Token   string        `yaml:"token" secret:"true" desc:"a secret that must never be printed"`
	Mode    string        `yaml:"mode" default:"ok" desc:"ok, or refuse (open fails permanently)"`
	EnvFile string        `yaml:"env_file" desc:"file the plugin writes its environment to at open"`
	Mirror  string        `yaml:"mirror" secret:"url" desc:"a URL whose userinfo and query values are secret (never dialed)"`
	TLS     struct {
		CAFile string `yaml:"ca_file" desc:"CA bundle"`
	} `yaml:"tls"`
}

func (c *Config) Validate() error {
	var errs []error
	if c.Mode != "ok" && c.Mode != "refuse" {
		errs = append(errs, sdk.Errorf("mode", "%q is not a mode; use ok or refuse", c.Mode))
	}
	if c.Token == "bad" {
		errs = append(errs, sdk.Errorf("token", "is not accepted"))
	}
	return errors.Join(errs...)
}

type sink struct {
	cfg Config
	mu  sync.Mutex
}

func (s *sink) Send(ctx context.Context, batch []sdk.Event) error {
	if s.cfg.Delay > 0 {
		select {
		case <-time.After(s.cfg.Delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.cfg.File, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	errs := make([]error, len(batch))
	failed := false
	for i, e := range batch {
		if slices.Contains(s.cfg.FailIDs, e.ID) {
			errs[i] = sdk.Permanent(fmt.Errorf("event %s is refused", e.ID))
			failed = true
			continue
		}
		fmt.Fprintln(f, e.ID)
	}
	sdk.Note(ctx, 200, []byte("ok"))
	if failed {
		return &sdk.BatchError{Errs: errs}
	}
	return nil
}

func (s *sink) Close(context.Context) error { return nil }

func main() {
	if f := os.Getenv("MEMSINK_CRASH_FILE"); f != "" {
		if _, err := os.Stat(f); err == nil {
			fmt.Fprintln(os.Stderr, "memsink: crash file present, exiting")
			os.Exit(3)
		}
	}
	sdk.Serve("memsink", func(ctx context.Context, cfg Config) (sdk.Sink, error) {
		if cfg.Mode == "refuse" {
			return nil, sdk.Permanent(errors.New("credentials refused"))
		}
		if cfg.EnvFile != "" {
			if err := os.WriteFile(cfg.EnvFile, []byte(strings.Join(os.Environ(), "\n")), 0o600); err != nil {
				return nil, err
			}
		}
		slog.Info("memsink opened", "destination", sdk.InfoFrom(ctx).Destination)
		// Not every library a plugin uses logs through slog: a plain line must reach Sluice's log too.
		fmt.Fprintln(os.Stderr, "memsink: a plain line on stderr")
		return &sink{cfg: cfg}, nil
	}, sdk.WithDoc("test sink writing ids to a file"), sdk.WithLimits(sdk.Limits{MaxBatch: 50}))
}
