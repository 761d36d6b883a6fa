package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// funcs are the template helpers. None returns template.HTML from data: everything a user or a receiver
// wrote is escaped by html/template.
var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"ms": func(d time.Duration) string {
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	},
	"statusIcon": func(s store.Status) string {
		switch s {
		case store.Delivered:
			return "✓"
		case store.Failed:
			return "✕"
		case store.Pending:
			return "…"
		case store.Skipped:
			return "↷"
		}
		return "?"
	},
	"httpClass": func(code int) string {
		switch {
		case code >= 200 && code < 300:
			return "ok"
		case code == 0:
			return "bad"
		case code >= 500 || code == 429:
			return "warn"
		}
		return "bad"
	},
	"excerpt": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return strings.ToValidUTF8(s[:n], "") + "…"
	},
	"string": func(b []byte) string { return string(b) },
	"join":   strings.Join,
	"list":   func(xs ...string) []string { return xs },
	"spaced": func(s string) string { return strings.Replace(s, "T", " ", 1) },
	// sentence ends a field description with a full stop, so a "Default: …" after it reads well.
	"sentence": func(s string) string {
		s = strings.TrimSpace(s)
		if s == "" || strings.HasSuffix(s, ".") || strings.HasSuffix(s, ")") && strings.HasSuffix(strings.TrimSuffix(s, ")"), ".") {
			return s
		}
		return s + "."
	},
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
}
