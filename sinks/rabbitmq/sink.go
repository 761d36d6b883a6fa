package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/template"
)

// Defaults.
const (
	DefaultRoutingKey      = "{topic}"
	DefaultExchangeType    = "topic"
	DefaultMaxMessageBytes = 16 << 20
	// MaxBatch is the most events one Send publishes before waiting for their confirms.
	MaxBatch = 100
	// maxKeyBytes is AMQP's shortstr limit, which routing keys are.
	maxKeyBytes = 255
	// brokerMaxMessageBytes is RabbitMQ's hard ceiling for max_message_size (512 MiB).
	brokerMaxMessageBytes = 512 << 20
)

// Spec registers the rabbitmq sink.
var Spec = sinks.Register("rabbitmq", "publish to a RabbitMQ (AMQP 0-9-1) exchange with publisher confirms", NewConfig, New)

// Config is a rabbitmq destination's `config` block.
type Config struct {
	URL          string `yaml:"url" required:"true" secret:"true" desc:"amqp:// or amqps:// URL with user, password and vhost, e.g. amqps://sluice:${AMQP_PASSWORD}@mq.example.com/prod"`
	Exchange     string `yaml:"exchange" desc:"exchange to publish to; empty is the default exchange, which routes to the queue named by the routing key"`
	RoutingKey   string `yaml:"routing_key" default:"{topic}" desc:"routing key template: {topic} {tenant} {id} {yyyy} {mm} {dd} {hh} {batch_id} {data.<path>} {metadata.<key>}, each with an optional :-default"`
	Persistent   bool   `yaml:"persistent" default:"true" desc:"publish with delivery mode 2, so durable queues keep messages across broker restarts"`
	Mandatory    bool   `yaml:"mandatory" default:"false" desc:"ask the broker to return messages no queue is bound for; such an event fails permanently instead of being dropped"`
	Declare      bool   `yaml:"declare" default:"false" desc:"declare the exchange (durable, of exchange_type) on connect; off, Sluice declares nothing"`
	ExchangeType string `yaml:"exchange_type" default:"topic" desc:"type of the exchange declare creates: direct, fanout, topic, headers or a plugin's x-… type"`
	// MaxMessageBytes mirrors the broker's max_message_size so an oversized event fails permanently here,
	// alone, rather than closing the channel under its whole batch.
	MaxMessageBytes int `yaml:"max_message_bytes" default:"16777216" desc:"largest message body to publish; bigger events fail permanently (keep at or below the broker's max_message_size)"`
	// Proxy tunnels the AMQP connection through an HTTP proxy with CONNECT, in place of delivery.network.proxy.
	Proxy string `yaml:"proxy,omitempty" secret:"url" desc:"HTTP proxy (http://host:port) the AMQP connection is tunnelled through with CONNECT, in place of delivery.network.proxy"`
}

// NewConfig returns a Config with its defaults filled in.
func NewConfig() *Config {
	return &Config{
		RoutingKey:      DefaultRoutingKey,
		Persistent:      true,
		ExchangeType:    DefaultExchangeType,
		MaxMessageBytes: DefaultMaxMessageBytes,
	}
}

// Validate reports every problem of the block at once. It does no I/O and never shows the URL's password.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, sinks.Errorf(path, format, args...)) }
	if _, err := netguard.ParseProxy(c.Proxy); err != nil {
		add("proxy", "%v", err)
	}

	if c.URL == "" {
		add("url", "required; write it like amqp://user:password@host:5672/vhost (keep the password in the environment: ${AMQP_URL})")
	} else if _, err := amqp.ParseURI(c.URL); err != nil {
		add("url", "not an AMQP URL (%s); write it like amqp://user:password@host:5672/vhost", uriErrMsg(err))
	}
	if _, err := template.Compile(c.RoutingKey); err != nil {
		add("routing_key", "%v", err)
	}
	if len(c.Exchange) > maxKeyBytes {
		add("exchange", "is %d bytes; AMQP names are at most %d", len(c.Exchange), maxKeyBytes)
	}
	if c.Declare {
		if c.Exchange == "" {
			add("declare", "the default exchange (exchange empty) always exists and cannot be declared; set exchange or remove declare")
		}
		switch t := c.ExchangeType; {
		case t == "direct", t == "fanout", t == "topic", t == "headers", strings.HasPrefix(t, "x-") && len(t) > 2:
		default:
			add("exchange_type", "%q is not an exchange type; use direct, fanout, topic, headers or a plugin's x-… type", t)
		}
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > brokerMaxMessageBytes {
		add("max_message_bytes", "must be between 1 and %d (RabbitMQ's ceiling); the broker's default max_message_size is 134217728", brokerMaxMessageBytes)
	}
	return errors.Join(errs...)
}

// uriErrMsg describes a URL parse error without the URL itself, which holds the password.
func uriErrMsg(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// redact shows a URL with its password replaced, for errors and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the configured url"
	}
	return u.Redacted()
}

// Sink publishes to one exchange.
type Sink struct {
	cfg     Config
	key     *template.Template
	where   string // the redacted URL, what errors and logs name
	dest    string
	timeout time.Duration
	dialer  sinks.DialFunc
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	cur      *session
	dialing  chan struct{} // closed when the dial in progress ends
	lastErr  error         // the last dial's failure, classified
	failures int           // dial failures in a row
	nextDial time.Time     // no new dial before this (backoff)
	closed   bool
	done     chan struct{} // closed by Close
}

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Limiter = (*Sink)(nil)
)

// New builds a rabbitmq sink. It does no I/O: the first Send connects. ctx is not retained.
func New(_ context.Context, cfg *Config, env sinks.Env) (*Sink, error) {
	if cfg == nil {
		return nil, errors.New("rabbitmq: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rabbitmq: invalid config: %w", err)
	}
	key, err := template.Compile(cfg.RoutingKey)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: routing_key: %w", err) // unreachable after Validate
	}
	proxy, _ := netguard.ParseProxy(cfg.Proxy) // validated above
	s := &Sink{
		cfg:     *cfg,
		key:     key,
		where:   redact(cfg.URL),
		dest:    env.Destination,
		timeout: env.Timeout,
		dialer:  env.DialFor(proxy),
		log:     slog.Default().With("sink", "rabbitmq", "destination", env.Destination),
		now:     time.Now,
		done:    make(chan struct{}),
	}
	if s.timeout <= 0 {
		s.timeout = 15 * time.Second
	}
	if s.dialer == nil {
		// Only tests build a sink without the guard; the server always passes one.
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		s.dialer = d.DialContext
	}
	return s, nil
}

// Limits: up to MaxBatch events per Send; larger events fail before a Send.
func (s *Sink) Limits() sinks.Limits {
	return sinks.Limits{MaxBatch: MaxBatch, MaxEventBytes: s.cfg.MaxMessageBytes}
}

// Close closes the connection. Sends in progress end with retryable errors for what the broker had not
// confirmed. It is safe to call more than once and while Sends run.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	cur := s.cur
	s.cur = nil
	s.mu.Unlock()
	if cur == nil {
		return nil
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	if err := cur.conn.CloseDeadline(deadline); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq: close connection to %s: %w", s.where, err)
	}
	return nil
}
