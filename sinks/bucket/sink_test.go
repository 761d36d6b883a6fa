package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

const (
	testKeyID  = "AKIAIOSFODNN7EXAMPLE"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

func TestSpec(t *testing.T) {
	if Spec.Type != "bucket" || Spec.Doc == "" {
		t.Fatalf("spec %q %q", Spec.Type, Spec.Doc)
	}
	cfg, ok := Spec.Config().(*Config)
	if !ok {
		t.Fatalf("Spec.Config returns %T", Spec.Config())
	}
	if cfg.Key != DefaultKey || cfg.MaxEvents != 1000 || cfg.MaxBytes != 8<<20 || cfg.MaxAge.D() != time.Minute || cfg.Gzip {
		t.Fatalf("defaults %+v", cfg)
	}
	fields := map[string]sinks.Field{}
	for _, f := range sinks.Describe(cfg) {
		fields[f.Name] = f
	}
	for _, name := range []string{"url", "key", "max_events", "max_bytes", "max_age", "gzip", "access_key_id", "secret_access_key"} {
		if fields[name].Description == "" {
			t.Errorf("field %s missing or undescribed: %+v", name, fields[name])
		}
	}
	// The described defaults are the ones NewConfig fills in, so docs and behaviour cannot drift.
	if !fields["url"].Required || fields["key"].Default != DefaultKey || fields["max_events"].Default != fmt.Sprint(DefaultMaxEvents) ||
		fields["max_bytes"].Default != fmt.Sprint(DefaultMaxBytes) || fields["max_age"].Default != sinks.Duration(DefaultMaxAge).String() ||
		fields["max_age"].Type != "duration" || !fields["secret_access_key"].Secret {
		t.Errorf("tags not as described: %+v", fields)
	}
}

func TestMaskSecrets(t *testing.T) {
	c := NewConfig()
	c.URL, c.AccessKeyID, c.SecretAccessKey = "s3://b", testKeyID, testSecret
	printed := fmt.Sprint(sinks.MaskSecrets(c))
	if strings.Contains(printed, testSecret[:20]) || strings.Contains(printed, testKeyID[:12]) {
		t.Fatalf("masked config shows a secret: %s", printed)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want []string
	}{
		{"s3", func(c *Config) { c.URL = "s3://events?region=eu-west-1" }, nil},
		{"s3 compatible", func(c *Config) {
			c.URL = "s3://events?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1&disable_https=true"
		}, nil},
		{"s3 static keys", func(c *Config) { c.URL, c.AccessKeyID, c.SecretAccessKey = "s3://events", testKeyID, testSecret }, nil},
		{"s3 kms", func(c *Config) { c.URL = "s3://events?ssetype=aws:kms&kmskeyid=alias/x" }, nil},
		{"gs", func(c *Config) { c.URL = "gs://events" }, nil},
		{"gs anonymous", func(c *Config) { c.URL = "gs://events?anonymous=true" }, nil},
		{"file", func(c *Config) { c.URL = "file:///var/lib/sluice/events" }, nil},
		{"per-event key", func(c *Config) { c.URL, c.Key = "file:///x", "{topic}/{id}.json" }, nil},
		{"missing url", func(c *Config) {}, []string{"url: required"}},
		{"bad url", func(c *Config) { c.URL = "s3://[x" }, []string{"url: not a URL"}},
		{"no scheme", func(c *Config) { c.URL = "events" }, []string{"url: has no scheme"}},
		{"bad scheme", func(c *Config) { c.URL = "azblob://events" }, []string{`url: scheme "azblob" is not supported`}},
		{"no bucket", func(c *Config) { c.URL = "s3://?region=eu-west-1" }, []string{"url: names no bucket"}},
		{"path", func(c *Config) { c.URL = "s3://events/raw" }, []string{"url: must name only the bucket, not a path; put the prefix in key, e.g. key: raw/"}},
		{"userinfo", func(c *Config) { c.URL = "s3://key:secret@events" }, []string{"url: must not carry user:password"}},
		{"unknown param", func(c *Config) { c.URL = "s3://events?secret_key=x" }, []string{`url: unknown query parameter "secret_key"`}},
		{"bad bool", func(c *Config) { c.URL = "s3://events?use_path_style=yes" }, []string{"url: use_path_style must be true or false"}},
		{"bad endpoint", func(c *Config) { c.URL = "s3://events?endpoint=localhost:9000" }, []string{"url: endpoint must be an absolute http or https URL"}},
		{"bad region", func(c *Config) { c.URL = "s3://events?region=EU" }, []string{`url: region "EU" is not a region name`}},
		{"bad checksum", func(c *Config) { c.URL = "s3://events?request_checksum_calculation=never" }, []string{"url: request_checksum_calculation must be"}},
		{"gs param", func(c *Config) { c.URL = "gs://events?region=x" }, []string{`url: unknown query parameter "region" for gs://; use anonymous`}},
		{"file host", func(c *Config) { c.URL = "file://var/lib/x" }, []string{"url: a file URL has no host"}},
		{"file root", func(c *Config) { c.URL = "file:///" }, []string{"url: must name an absolute directory other than /"}},
		{"file query", func(c *Config) { c.URL = "file:///x?create_dir=true" }, []string{"url: a file URL takes no query parameters"}},
		{"empty key", func(c *Config) { c.URL, c.Key = "file:///x", "" }, []string{"key: required"}},
		{"bad key", func(c *Config) { c.URL, c.Key = "file:///x", "{topic}/{nope}" }, []string{"key: unknown placeholder {nope}"}},
		{"key would overwrite", func(c *Config) { c.URL, c.Key = "file:///x", "{topic}/{yyyy}.ndjson" }, []string{"key: must contain {batch_id}"}},
		{"absolute key", func(c *Config) { c.URL, c.Key = "file:///x", "/{batch_id}" }, []string{"key: must not start with /"}},
		{"limits", func(c *Config) { c.URL, c.MaxEvents, c.MaxBytes, c.MaxAge = "file:///x", 0, 2<<30, -1 },
			[]string{"max_events: must be between 1", "max_bytes: must be between 1", "max_age: must not be negative"}},
		{"long age", func(c *Config) { c.URL, c.MaxAge = "file:///x", sinks.Duration(48*time.Hour) }, []string{"max_age: must be at most 24h"}},
		{"half keys", func(c *Config) { c.URL, c.AccessKeyID = "s3://events", testKeyID }, []string{"secret_access_key: required when access_key_id is set"}},
		{"keys for gs", func(c *Config) { c.URL, c.AccessKeyID, c.SecretAccessKey = "gs://events", testKeyID, testSecret },
			[]string{"access_key_id: only s3:// URLs take static keys"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfig()
			tc.mod(c)
			var got []string
			for _, e := range unjoin(c.Validate()) {
				var fe *sinks.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%v is %T, want *sinks.FieldError", e, e)
				}
				got = append(got, fe.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d errors %q, want %d %q", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("error %d: %q does not contain %q", i, got[i], tc.want[i])
				}
				if strings.Contains(got[i], "secret") && strings.Contains(got[i], "key:secret") {
					t.Errorf("error repeats credentials from the URL: %q", got[i])
				}
			}
		})
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func fileSink(t *testing.T, mod func(c *Config)) (*Sink, string) {
	t.Helper()
	dir := t.TempDir()
	c := NewConfig()
	c.URL = "file://" + dir
	if mod != nil {
		mod(c)
	}
	s, err := New(context.Background(), c, sinks.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, dir
}

func TestLimits(t *testing.T) {
	s, _ := fileSink(t, func(c *Config) { c.MaxEvents, c.MaxBytes, c.MaxAge = 500, 1<<20, sinks.Duration(5*time.Second) })
	if l := s.Limits(); l.MaxBatch != 500 || l.MaxBatchBytes != 1<<20 || l.Linger != 5*time.Second || l.MaxEventBytes != 0 {
		t.Errorf("limits %+v", l)
	}
}

func TestObjectKey(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ev := &event.Event{ID: "e1", Topic: "case.updated", Time: time.Date(2025, 12, 31, 23, 59, 0, 0, time.UTC),
		Data: json.RawMessage(`{"path":"/etc/x","long":"` + strings.Repeat("x", 1100) + `","ctl":"a\nb"}`)}
	for _, tc := range []struct {
		key  string
		gzip bool
		want string // or "error: substring"
	}{
		{DefaultKey, false, "case.updated/2025/12/31/23/B1.ndjson"},
		{DefaultKey, true, "case.updated/2025/12/31/23/B1.ndjson.gz"},
		{"{topic}/{batch_id}.ndjson.gz", true, "case.updated/B1.ndjson.gz"},
		{"{data.path}/{batch_id}", false, "error: starts with /"},
		{"{data.long}/{batch_id}", false, "error: object keys take at most 1024"},
		{"{data.ctl}/{batch_id}", false, "error: control characters"},
		{"{data.nope}/{batch_id}", false, "error: {data.nope}"},
	} {
		s, _ := fileSink(t, func(c *Config) { c.Key, c.Gzip = tc.key, tc.gzip })
		got, err := s.objectKey(ev, "B1", now)
		if e, ok := strings.CutPrefix(tc.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), e) {
				t.Errorf("%s: got %q, %v; want an error with %q", tc.key, got, err, e)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s gzip=%v: got %q, %v; want %q", tc.key, tc.gzip, got, err, tc.want)
		}
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	if _, err := New(context.Background(), NewConfig(), sinks.Env{}); err == nil || !strings.Contains(err.Error(), "url") {
		t.Fatalf("New with an invalid config: %v", err)
	}
	if _, err := New(context.Background(), nil, sinks.Env{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}
