package bucket

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
	"github.com/sluicehq/sluice/sinks/template"
)

// Defaults.
const (
	DefaultKey       = "{topic}/{yyyy}/{mm}/{dd}/{hh}/{batch_id}.ndjson"
	DefaultMaxEvents = 1000
	DefaultMaxBytes  = 8 << 20
	DefaultMaxAge    = 60 * time.Second

	// MaxKeyBytes is S3's limit on an object key (GCS allows the same).
	MaxKeyBytes = 1024
	// maxMaxBytes bounds max_bytes: a batch is held in memory while it is written.
	maxMaxBytes = 1 << 30
	// maxMaxEvents bounds max_events, for the same reason.
	maxMaxEvents = 1_000_000
)

// Spec registers the bucket sink.
var Spec = sinks.Register("bucket", "NDJSON objects in S3 (or an S3-compatible server), Google Cloud Storage or a local directory", NewConfig, New)

// Config is a bucket destination's `config` block.
type Config struct {
	URL       string         `yaml:"url" required:"true" secret:"url" desc:"where objects go: s3://BUCKET?region=eu-west-1 (S3-compatible servers: add &endpoint=https://…&use_path_style=true), gs://BUCKET or file:///DIR"`
	Key       string         `yaml:"key" default:"{topic}/{yyyy}/{mm}/{dd}/{hh}/{batch_id}.ndjson" desc:"object key template; it must contain {batch_id} (or {id}) so objects never overwrite each other; with gzip, .gz is appended unless the key ends in .gz"`
	MaxEvents int            `yaml:"max_events" default:"1000" desc:"most events in one batch of objects"`
	MaxBytes  int            `yaml:"max_bytes" default:"8388608" desc:"most bytes of event data in one batch of objects (8 MiB)"`
	MaxAge    sinks.Duration `yaml:"max_age" default:"1m" desc:"longest an event waits for its batch to fill before the objects are written"`
	Gzip      bool           `yaml:"gzip,omitempty" desc:"gzip each object (content type application/gzip)"`
	// Static S3 credentials; without them the AWS default chain applies (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ?profile=, web identity, ECS/EC2 roles).
	AccessKeyID     string `yaml:"access_key_id,omitempty" secret:"true" desc:"s3 only: static access key id; give it with secret_access_key, or leave both out to use the AWS default credential chain"`
	SecretAccessKey string `yaml:"secret_access_key,omitempty" secret:"true" desc:"s3 only: static secret access key, with access_key_id"`
	Proxy           string `yaml:"proxy,omitempty" secret:"url" desc:"s3 and gs: HTTP proxy for this destination (http://host:port), in place of delivery.network.proxy"`
}

// NewConfig returns a Config with its defaults filled in.
func NewConfig() *Config {
	return &Config{
		Key:       DefaultKey,
		MaxEvents: DefaultMaxEvents,
		MaxBytes:  DefaultMaxBytes,
		MaxAge:    sinks.Duration(DefaultMaxAge),
	}
}

// The query parameters each scheme accepts: gocloud.dev's for s3 (see gocloud.dev/aws and s3blob), and for gs
// only anonymous (credentials come from GOOGLE_APPLICATION_CREDENTIALS or the environment's default account).
var (
	s3Params = []string{"region", "endpoint", "use_path_style", "s3ForcePathStyle", "disable_https", "profile",
		"anonymous", "dualstack", "fips", "rate_limiter_capacity",
		"request_checksum_calculation", "response_checksum_validation", "ssetype", "kmskeyid", "accelerate", "role"}
	s3BoolParams = []string{"use_path_style", "s3ForcePathStyle", "disable_https", "anonymous", "dualstack", "fips",
		"accelerate"}
	gsParams = []string{"anonymous"}

	regionRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
)

// Validate reports every problem of the block at once. It does no I/O and never shows a secret's value.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sinks.Errorf(path, format, args...)) }
	if _, err := netguard.ParseProxy(c.Proxy); err != nil {
		add("proxy", "%v", err)
	}

	scheme := ""
	switch u, err := url.Parse(c.URL); {
	case c.URL == "":
		add("url", "required; write s3://BUCKET?region=eu-west-1, gs://BUCKET or file:///DIR")
	case err != nil:
		add("url", "not a URL (%v); write s3://BUCKET?region=eu-west-1, gs://BUCKET or file:///DIR", classify.URLErrMsg(err))
	default:
		scheme = u.Scheme
		for _, p := range checkURL(u) {
			add("url", "%s", p)
		}
	}

	if k, err := template.Compile(c.Key); c.Key == "" {
		add("key", "required; the default is %s", DefaultKey)
	} else if err != nil {
		add("key", "%v", err)
	} else {
		if !k.Uses("batch_id") && !k.Uses("id") {
			add("key", "must contain {batch_id} (one object per batch) or {id} (one per event): without either, "+
				"a later batch would overwrite an earlier one's object")
		}
		if strings.HasPrefix(c.Key, "/") {
			add("key", "must not start with /: object keys are relative to the bucket")
		}
	}

	if c.MaxEvents < 1 || c.MaxEvents > maxMaxEvents {
		add("max_events", "must be between 1 and %d", maxMaxEvents)
	}
	if c.MaxBytes < 1 || c.MaxBytes > maxMaxBytes {
		add("max_bytes", "must be between 1 and %d (1 GiB): a batch is held in memory while it is written", maxMaxBytes)
	}
	if c.MaxAge < 0 {
		add("max_age", "must not be negative")
	} else if c.MaxAge.D() > 24*time.Hour {
		add("max_age", "must be at most 24h: events wait this long in the batch before they are written")
	}

	switch {
	case c.AccessKeyID != "" && c.SecretAccessKey == "":
		add("secret_access_key", "required when access_key_id is set; give both, or neither to use the AWS "+
			"default credential chain")
	case c.AccessKeyID == "" && c.SecretAccessKey != "":
		add("access_key_id", "required when secret_access_key is set; give both, or neither to use the AWS "+
			"default credential chain")
	}
	if (c.AccessKeyID != "" || c.SecretAccessKey != "") && scheme != "" && scheme != "s3" {
		add("access_key_id", "only s3:// URLs take static keys; for gs:// set GOOGLE_APPLICATION_CREDENTIALS")
	}
	return errors.Join(errs...)
}

// checkURL lists what is wrong with a bucket URL.
func checkURL(u *url.URL) []string {
	var out []string
	switch u.Scheme {
	case "s3", "gs":
		name := "BUCKET"
		if u.Host != "" {
			name = u.Host
		}
		if u.Host == "" {
			out = append(out, fmt.Sprintf("names no bucket; write %s://BUCKET", u.Scheme))
		}
		if u.User != nil {
			out = append(out, "must not carry user:password; give credentials in access_key_id and "+
				"secret_access_key (s3) or GOOGLE_APPLICATION_CREDENTIALS (gs)")
		}
		if p := strings.Trim(u.Path, "/"); p != "" {
			out = append(out, fmt.Sprintf("must name only the bucket, not a path; put the prefix in key, e.g. "+
				"key: %s/{topic}/{batch_id}.ndjson with url: %s://%s", p, u.Scheme, name))
		}
		allowed, bools := s3Params, s3BoolParams
		if u.Scheme == "gs" {
			allowed, bools = gsParams, gsParams
		}
		q := u.Query()
		for _, k := range sortedKeys(q) {
			v := q.Get(k)
			switch {
			case !slices.Contains(allowed, k):
				out = append(out, fmt.Sprintf("unknown query parameter %q for %s://; use %s", k, u.Scheme,
					strings.Join(allowed, ", ")))
			case slices.Contains(bools, k):
				if _, err := strconv.ParseBool(v); err != nil {
					out = append(out, fmt.Sprintf("%s must be true or false", k))
				}
			case k == "endpoint":
				if e, err := url.Parse(v); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
					out = append(out, "endpoint must be an absolute http or https URL, e.g. endpoint=https://minio.internal:9000")
				} else if e.User != nil {
					out = append(out, "endpoint must not carry user:password; give credentials in access_key_id and secret_access_key")
				}
			case k == "region":
				if !regionRe.MatchString(v) {
					out = append(out, fmt.Sprintf("region %q is not a region name; write it like eu-west-1", v))
				}
			case k == "request_checksum_calculation" || k == "response_checksum_validation":
				if v != "when_supported" && v != "when_required" {
					out = append(out, fmt.Sprintf("%s must be when_supported or when_required", k))
				}
			case k == "rate_limiter_capacity":
				if n, err := strconv.Atoi(v); err != nil || n < 0 {
					out = append(out, "rate_limiter_capacity must be a whole number")
				}
			case k == "ssetype":
				if v != "AES256" && v != "aws:kms" && v != "aws:kms:dsse" {
					out = append(out, "ssetype must be AES256, aws:kms or aws:kms:dsse")
				}
			case k == "role":
				if !strings.HasPrefix(v, "arn:") {
					out = append(out, "role must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
				}
			}
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			out = append(out, "a file URL has no host; write file:///absolute/dir (three slashes)")
		}
		if !strings.HasPrefix(u.Path, "/") || strings.Trim(u.Path, "/") == "" {
			out = append(out, "must name an absolute directory other than /, e.g. file:///var/lib/sluice/events")
		}
		if u.RawQuery != "" {
			out = append(out, "a file URL takes no query parameters")
		}
	case "":
		out = append(out, "has no scheme; write s3://BUCKET?region=eu-west-1, gs://BUCKET or file:///DIR")
	default:
		out = append(out, fmt.Sprintf("scheme %q is not supported; use s3://, gs:// or file://", u.Scheme))
	}
	return out
}

func sortedKeys(q url.Values) []string {
	out := make([]string, 0, len(q))
	for k := range q {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Sink writes batches of events as NDJSON objects to one bucket.
type Sink struct {
	scheme string
	where  string // scheme://bucket (or the directory), what errors name
	key    *template.Template
	gzip   bool
	limits sinks.Limits

	bucket *blob.Bucket
	// release frees what opening the bucket took (clients, idle connections) after the bucket is closed.
	release func()

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool

	now     func() time.Time
	batchID func() string
}

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Limiter = (*Sink)(nil)
)

// New builds a bucket sink and opens the bucket: for s3 it reads the AWS shared config and credential settings,
// for gs it finds the Google default credentials, for file it creates the directory if missing. It writes no
// object and checks no bucket: the first Send finds out. ctx is not retained.
func New(ctx context.Context, cfg *Config, env sinks.Env) (*Sink, error) {
	if cfg == nil {
		return nil, errors.New("bucket: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bucket: invalid config: %w", err)
	}
	u, _ := url.Parse(cfg.URL) // Validate parsed it
	s := &Sink{
		scheme: u.Scheme,
		where:  u.Scheme + "://" + u.Host + u.Path,
		key:    template.MustCompile(cfg.Key), // Validate compiled it
		gzip:   cfg.Gzip,
		limits: sinks.Limits{MaxBatch: cfg.MaxEvents, MaxBatchBytes: cfg.MaxBytes, Linger: cfg.MaxAge.D()},
		now:    time.Now,
		// A UUIDv7: unique per Send, and sorted by time, so a listing of a prefix is in write order.
		batchID: event.NewID,
	}
	var err error
	switch u.Scheme {
	case "s3":
		s.bucket, s.release, err = openS3(ctx, u, cfg, env)
	case "gs":
		s.bucket, s.release, err = openGCS(ctx, u, cfg, env)
	case "file":
		s.bucket, err = openFile(u)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket: open %s: %w", s.where, err)
	}
	return s, nil
}

// Limits lets the dispatcher fill a batch up to max_events events and max_bytes of data, holding the first
// event at most max_age for more to arrive.
func (s *Sink) Limits() sinks.Limits { return s.limits }

// Close closes the bucket. A Send running meanwhile either finishes its object or fails retryably; later
// Sends fail retryably. It is safe to call more than once.
func (s *Sink) Close(context.Context) error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.bucket != nil {
			s.closeErr = s.bucket.Close()
		}
		if s.release != nil {
			s.release()
		}
	})
	return s.closeErr
}
