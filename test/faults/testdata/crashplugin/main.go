// Command crashplugin is the fault suite's plugin sink: it appends each event id it receives to a file and
// crashes (exits without answering) on every crash_every-th send, so Sluice must restart it and resend what the
// crash cut short. It uses only the SDK's public sdk.Serve API, as a third-party plugin would.
package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"

	"github.com/sluicehq/sluice/plugins/sdk"
)

// Config is the destination's config block.
type Config struct {
	File       string `yaml:"file" required:"true" desc:"file each received event id is appended to, one a line"`
	CrashEvery int    `yaml:"crash_every" default:"50" desc:"exit without answering on every n-th send"`
}

type sink struct {
	cfg   Config
	mu    sync.Mutex
	sends int
	f     *os.File
}

func main() {
	sdk.Serve("crashy", func(ctx context.Context, cfg Config) (sdk.Sink, error) {
		if cfg.CrashEvery <= 0 {
			return nil, errors.New("crash_every must be positive")
		}
		f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		return &sink{cfg: cfg, f: f}, nil
	})
}

func (s *sink) Send(ctx context.Context, batch []sdk.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, ev := range batch {
		b.WriteString(ev.ID)
		b.WriteByte('\n')
	}
	// Written before the crash: the receiver has the events, Sluice never hears so — the duplicates a crash makes.
	if _, err := s.f.WriteString(b.String()); err != nil {
		return sdk.Retryable(err, 0)
	}
	s.sends++
	if s.sends%s.cfg.CrashEvery == 0 {
		os.Exit(3)
	}
	return nil
}

func (s *sink) Close(context.Context) error { return s.f.Close() }
