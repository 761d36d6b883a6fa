package host

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// defaultHandler hands each record to whatever slog.Default is at the time. Sluice configures logging from
// the config that the plugins help load, so the first records (a plugin started, an unpinned warning) come
// before there is a configured handler: while slog.Default is still the standard library's own, which writes
// plain text through package log, records wait in early and go to the configured handler once there is one.
// A JSON log then never begins with plain-text lines.
type defaultHandler struct {
	attrs []slog.Attr
	early *early
}

// early holds the records logged before logging was configured.
type early struct {
	mu      sync.Mutex
	initial *slog.Logger // slog.Default when the host was made
	waiting bool
	pending []earlyRecord
}

type earlyRecord struct {
	attrs []slog.Attr
	r     slog.Record
}

// maxEarly bounds what waits: a program that never configures logging gets its records, late and in the
// standard library's format, rather than a growing buffer.
const maxEarly = 1000

func newDefaultHandler() defaultHandler {
	e := &early{initial: slog.Default()}
	e.waiting = isStandardDefault(e.initial)
	return defaultHandler{early: e}
}

// isStandardDefault tells the standard library's default logger (not yet replaced by slog.SetDefault) from a
// configured one; slog does not export its type.
func isStandardDefault(l *slog.Logger) bool {
	return fmt.Sprintf("%T", l.Handler()) == "*slog.defaultHandler"
}

// flush hands the waiting records to slog.Default once it is another than the one the host started with;
// with force, whatever it is (the host is closing, or too many records wait).
func (e *early) flush(force bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.waiting || (!force && slog.Default() == e.initial) {
		return
	}
	e.waiting = false
	h := slog.Default().Handler()
	ctx := context.Background()
	for _, p := range e.pending {
		if h.Enabled(ctx, p.r.Level) {
			_ = h.WithAttrs(p.attrs).Handle(ctx, p.r)
		}
	}
	e.pending = nil
}

func (e *early) isWaiting() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waiting
}

func (h defaultHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if h.early.isWaiting() && slog.Default() == h.early.initial {
		return l >= slog.LevelDebug // the configured level is not known yet; flush asks it
	}
	return slog.Default().Handler().Enabled(ctx, l)
}

func (h defaultHandler) Handle(ctx context.Context, r slog.Record) error {
	e := h.early
	e.flush(false)
	e.mu.Lock()
	if e.waiting {
		if len(e.pending) < maxEarly {
			e.pending = append(e.pending, earlyRecord{attrs: h.attrs, r: r.Clone()})
			e.mu.Unlock()
			return nil
		}
		e.mu.Unlock()
		e.flush(true)
	} else {
		e.mu.Unlock()
	}
	return slog.Default().Handler().WithAttrs(h.attrs).Handle(ctx, r)
}

func (h defaultHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return defaultHandler{attrs: append(slices.Clone(h.attrs), as...), early: h.early}
}

func (h defaultHandler) WithGroup(string) slog.Handler { return h }
