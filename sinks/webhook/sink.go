package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/template"
)

// Signing modes.
const (
	SigningStandard = "standard"
	SigningHex      = "hmac-sha256-hex"
	SigningNone     = "none"
)

// Body formats.
const (
	FormatStandard = "standard"
	FormatRaw      = "raw"
	// FormatCloudEvents is CloudEvents HTTP binary mode: attributes in ce-* headers, the data as the body.
	FormatCloudEvents = "cloudevents"
	// FormatCloudEventsStructured is CloudEvents structured mode: one application/cloudevents+json document.
	FormatCloudEventsStructured = "cloudevents-structured"
)

// DefaultSource is the CloudEvents source of events that did not arrive as CloudEvents.
const DefaultSource = "sluice"

// Defaults.
const (
	DefaultMethod          = http.MethodPost
	DefaultSignatureHeader = "X-Signature"
	DefaultTimeout         = 15 * time.Second
	DefaultUserAgent       = "Sluice/dev"
)

// Spec registers the webhook sink.
var Spec = sinks.Register("webhook", "signed HTTP POST to a URL (Standard Webhooks)", NewConfig, New)

// Config is a webhook destination's `config` block.
type Config struct {
	URL     string            `yaml:"url" required:"true" secret:"url" desc:"absolute http or https URL to deliver to; may be a template: {data.path}, {tenant}, {metadata.key}, {topic}, with :-default"`
	Method  string            `yaml:"method" default:"POST" desc:"HTTP method: POST, PUT or PATCH"`
	Headers map[string]string `yaml:"headers,omitempty" secret:"true" desc:"extra request headers, values may be templates like url; may not set webhook-id, webhook-timestamp, webhook-signature, content-type, traceparent, the signature header or (with auth) authorization"`
	Secrets []string          `yaml:"secrets,omitempty" secret:"true" desc:"signing secrets, newest first; every one signs each request so receivers can rotate (standard: whsec_ + base64 of 24–64 bytes, from sluice secret)"`
	Signing string            `yaml:"signing" default:"standard" desc:"standard (Standard Webhooks), hmac-sha256-hex or none"`
	// SignatureHeader carries the hex signature when Signing is hmac-sha256-hex.
	SignatureHeader string `yaml:"signature_header" default:"X-Signature" desc:"header for the hmac-sha256-hex signature"`
	Format          string `yaml:"format" default:"standard" desc:"body: standard ({type, timestamp, data}), raw (data only), cloudevents (binary mode: ce-* headers, data as body) or cloudevents-structured"`
	// Source is the CloudEvents source attribute. Unset, an event that arrived as a CloudEvent keeps its own
	// source, and any other event says sluice.
	Source  string         `yaml:"source,omitempty" desc:"CloudEvents source (cloudevents formats); default: the source the event arrived with, else sluice"`
	Timeout sinks.Duration `yaml:"timeout,omitempty" desc:"per-attempt timeout; 0 uses the destination's timeout (15s when neither is set)"`
	// Auth, TLS and Batch are optional blocks: nil when the destination does not set them.
	Auth  *Auth  `yaml:"auth,omitempty"`
	TLS   *TLS   `yaml:"tls,omitempty"`
	Batch *Batch `yaml:"batch,omitempty"`
	// Proxy overrides delivery.network.proxy for this destination; the URL's host is still checked by the
	// SSRF guard before the proxy is asked.
	Proxy string `yaml:"proxy,omitempty" secret:"url" desc:"HTTP proxy for this destination (http://host:port), in place of delivery.network.proxy; https is tunnelled with CONNECT"`
}

// NewConfig returns a Config with its defaults filled in.
func NewConfig() *Config {
	return &Config{
		Method:          DefaultMethod,
		Signing:         SigningStandard,
		SignatureHeader: DefaultSignatureHeader,
		Format:          FormatStandard,
	}
}

var (
	validMethods = []string{http.MethodPost, http.MethodPut, http.MethodPatch}
	validSigning = []string{SigningStandard, SigningHex, SigningNone}
	validFormats = []string{FormatStandard, FormatRaw, FormatCloudEvents, FormatCloudEventsStructured}
)

// reservedHeaders are set by the sink; letting config override them would break signatures or framing.
var reservedHeaders = map[string]string{
	"webhook-id":        "it is the event id",
	"webhook-timestamp": "it is the attempt's time",
	"webhook-signature": "it is the signature",
	"content-type":      "the sink sets it from format",
	"content-length":    "the HTTP client sets it",
	"transfer-encoding": "the HTTP client sets it",
	"connection":        "the HTTP client sets it",
	"host":              "put the host in url",
	"traceparent":       "Sluice forwards the event's trace context",
}

// Validate reports every problem of the block at once. It does no I/O and never shows a secret's value.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sinks.Errorf(path, format, args...)) }

	switch {
	case c.URL == "":
		add("url", "required; write an absolute URL such as https://example.com/hooks")
	case isTemplate(c.URL):
		if _, err := template.Compile(c.URL); err != nil {
			add("url", "%v", err)
		} else if _, problem := checkURL(shape(c.URL)); problem != "" {
			add("url", "%s (placeholders aside)", problem)
		}
	default:
		if _, problem := checkURL(c.URL); problem != "" {
			add("url", "%s", problem)
		}
	}

	if !slices.Contains(validMethods, strings.ToUpper(c.Method)) {
		add("method", "%q is not supported; use %s", c.Method, orList(validMethods))
	}

	signing := c.Signing
	switch signing {
	case SigningStandard:
		if len(c.Secrets) == 0 {
			add("secrets", "required when signing is standard; generate one with `sluice secret`")
		}
		for i, s := range c.Secrets {
			if err := ValidateSecret(s); err != nil {
				add(fmt.Sprintf("secrets[%d]", i), "%v; a standard secret is whsec_ followed by base64 of "+
					"24–64 random bytes: generate one with `sluice secret`", err)
			}
		}
	case SigningHex:
		if len(c.Secrets) == 0 {
			add("secrets", "required when signing is hmac-sha256-hex; give at least one secret")
		}
		for i, s := range c.Secrets {
			if s == "" {
				add(fmt.Sprintf("secrets[%d]", i), "is empty; give the secret the receiver checks with, or "+
					"remove the entry")
			}
		}
		if !validHeaderName(c.SignatureHeader) {
			add("signature_header", "%q is not a valid header name", c.SignatureHeader)
		} else if why, ok := reservedHeaders[strings.ToLower(c.SignatureHeader)]; ok {
			add("signature_header", "may not be %s: %s", c.SignatureHeader, why)
		}
	case SigningNone:
	default:
		add("signing", "%q is not a signing mode; use %s", signing, orList(validSigning))
	}

	ce := c.Format == FormatCloudEvents || c.Format == FormatCloudEventsStructured
	switch c.Format {
	case FormatStandard, FormatRaw, FormatCloudEvents, FormatCloudEventsStructured:
	default:
		add("format", "%q is not a format; use %s", c.Format, orList(validFormats))
	}
	if c.Source != "" && !ce {
		add("source", "applies only to the cloudevents formats; remove it or set format: cloudevents")
	}

	// Sorted so `sluice validate` lists the same problems in the same order every run.
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		path := "headers." + name
		lower := strings.ToLower(name)
		switch why, reserved := reservedHeaders[lower]; {
		case !validHeaderName(name):
			add(path, "not a valid header name")
		case reserved:
			add(path, "may not be set: %s", why)
		case ce && strings.HasPrefix(lower, "ce-"):
			add(path, "may not be set: ce-* headers carry the CloudEvents attributes")
		case signing == SigningHex && strings.EqualFold(name, c.SignatureHeader):
			add(path, "may not be set: it is the signature header")
		case !validHeaderValue(c.Headers[name]):
			add(path, "the value may not contain control characters such as newlines")
		case c.Auth != nil && lower == "authorization":
			add(path, "may not be set: auth sets it")
		case isTemplate(c.Headers[name]):
			if _, err := template.Compile(c.Headers[name]); err != nil {
				add(path, "%v", err)
			}
		}
	}
	if c.Auth != nil {
		c.Auth.validate(add)
	}
	if c.TLS != nil {
		c.TLS.validate(add)
	}
	if c.Batch != nil {
		c.validateBatch(add)
	}

	if c.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if _, err := netguard.ParseProxy(c.Proxy); err != nil {
		add("proxy", "%v", err)
	}
	return errors.Join(errs...)
}

// Sink delivers events to one webhook URL (or one per event, when the url is a template).
type Sink struct {
	cfg        Config
	dest       string
	url        string
	origin     string // scheme://host[:port], what errors name instead of the full URL
	urlT       *template.Template
	parsedURL  *url.URL // the url parsed, when it is not a template
	hostSuffix string   // the literal end of a templated url's host
	headerT    []headerTemplate
	method     string
	signer     *signer // standard signing, one key per secret, newest first
	headers    http.Header
	userAgent  string
	timeout    time.Duration
	auth       authorizer // nil without auth
	batch      *Batch     // nil: one event per request
	env        sinks.Env
	proxy      *url.URL // this destination's proxy; nil uses delivery.network.proxy
	now        func() time.Time

	// The receiver's client is rebuilt when the tls block's files change (reloadMu serialises that).
	tls      *TLS
	tlsFiles []string
	reloadMu sync.Mutex
	cur      atomic.Pointer[client]
	token    *client // the token endpoint's client, nil without oauth2
}

// client is an HTTP client with its transport, and the stamp of the TLS files it was built from.
type client struct {
	transport *http.Transport
	h1        *h1 // plain-http requests sent directly; nil with a proxy
	http      *http.Client
	stamp     string
}

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Limiter = (*Sink)(nil)
)

// New builds a webhook sink. It opens no connection (the first Send does); it reads the tls block's files, so
// a missing or broken certificate fails here, naming the field. ctx is not retained.
func New(_ context.Context, cfg *Config, env sinks.Env) (*Sink, error) {
	if cfg == nil {
		return nil, errors.New("webhook: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: invalid config: %w", err)
	}
	s := &Sink{
		cfg:       *cfg,
		dest:      env.Destination,
		url:       cfg.URL,
		method:    strings.ToUpper(cfg.Method),
		headers:   http.Header{},
		userAgent: env.UserAgent,
		timeout:   cfg.Timeout.D(),
		env:       env,
		now:       time.Now,
	}
	s.proxy, _ = netguard.ParseProxy(cfg.Proxy) // validated above
	if isTemplate(cfg.URL) {
		s.urlT = template.MustCompile(cfg.URL) // compiled by Validate
		s.hostSuffix = hostSuffix(cfg.URL)
		if u, err := url.Parse(shape(cfg.URL)); err == nil {
			s.origin = u.Scheme + "://" + u.Host
		}
	} else if u, err := url.Parse(cfg.URL); err == nil {
		s.origin = u.Scheme + "://" + u.Host
		// What http.NewRequest makes of the url, made once: requests share it (nothing on the way out changes a
		// request's URL).
		u.Host = strings.TrimSuffix(u.Host, ":")
		s.parsedURL = u
	}
	s.cfg.Secrets = append([]string(nil), cfg.Secrets...)
	if s.userAgent == "" {
		s.userAgent = DefaultUserAgent
	}
	if s.timeout == 0 {
		s.timeout = env.Timeout
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if cfg.Signing == SigningStandard {
		keys, err := decodeSecrets(cfg.Secrets)
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err) // unreachable after Validate; kept for safety
		}
		s.signer = newSigner(keys)
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Headers)) {
		if v := cfg.Headers[k]; isTemplate(v) {
			s.headerT = append(s.headerT, headerTemplate{name: http.CanonicalHeaderKey(k), t: template.MustCompile(v)})
			continue
		}
		s.headers.Set(k, cfg.Headers[k])
	}
	// Headers that are the same on every request are set once here; each request clones them.
	if _, custom := s.headers["User-Agent"]; !custom {
		s.headers.Set("User-Agent", s.userAgent)
	}
	switch {
	case cfg.Batch != nil && cfg.Batch.filled().Format == BatchNDJSON:
		s.headers.Set("Content-Type", "application/x-ndjson")
	case cfg.Format == FormatCloudEventsStructured:
		s.headers.Set("Content-Type", ceStructuredType)
	default:
		s.headers.Set("Content-Type", "application/json")
	}
	if cfg.Batch != nil {
		b := cfg.Batch.filled()
		s.batch = &b
	}

	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS != nil {
		t := *cfg.TLS
		s.tls = &t
		s.tlsFiles, _ = t.files()
		stamp := stamp(s.tlsFiles)
		tc, err := t.config()
		if err != nil {
			return nil, fmt.Errorf("webhook: %w", err)
		}
		base = tc
		s.cur.Store(s.newClient(base, stamp))
	} else {
		s.cur.Store(s.newClient(base, ""))
	}

	if a := cfg.Auth; a != nil {
		switch {
		case a.OAuth2 != nil:
			// The token endpoint is another server than the receiver: it gets the system roots, not tls.ca, and
			// no client certificate. It is reached under the same network policy (guard and proxy).
			s.token = s.newClient(&tls.Config{MinVersion: tls.VersionTLS12}, "")
			s.auth = newTokenSource(a.OAuth2, s.token.http, s.timeout, func() time.Time { return s.now() })
		case a.Basic != nil:
			s.auth = basicAuth{a.Basic.Username, a.Basic.Password}
		case a.Bearer != nil:
			s.auth = bearerAuth{"Bearer " + a.Bearer.Token}
		}
	}
	return s, nil
}

// newTransport builds the HTTP transport of every connection this sink makes, to the receiver and to an
// OAuth2 token endpoint alike. It is the one place they are made: env's network policy dials through the SSRF
// guard (every address checked at connect time) and through the configured proxy (the destination's own,
// else delivery.network.proxy; HTTP_PROXY and friends are ignored), and bounds response headers.
func (s *Sink) newTransport(tc *tls.Config) *http.Transport {
	return s.env.HTTPTransport(&http.Transport{
		// The dispatcher runs up to `concurrency` attempts per destination at once; keep that many warm
		// connections so steady traffic does not reconnect (and re-handshake TLS) on every attempt.
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tc,
		// Responses are only excerpted for the attempt log; decompression is fine but bounded by the reader.
	}, s.proxy)
}

func (s *Sink) newClient(tc *tls.Config, stamp string) *client {
	t := s.newTransport(tc)
	return &client{transport: t, h1: newH1(t), stamp: stamp, http: &http.Client{
		Transport: t,
		// A redirect would be followed to an address the operator never configured; 3xx is a permanent
		// failure instead (classify.go).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// client returns the receiver's client, rebuilt first when the tls block's files changed since it was built.
// A file that does not load (say, a certificate written before its key) leaves the current client in use, and
// is tried again on the next attempt.
func (s *Sink) client() *client {
	c := s.cur.Load()
	if len(s.tlsFiles) == 0 {
		return c
	}
	st := stamp(s.tlsFiles)
	if st == c.stamp {
		return c
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if c = s.cur.Load(); st == c.stamp {
		return c
	}
	tc, err := s.tls.config()
	if err != nil {
		return c
	}
	nc := s.newClient(tc, st)
	s.cur.Store(nc)
	// Connections made with the old certificate finish what they carry; no new request uses them.
	c.transport.CloseIdleConnections()
	c.h1.closeIdle()
	return nc
}

// Limits says a webhook carries one event per request, or fills batches up to the batch block's bounds.
func (s *Sink) Limits() sinks.Limits {
	if s.batch == nil {
		return sinks.Limits{MaxBatch: 1}
	}
	return sinks.Limits{MaxBatch: s.batch.MaxEvents, MaxBatchBytes: int(s.batch.MaxBytes), Linger: s.batch.MaxWait.D()}
}

// Close drops idle connections. It is safe while a Send runs (that request finishes on its own connection).
func (s *Sink) Close(context.Context) error {
	c := s.cur.Load()
	c.transport.CloseIdleConnections()
	c.h1.closeIdle()
	if s.token != nil {
		s.token.transport.CloseIdleConnections()
	}
	return nil
}

// orList writes "a, b or c".
func orList(list []string) string {
	if len(list) == 1 {
		return list[0]
	}
	return strings.Join(list[:len(list)-1], ", ") + " or " + list[len(list)-1]
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
