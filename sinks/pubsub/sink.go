package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// Limits of the Pub/Sub service the sink checks before publishing, so one bad event fails alone instead of
// taking its whole publish request down with an InvalidArgument.
const (
	// MaxBatch is the most events one Send publishes (one publish request).
	MaxBatch = 100
	// maxMessageBytes is the service's limit on one message (data plus attributes), less room for framing.
	maxMessageBytes  = 10_000_000 - 1024
	maxAttributes    = 100
	maxAttrKeyBytes  = 256
	maxAttrValBytes  = 1024
	maxOrderKeyBytes = 1024
)

// Spec registers the pubsub sink.
var Spec = sinks.Register("pubsub", "publish to a Google Cloud Pub/Sub topic", NewConfig, New)

// Config is a pubsub destination's `config` block.
type Config struct {
	Project         string `yaml:"project" required:"true" desc:"Google Cloud project id that owns the topic"`
	Topic           string `yaml:"topic" required:"true" desc:"topic id (or projects/P/topics/T); Sluice never creates it"`
	CredentialsFile string `yaml:"credentials_file,omitempty" desc:"path to a service account (or other Google credentials) JSON file; empty uses Application Default Credentials"`
	EmulatorHost    string `yaml:"emulator_host,omitempty" desc:"host:port of a Pub/Sub emulator (plaintext, no credentials); empty honours PUBSUB_EMULATOR_HOST"`
}

// NewConfig returns a Config with its defaults filled in (there are none to fill).
func NewConfig() *Config { return &Config{} }

var (
	projectID = regexp.MustCompile(`^([a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{1,61}[a-z0-9]$`)
	topicID   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$`)
)

// Validate reports every problem of the block at once. It does no I/O.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sinks.Errorf(path, format, args...)) }

	switch {
	case c.Project == "":
		add("project", "required: the Google Cloud project id that owns the topic, such as my-project")
	case !projectID.MatchString(c.Project):
		add("project", "%q is not a project id: lowercase letters, digits and hyphens, starting with a letter", c.Project)
	}
	id := c.Topic
	if p, t, ok := parseTopicName(c.Topic); ok {
		id = t
		if c.Project != "" && p != c.Project {
			add("topic", "names project %q but project is %q; give the topic id alone, or make them agree", p, c.Project)
		}
	} else if strings.Contains(c.Topic, "/") {
		add("topic", "%q: give a topic id such as orders, or the full name projects/PROJECT/topics/TOPIC", c.Topic)
		id = ""
	}
	switch {
	case c.Topic == "":
		add("topic", "required: the topic id, such as case-events")
	case id == "":
	case !topicID.MatchString(id) || strings.HasPrefix(strings.ToLower(id), "goog"):
		add("topic", "%q is not a topic id: 3–255 letters, digits and - _ . ~ + %%, starting with a letter and not with goog", id)
	}
	if c.EmulatorHost != "" {
		if _, _, err := net.SplitHostPort(c.EmulatorHost); err != nil {
			add("emulator_host", "must be host:port such as 127.0.0.1:8085")
		}
		if c.CredentialsFile != "" {
			add("credentials_file", "the emulator takes no credentials; remove credentials_file or emulator_host")
		}
	}
	return errors.Join(errs...)
}

// parseTopicName splits projects/P/topics/T.
func parseTopicName(s string) (project, topic string, ok bool) {
	parts := strings.Split(s, "/")
	if len(parts) == 4 && parts[0] == "projects" && parts[2] == "topics" && parts[1] != "" && parts[3] != "" {
		return parts[1], parts[3], true
	}
	return "", "", false
}

// Sink publishes to one topic.
type Sink struct {
	cfg     Config
	topic   string // projects/P/topics/T
	timeout time.Duration
	dial    sinks.DialFunc
	log     *slog.Logger
	// orderingKey gives an event's ordering key ("" for none). See orderingKey in send.go.
	orderingKey func(*event.Event) string

	mu     sync.Mutex
	client *pubsub.Client
	pub    *pubsub.Publisher
	closed bool
}

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Limiter = (*Sink)(nil)
)

// New builds a pubsub sink. It does no I/O: the client is made by the first Send. ctx is not retained.
func New(_ context.Context, cfg *Config, env sinks.Env) (*Sink, error) {
	if cfg == nil {
		return nil, errors.New("pubsub: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pubsub: invalid config: %w", err)
	}
	topic := cfg.Topic
	if _, _, ok := parseTopicName(topic); !ok {
		topic = "projects/" + cfg.Project + "/topics/" + cfg.Topic
	}
	s := &Sink{
		cfg:         *cfg,
		topic:       topic,
		timeout:     env.Timeout,
		dial:        env.Dial,
		log:         slog.Default().With("sink", "pubsub", "destination", env.Destination),
		orderingKey: orderingKey,
	}
	if s.timeout <= 0 {
		s.timeout = 15 * time.Second
	}
	return s, nil
}

// Limits: up to MaxBatch events per Send, each at most the service's message size.
func (s *Sink) Limits() sinks.Limits {
	return sinks.Limits{MaxBatch: MaxBatch, MaxEventBytes: maxMessageBytes}
}

// Close flushes what the client still holds (bounded by ctx) and closes the connection. Safe to call twice
// and while Sends run: those get retryable errors for what was not published.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	client, pub := s.client, s.pub
	s.mu.Unlock()
	if client == nil {
		return nil
	}
	stopped := make(chan struct{})
	go func() { pub.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		// Closing the client fails what Stop is still flushing; those events are retried at the next start.
	}
	if err := client.Close(); err != nil {
		return fmt.Errorf("pubsub: close client: %w", err)
	}
	return nil
}
