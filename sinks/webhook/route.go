package webhook

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
	"github.com/sluicehq/sluice/sinks/template"
)

// A url or header value may be a template (sinks/template, the language of the queue sinks' names): a literal
// `{` makes it one, `{{` is a literal brace. The url's templated host parts are checked after rendering, so an
// event's data can choose among hosts but cannot add a user, a port or a path to the host.

// route is where one event goes: its rendered url and header values.
type route struct {
	url    string
	parsed *url.URL    // url, parsed; nil when it is rendered for each event
	origin string      // scheme://host[:port], what errors name instead of the full URL
	header [][2]string // rendered templated headers, in the order of s.headerT
}

func (r route) key() string {
	var b strings.Builder
	b.WriteString(r.url)
	for _, h := range r.header {
		b.WriteByte(0)
		b.WriteString(h[1])
	}
	return b.String()
}

var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

// isTemplate reports whether s has placeholders (and so must be compiled).
func isTemplate(s string) bool { return strings.ContainsAny(s, "{}") }

// shape replaces each placeholder of a url template by a host-safe stand-in, for checking the literal parts.
func shape(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "{{", ""), "}}", "")
	return placeholder.ReplaceAllString(s, "x")
}

// checkURL reports what is wrong with an absolute http(s) URL, "" when nothing is.
func checkURL(raw string) (u *url.URL, problem string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Sprintf("not a URL (%v); write it like https://example.com/hooks", classify.URLErrMsg(err))
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, "must be an absolute http or https URL, such as https://example.com/hooks"
	case u.Host == "" || u.Hostname() == "":
		return nil, "has no host; write it like https://example.com/hooks"
	case u.User != nil:
		return nil, "may not hold a user or password; use auth.basic"
	}
	return u, ""
}

// hostSuffix is the literal end of a url template's host (".partner.example" in
// "https://{data.region}.partner.example/hooks"); a rendered host must keep it.
func hostSuffix(tmpl string) string {
	rest := tmpl
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host := rest[:end]
	if i := strings.LastIndex(host, "}"); i >= 0 {
		return host[i+1:]
	}
	return host
}

var hostChars = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$`)

// route renders the url and header templates for e. A placeholder that cannot be filled is a permanent
// failure naming the field and the path.
func (s *Sink) route(e *event.Event) (route, error) {
	r := route{url: s.url, parsed: s.parsedURL, origin: s.origin}
	if s.urlT != nil {
		raw, err := s.urlT.Render(e, "", s.now())
		if err != nil {
			return r, sinks.Permanent(fmt.Errorf("url: %w", err))
		}
		u, problem := checkURL(raw)
		if problem == "" && (!hostChars.MatchString(u.Host) || !strings.HasSuffix(u.Host, s.hostSuffix)) {
			problem = "the rendered host is not a host name ending in " + s.hostSuffix
		}
		if problem != "" {
			// The rendered URL is not shown: its query may hold a token. The template is the operator's own.
			return r, sinks.Permanent(fmt.Errorf("url: template %s rendered for event %s: %s", s.urlT.String(), e.ID, problem))
		}
		r.url, r.origin = raw, u.Scheme+"://"+u.Host
	}
	if len(s.headerT) > 0 {
		r.header = make([][2]string, len(s.headerT))
		for i, h := range s.headerT {
			v, err := h.t.Render(e, "", s.now())
			if err != nil {
				return r, sinks.Permanent(fmt.Errorf("headers.%s: %w", h.name, err))
			}
			if !validHeaderValue(v) {
				return r, sinks.Permanent(fmt.Errorf("headers.%s: the rendered value for event %s holds control characters", h.name, e.ID))
			}
			r.header[i] = [2]string{h.name, v}
		}
	}
	return r, nil
}

type headerTemplate struct {
	name string
	t    *template.Template
}
