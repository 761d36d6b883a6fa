package sinks

import (
	"context"
	"errors"
	"net/url"
	"sort"
	"strings"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
)

// minPart is the shortest secret part of a URL (user, password, query value) an error is scrubbed of:
// shorter values ("1", "eu") would mangle every message they happen to appear in.
const minPart = 6

// Scrub returns s with errors that never show the secrets of cfg (as SecretsOf finds them): a secret value
// appearing in an error's text is replaced by its masked form, a URL by MaskURL's. Classes, retry delays and
// per-event results are kept. The attempt log, logs and the API all show attempt errors, so this is where a
// sink that echoes its config (an SDK error quoting a URL) is kept from leaking it.
func Scrub(s Sink, cfg Config) Sink {
	r := scrubberFor(cfg)
	if r == nil {
		return s
	}
	sc := &scrubbed{Sink: s, r: r}
	if l, ok := s.(Limiter); ok {
		return &scrubbedLimiter{scrubbed: sc, l: l}
	}
	return sc
}

func scrubberFor(cfg Config) *strings.Replacer {
	values := SecretValues(cfg)
	repl := map[string]string{}
	for _, v := range values {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Host != "" {
			repl[v] = schema.MaskURL(v)
			if u.User != nil {
				addPart(repl, u.User.Username())
				if pw, ok := u.User.Password(); ok {
					addPart(repl, pw)
				}
			}
			for _, vs := range u.Query() {
				for _, qv := range vs {
					addPart(repl, qv)
				}
			}
			continue
		}
		repl[v] = Mask(v)
	}
	if len(repl) == 0 {
		return nil
	}
	// Longest first, so a URL is replaced whole before its parts are.
	keys := make([]string, 0, len(repl))
	for k := range repl {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	pairs := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		pairs = append(pairs, k, repl[k])
	}
	return strings.NewReplacer(pairs...)
}

func addPart(repl map[string]string, v string) {
	if len(v) >= minPart {
		repl[v] = Mask(v)
	}
}

type scrubbed struct {
	Sink
	r *strings.Replacer
}

func (s *scrubbed) Send(ctx context.Context, batch []event.Event) error {
	return s.clean(s.Sink.Send(ctx, batch))
}

func (s *scrubbed) clean(err error) error {
	if err == nil {
		return nil
	}
	var be *BatchError
	if errors.As(err, &be) {
		out := &BatchError{Errs: make([]error, len(be.Errs))}
		for i, e := range be.Errs {
			out.Errs[i] = s.clean(e)
		}
		return out
	}
	msg := err.Error()
	if clean := s.r.Replace(msg); clean != msg {
		return &scrubbedError{msg: clean, err: err}
	}
	return err
}

// scrubbedError shows the scrubbed text and unwraps to the sink's error, so its class and any sentinel
// (context.Canceled) are still found.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

type scrubbedLimiter struct {
	*scrubbed
	l Limiter
}

func (s *scrubbedLimiter) Limits() Limits { return s.l.Limits() }
