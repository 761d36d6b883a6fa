package main

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk"
)

// Config is a nats destination's `config:` block.
type Config struct {
	URL            string        `yaml:"url" required:"true" secret:"url" desc:"NATS server URL; several, comma separated, for a cluster: nats://10.0.0.1:4222,nats://10.0.0.2:4222"`
	Subject        string        `yaml:"subject" default:"{topic}" desc:"subject template: {topic}, {tenant}, {id}, {data.path}, {metadata.key}, with :-default"`
	Stream         string        `yaml:"stream" desc:"the JetStream stream that must capture the subjects; publishes are checked to land in it"`
	CreateStream   bool          `yaml:"create_stream" desc:"create the stream when it does not exist (an existing stream is never changed)"`
	StreamSubjects []string      `yaml:"stream_subjects" desc:"subjects of a created stream; default: the subject template's fixed prefix followed by >"`
	Username       string        `yaml:"username" desc:"user for user/password authentication"`
	Password       string        `yaml:"password" secret:"true" desc:"password for user/password authentication"`
	Token          string        `yaml:"token" secret:"true" desc:"token authentication"`
	CredsFile      string        `yaml:"creds_file" desc:"NATS credentials file (JWT and nkey seed)"`
	ConnectTimeout time.Duration `yaml:"connect_timeout" default:"2s" desc:"how long a connection attempt may take"`
	MaxBatch       int           `yaml:"max_batch" default:"100" desc:"most events per send; a batch is published at once and acknowledged per event"`

	subject *sdk.Template
}

var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks the block without I/O and compiles the subject template.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sdk.Errorf(path, format, args...)) }
	for _, u := range strings.Split(c.URL, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" || (pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss") {
			add("url", "%q is not a NATS URL; write it like nats://127.0.0.1:4222", redact(u))
		}
	}
	t, err := sdk.CompileTemplate(c.Subject)
	if err != nil {
		add("subject", "%v", err)
	} else {
		c.subject = t
	}
	if c.Stream != "" && !streamName.MatchString(c.Stream) {
		add("stream", "%q: a stream name uses letters, digits, '-' and '_'", c.Stream)
	}
	if c.CreateStream {
		switch {
		case c.Stream == "":
			add("stream", "is required when create_stream is true: the name of the stream to create")
		case len(c.StreamSubjects) == 0 && t != nil:
			if _, ok := defaultStreamSubject(c.Subject); !ok {
				add("stream_subjects", "cannot be derived from subject %q (it does not start with a fixed prefix ending in '.'); list them, e.g. [\"sluice.>\"]", c.Subject)
			}
		}
	}
	if c.Token != "" && (c.Username != "" || c.Password != "") {
		add("token", "use either token or username/password, not both")
	}
	if (c.Username == "") != (c.Password == "") {
		add("password", "username and password go together; give both or neither")
	}
	if c.ConnectTimeout <= 0 {
		add("connect_timeout", "must be a positive duration such as 2s")
	}
	if c.MaxBatch < 1 || c.MaxBatch > 1000 {
		add("max_batch", "must be between 1 and 1000")
	}
	return errors.Join(errs...)
}

// defaultStreamSubject turns "sluice.{topic}" into "sluice.>" and a subject without placeholders into itself.
func defaultStreamSubject(subject string) (string, bool) {
	i := strings.IndexByte(subject, '{')
	if i < 0 {
		return subject, true
	}
	prefix := subject[:i]
	if prefix == "" || !strings.HasSuffix(prefix, ".") {
		return "", false
	}
	return prefix + ">", true
}

// redact drops a password written into a URL before it reaches an error message.
func redact(u string) string {
	pu, err := url.Parse(strings.TrimSpace(u))
	if err != nil || pu.User == nil {
		if strings.Contains(u, "@") {
			return "(a URL with credentials)"
		}
		return u
	}
	return pu.Redacted()
}

func (c *Config) streamSubjects() []string {
	if len(c.StreamSubjects) > 0 {
		return c.StreamSubjects
	}
	s, _ := defaultStreamSubject(c.Subject)
	return []string{s}
}

func (c *Config) String() string { return fmt.Sprintf("nats %s stream %q", redact(c.URL), c.Stream) }
