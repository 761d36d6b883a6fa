package host

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// slogger adapts go-plugin's hclog.Logger to slog: go-plugin's own messages and every line the plugin
// writes to stderr (JSON lines keep their level and fields) land in Sluice's log with the plugin's name.
type slogger struct {
	log  *slog.Logger
	name string
}

var _ hclog.Logger = (*slogger)(nil)

func newSlogger(l *slog.Logger) *slogger { return &slogger{log: l} }

const levelTrace = slog.LevelDebug - 4

func toSlog(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (s *slogger) Log(level hclog.Level, msg string, args ...any) {
	lv := toSlog(level)
	if !s.log.Enabled(context.Background(), lv) {
		return
	}
	out := make([]any, 0, len(args))
	for i := 0; i+1 < len(args); i += 2 {
		key := args[i]
		switch key {
		case "timestamp": // the plugin's own stamp: slog stamps the record already
			continue
		case "plugin": // go-plugin's name for the executable; the logger's "plugin" already names it
			key = "executable"
		}
		out = append(out, key, args[i+1])
	}
	if len(args)%2 == 1 {
		out = append(out, "extra", args[len(args)-1])
	}
	s.log.Log(context.Background(), lv, msg, out...)
}

func (s *slogger) Trace(msg string, args ...any) { s.Log(hclog.Trace, msg, args...) }
func (s *slogger) Debug(msg string, args ...any) { s.Log(hclog.Debug, msg, args...) }
func (s *slogger) Info(msg string, args ...any)  { s.Log(hclog.Info, msg, args...) }
func (s *slogger) Warn(msg string, args ...any)  { s.Log(hclog.Warn, msg, args...) }
func (s *slogger) Error(msg string, args ...any) { s.Log(hclog.Error, msg, args...) }

func (s *slogger) enabled(l hclog.Level) bool { return s.log.Enabled(context.Background(), toSlog(l)) }
func (s *slogger) IsTrace() bool              { return s.enabled(hclog.Trace) }
func (s *slogger) IsDebug() bool              { return s.enabled(hclog.Debug) }
func (s *slogger) IsInfo() bool               { return s.enabled(hclog.Info) }
func (s *slogger) IsWarn() bool               { return s.enabled(hclog.Warn) }
func (s *slogger) IsError() bool              { return s.enabled(hclog.Error) }

func (s *slogger) ImpliedArgs() []any { return nil }

func (s *slogger) With(args ...any) hclog.Logger {
	return &slogger{log: s.log.With(args...), name: s.name}
}

func (s *slogger) Name() string { return s.name }

// Named keeps the plugin's name: go-plugin names the stderr logger after the executable, which the
// "plugin" attribute already says better.
func (s *slogger) Named(name string) hclog.Logger {
	if s.name != "" {
		name = s.name + "." + name
	}
	return &slogger{log: s.log, name: name}
}

func (s *slogger) ResetNamed(name string) hclog.Logger { return &slogger{log: s.log, name: name} }

func (s *slogger) SetLevel(hclog.Level) {}

func (s *slogger) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if s.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

func (s *slogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(s.StandardWriter(nil), "", 0)
}

func (s *slogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return newLineWriter(s, "") }

// lineWriter logs each line written to it as one record (a partial line waits for its end).
type lineWriter struct {
	s      *slogger
	stream string // "stdout" or "stderr" of the plugin, or "" for go-plugin's own standard logger

	mu  sync.Mutex
	buf []byte
}

func newLineWriter(s *slogger, stream string) *lineWriter { return &lineWriter{s: s, stream: stream} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a line without end: log what there is rather than grow without bound
		w.emit(string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

func (w *lineWriter) emit(line string) {
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return
	}
	if w.stream == "" {
		w.s.Info(line)
		return
	}
	w.s.Info(line, "stream", w.stream)
}
