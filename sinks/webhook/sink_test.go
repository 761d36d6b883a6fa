package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/sinks"
)

func TestSpecDefaults(t *testing.T) {
	if Spec.Type != "webhook" || Spec.Doc == "" {
		t.Fatalf("spec %q %q", Spec.Type, Spec.Doc)
	}
	cfg, ok := Spec.Config().(*Config)
	if !ok {
		t.Fatalf("Spec.Config returns %T", Spec.Config())
	}
	want := Config{Method: "POST", Signing: "standard", SignatureHeader: "X-Signature", Format: "standard"}
	if cfg.Method != want.Method || cfg.Signing != want.Signing || cfg.SignatureHeader != want.SignatureHeader ||
		cfg.Format != want.Format || cfg.Timeout != 0 || cfg.URL != "" || cfg.Secrets != nil {
		t.Fatalf("defaults %+v", cfg)
	}
}

func TestDescribe(t *testing.T) {
	fields := map[string]sinks.Field{}
	for _, f := range sinks.Describe(NewConfig()) {
		fields[f.Name] = f
	}
	for _, name := range []string{"url", "method", "headers", "secrets", "signing", "signature_header", "format",
		"timeout"} {
		if fields[name].Description == "" {
			t.Errorf("field %s missing or undescribed: %+v", name, fields[name])
		}
	}
	if !fields["url"].Required || !fields["secrets"].Secret || fields["method"].Default != "POST" ||
		fields["signing"].Default != "standard" || fields["timeout"].Type != "duration" {
		t.Errorf("tags not as described: %+v", fields)
	}
}

func TestMaskSecrets(t *testing.T) {
	cfg := validConfig()
	cfg.Secrets = []string{secretA, secretB}
	printed := fmt.Sprint(sinks.MaskSecrets(cfg))
	if strings.Contains(printed, secretA[10:]) || strings.Contains(printed, secretB[10:]) {
		t.Fatalf("masked config shows a secret: %s", printed)
	}
}

func validConfig() *Config {
	c := NewConfig()
	c.URL = "https://example.com/hooks"
	c.Secrets = []string{secretA}
	return c
}

// badSecret values are refused by Validate; none may show up in any message.
var badSecrets = []string{
	"whsec_" + strings.Repeat("QUJD", 5), // 15 bytes: too short
	"not-a-whsec-secret-value",
	"whsec_%%%%notbase64%%%%",
	"whsec_" + strings.Repeat("QUJD", 30), // 90 bytes: too long
}

func TestValidate(t *testing.T) {
	type want struct{ path, msg string }
	tests := []struct {
		name string
		edit func(c *Config)
		want []want
	}{
		{"valid", func(c *Config) {}, nil},
		{"valid hex", func(c *Config) { c.Signing = SigningHex; c.Secrets = []string{"plain"} }, nil},
		{"valid none without secrets", func(c *Config) { c.Signing = SigningNone; c.Secrets = nil }, nil},
		{"valid raw put", func(c *Config) { c.Format = FormatRaw; c.Method = "put" }, nil},
		{"valid headers", func(c *Config) { c.Headers = map[string]string{"Authorization": "Bearer x", "User-Agent": "me"} }, nil},
		{"missing url", func(c *Config) { c.URL = "" }, []want{{"url", "required"}}},
		{"relative url", func(c *Config) { c.URL = "/hooks" }, []want{{"url", "absolute http or https"}}},
		{"ftp url", func(c *Config) { c.URL = "ftp://example.com/x" }, []want{{"url", "absolute http or https"}}},
		{"no host", func(c *Config) { c.URL = "http:///x" }, []want{{"url", "has no host"}}},
		{"unparsable url", func(c *Config) { c.URL = "http://exa mple.com/" }, []want{{"url", "not a URL"}}},
		{"method", func(c *Config) { c.Method = "GET" }, []want{{"method", `"GET" is not supported; use POST, PUT or PATCH`}}},
		{"standard without secrets", func(c *Config) { c.Secrets = nil },
			[]want{{"secrets", "required when signing is standard; generate one with `sluice secret`"}}},
		{"bad standard secrets", func(c *Config) { c.Secrets = append([]string{secretA}, badSecrets...) }, []want{
			{"secrets[1]", "decodes to 15 bytes, not 24–64"},
			{"secrets[2]", "does not start with whsec_"},
			{"secrets[3]", "not valid base64"},
			{"secrets[4]", "decodes to 90 bytes"},
		}},
		{"empty standard secret", func(c *Config) { c.Secrets = []string{""} }, []want{{"secrets[0]", "is empty"}}},
		{"hex without secrets", func(c *Config) { c.Signing = SigningHex; c.Secrets = nil },
			[]want{{"secrets", "required when signing is hmac-sha256-hex"}}},
		{"hex empty secret", func(c *Config) { c.Signing = SigningHex; c.Secrets = []string{"a", ""} },
			[]want{{"secrets[1]", "is empty"}}},
		{"hex bad header", func(c *Config) { c.Signing = SigningHex; c.SignatureHeader = "X Sig" },
			[]want{{"signature_header", "not a valid header name"}}},
		{"hex reserved header", func(c *Config) { c.Signing = SigningHex; c.SignatureHeader = "Webhook-Signature" },
			[]want{{"signature_header", "may not be Webhook-Signature"}}},
		{"unknown signing", func(c *Config) { c.Signing = "rsa" },
			[]want{{"signing", `"rsa" is not a signing mode; use standard, hmac-sha256-hex or none`}}},
		{"cloudevents", func(c *Config) { c.Format = "cloudevents" }, nil},
		{"cloudevents-structured with source", func(c *Config) { c.Format, c.Source = "cloudevents-structured", "urn:x" }, nil},
		{"source without cloudevents", func(c *Config) { c.Source = "urn:x" },
			[]want{{"source", "applies only to the cloudevents formats"}}},
		{"ce header with cloudevents", func(c *Config) { c.Format, c.Headers = "cloudevents", map[string]string{"ce-type": "x"} },
			[]want{{"headers.ce-type", "ce-* headers carry the CloudEvents attributes"}}},
		{"unknown format", func(c *Config) { c.Format = "xml" },
			[]want{{"format", `"xml" is not a format; use standard, raw, cloudevents or cloudevents-structured`}}},
		{"reserved headers", func(c *Config) {
			c.Headers = map[string]string{"Webhook-Id": "x", "content-type": "text/plain", "webhook-signature": "v1,x",
				"WEBHOOK-TIMESTAMP": "1", "Bad Name": "x", "X-Ok": "line\nbreak"}
		}, []want{
			{"headers.Bad Name", "not a valid header name"},
			{"headers.WEBHOOK-TIMESTAMP", "may not be set"},
			{"headers.Webhook-Id", "may not be set"},
			{"headers.X-Ok", "control characters"},
			{"headers.content-type", "may not be set: the sink sets it from format"},
			{"headers.webhook-signature", "may not be set"},
		}},
		{"hex signature header in headers", func(c *Config) {
			c.Signing, c.Secrets, c.Headers = SigningHex, []string{"k"}, map[string]string{"x-signature": "v0=1"}
		}, []want{{"headers.x-signature", "it is the signature header"}}},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, []want{{"timeout", "must not be negative"}}},
		{"everything at once", func(c *Config) { c.URL, c.Signing, c.Format = "", "x", "y" },
			[]want{{"url", ""}, {"signing", ""}, {"format", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(c)
			err := c.Validate()
			var got []*sinks.FieldError
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var fe *sinks.FieldError
					if !errors.As(e, &fe) {
						t.Fatalf("error %v is not a *sinks.FieldError", e)
					}
					got = append(got, fe)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Validate() = %v\nwant %d problems: %v", err, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if got[i].Path != w.path || !strings.Contains(got[i].Msg, w.msg) {
					t.Errorf("problem %d = %q: %q, want %q containing %q", i, got[i].Path, got[i].Msg, w.path, w.msg)
				}
			}
			if err != nil {
				for _, s := range append(badSecrets, secretA) {
					if strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) {
						t.Fatalf("an error message shows a secret: %v", err)
					}
				}
			}
		})
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	c := validConfig()
	c.URL = "nope"
	if _, err := New(context.Background(), c, sinks.Env{}); err == nil || !strings.Contains(err.Error(), "url:") {
		t.Fatalf("New with a bad url: %v", err)
	}
	if _, err := Spec.New(context.Background(), c, sinks.Env{}); err == nil {
		t.Fatal("Spec.New accepted a bad config")
	}
	s, err := Spec.New(context.Background(), validConfig(), sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if l := s.(sinks.Limiter).Limits(); l.MaxBatch != 1 {
		t.Fatalf("limits %+v", l)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close twice is fine (the contract asks for Close after anything).
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNewTimeoutAndUserAgent(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		cfg, env sinks.Duration
		want     string
	}{
		{0, 0, "15s"},
		{0, sinks.Duration(3e9), "3s"},
		{sinks.Duration(2e9), sinks.Duration(3e9), "2s"},
	}
	for _, tt := range tests {
		c := validConfig()
		c.Timeout = tt.cfg
		s, err := New(ctx, c, sinks.Env{Timeout: tt.env.D()})
		if err != nil {
			t.Fatal(err)
		}
		if s.timeout.String() != tt.want {
			t.Errorf("cfg %v env %v: timeout %v, want %s", tt.cfg, tt.env, s.timeout, tt.want)
		}
		if s.userAgent != "Sluice/dev" {
			t.Errorf("user agent %q", s.userAgent)
		}
	}
	s, _ := New(ctx, validConfig(), sinks.Env{UserAgent: "Sluice/1.2.3"})
	if s.userAgent != "Sluice/1.2.3" {
		t.Errorf("user agent %q", s.userAgent)
	}
	if c := s.cur.Load(); c.transport.Proxy != nil || c.transport.MaxIdleConnsPerHost < 16 || c.http.CheckRedirect == nil {
		t.Error("transport must ignore env proxies, pool per host and not follow redirects")
	}
}
