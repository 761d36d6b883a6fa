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
	"time"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
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
	URL     string            `yaml:"url" required:"true" secret:"url" desc:"absolute http or https URL to deliver to"`
	Method  string            `yaml:"method" default:"POST" desc:"HTTP method: POST, PUT or PATCH"`
	Headers map[string]string `yaml:"headers,omitempty" secret:"true" desc:"extra request headers; may not set webhook-id, webhook-timestamp, webhook-signature, content-type or the signature header"`
	Secrets []string          `yaml:"secrets,omitempty" secret:"true" desc:"signing secrets, newest first; every one signs each request so receivers can rotate (standard: whsec_ + base64 of 24–64 bytes, from sluice secret)"`
	Signing string            `yaml:"signing" default:"standard" desc:"standard (Standard Webhooks), hmac-sha256-hex or none"`
	// SignatureHeader carries the hex signature when Signing is hmac-sha256-hex.
	SignatureHeader string `yaml:"signature_header" default:"X-Signature" desc:"header for the hmac-sha256-hex signature"`
	Format          string `yaml:"format" default:"standard" desc:"body: standard ({type, timestamp, data}), raw (data only), cloudevents (binary mode: ce-* headers, data as body) or cloudevents-structured"`
	// Source is the CloudEvents source attribute. Unset, an event that arrived as a CloudEvent keeps its own
	// source, and any other event says sluice.
	Source  string         `yaml:"source,omitempty" desc:"CloudEvents source (cloudevents formats); default: the source the event arrived with, else sluice"`
	Timeout sinks.Duration `yaml:"timeout,omitempty" desc:"per-attempt timeout; 0 uses the destination's timeout (15s when neither is set)"`
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
}

// Validate reports every problem of the block at once. It does no I/O and never shows a secret's value.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sinks.Errorf(path, format, args...)) }

	switch u, err := url.Parse(c.URL); {
	case c.URL == "":
		add("url", "required; write an absolute URL such as https://example.com/hooks")
	case err != nil:
		add("url", "not a URL (%v); write it like https://example.com/hooks", classify.URLErrMsg(err))
	case u.Scheme != "http" && u.Scheme != "https":
		add("url", "must be an absolute http or https URL, such as https://example.com/hooks")
	case u.Host == "" || u.Hostname() == "":
		add("url", "has no host; write it like https://example.com/hooks")
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
		}
	}

	if c.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if _, err := netguard.ParseProxy(c.Proxy); err != nil {
		add("proxy", "%v", err)
	}
	return errors.Join(errs...)
}

// Sink delivers events to one webhook URL.
type Sink struct {
	cfg       Config
	url       string
	origin    string // scheme://host[:port], what errors name instead of the full URL
	method    string
	signer    *signer // standard signing, one key per secret, newest first
	headers   http.Header
	userAgent string
	timeout   time.Duration
	transport *http.Transport
	client    *http.Client
	budget    *sinks.Budget // bytes of in-flight attempts, shared by every sink (sinks.InFlight)
	now       func() time.Time
}

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Limiter = (*Sink)(nil)
)

// New builds a webhook sink. It does no I/O: connections are opened by the first Send. ctx is not retained.
func New(_ context.Context, cfg *Config, env sinks.Env) (*Sink, error) {
	if cfg == nil {
		return nil, errors.New("webhook: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: invalid config: %w", err)
	}
	s := &Sink{
		cfg:       *cfg,
		url:       cfg.URL,
		method:    strings.ToUpper(cfg.Method),
		headers:   http.Header{},
		userAgent: env.UserAgent,
		timeout:   cfg.Timeout.D(),
		budget:    sinks.InFlight,
		now:       time.Now,
	}
	if u, err := url.Parse(cfg.URL); err == nil {
		s.origin = u.Scheme + "://" + u.Host
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
	for k, v := range cfg.Headers {
		s.headers.Set(k, v)
	}
	// Headers that are the same on every request are set once here; each request clones them.
	if _, custom := s.headers["User-Agent"]; !custom {
		s.headers.Set("User-Agent", s.userAgent)
	}
	switch cfg.Format {
	case FormatCloudEventsStructured:
		s.headers.Set("Content-Type", ceStructuredType)
	default:
		s.headers.Set("Content-Type", "application/json")
	}

	proxy, _ := netguard.ParseProxy(cfg.Proxy) // validated above
	// HTTPTransport ignores HTTP_PROXY: only the configured proxy is used, and the target is judged first.
	s.transport = env.HTTPTransport(&http.Transport{
		// The dispatcher runs up to `concurrency` attempts per destination at once; keep that many warm
		// connections so steady traffic does not reconnect (and re-handshake TLS) on every attempt.
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		// Responses are only excerpted for the attempt log; decompression is fine but bounded by the reader.
	}, proxy)
	s.client = &http.Client{
		Transport: s.transport,
		// A redirect would be followed to an address the operator never configured; 3xx is a permanent
		// failure instead (classify.go).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s, nil
}

// Limits says a webhook carries one event per request.
func (s *Sink) Limits() sinks.Limits { return sinks.Limits{MaxBatch: 1} }

// Close drops idle connections. It is safe while a Send runs (that request finishes on its own connection).
func (s *Sink) Close(context.Context) error {
	s.transport.CloseIdleConnections()
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
