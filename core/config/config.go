package config

import (
	"time"

	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/sinks"
	"gopkg.in/yaml.v3"
)

// Duration is a Go duration string in YAML ("100ms", "5m").
type Duration = sinks.Duration

// Config is the whole YAML file. Field order is the order `validate --print` shows.
type Config struct {
	Server       Server        `yaml:"server"`
	Auth         Auth          `yaml:"auth"`
	Store        Store         `yaml:"store"`
	API          API           `yaml:"api"`
	Intake       Intake        `yaml:"intake"`
	Delivery     Delivery      `yaml:"delivery"`
	Topics       []Topic       `yaml:"topics"`
	Destinations []Destination `yaml:"destinations"`
	Plugins      []Plugin      `yaml:"plugins,omitempty"`
	Telemetry    Telemetry     `yaml:"telemetry"`
	Console      Console       `yaml:"console"`

	// File is the path the config was loaded from.
	File string `yaml:"-"`
	// Registry holds the built-in sinks plus the sinks of the plugins this config declares.
	Registry *sinks.Registry `yaml:"-"`
}

// Plugin is a third-party sink shipped as a separate executable.
type Plugin struct {
	Name string `yaml:"name"`
	Path string `yaml:"path"`
	// SHA256 pins the binary: Sluice refuses to launch a file with another digest.
	SHA256        string `yaml:"sha256,omitempty"`
	AllowUnpinned bool   `yaml:"allow_unpinned,omitempty"`
	// Env names the environment variables passed to the plugin (e.g. AWS_REGION); nothing else of Sluice's
	// environment reaches it.
	Env []string `yaml:"env,omitempty"`
}

// PluginLoader launches the plugins a config declares and returns their sink specs. errs maps a plugin's
// index in the plugins list to why it could not be loaded.
type PluginLoader func(plugins []Plugin) (specs []sinks.Spec, errs map[int]error)

// Server is the HTTP listener.
type Server struct {
	Listen string `yaml:"listen"`
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight deliveries.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// ReadTimeout bounds reading a whole request, body included (a slow body cannot hold a connection).
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing an answer.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout closes a kept-alive connection that sends nothing for this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// API is the operator's policy for what the HTTP API may do beyond the keys' roles.
type API struct {
	Destinations APIDestinations `yaml:"destinations"`
}

// APIDestinations confines destinations created over the API (DESIGN §9).
type APIDestinations struct {
	// TenantTypes are the sink types a tenant key may create (a tenant-less admin key may create every type).
	TenantTypes []string `yaml:"tenant_types"`
	// BucketPrefixes are the URL prefixes an API bucket destination may write under; empty allows every
	// cloud bucket and no file:// URL.
	BucketPrefixes []string `yaml:"bucket_prefixes"`
	// AmbientCredentials lets API destinations use the gateway's own cloud credentials (environment,
	// instance role); false makes them carry their own keys in config.
	AmbientCredentials bool `yaml:"ambient_credentials"`
}

// Auth lists the API keys.
type Auth struct {
	Keys []Key `yaml:"keys"`
}

// Role names what a key may do.
const (
	RoleAdmin     = "admin"
	RolePublisher = "publisher"
	RoleReader    = "reader"
)

// Key is one bearer key of the HTTP API.
type Key struct {
	Name   string `yaml:"name"`
	Key    string `yaml:"key" secret:"true"`
	Role   string `yaml:"role"`
	Tenant string `yaml:"tenant,omitempty"`
}

// Store selects and tunes the event store.
type Store struct {
	Driver string `yaml:"driver"`
	Path   string `yaml:"path,omitempty"`
	// DSN and MaxConns are the postgres driver's: the connection string (masked whole when printed) and the
	// pool size per node (default 20).
	DSN           string   `yaml:"dsn,omitempty" secret:"true"`
	MaxConns      int      `yaml:"max_conns,omitempty"`
	Retention     Duration `yaml:"retention"`
	EncryptionKey string   `yaml:"encryption_key,omitempty" secret:"true"`
	// PreviousEncryptionKeys still open secrets sealed before a key rotation; at startup Sluice re-seals
	// everything under EncryptionKey, after which they can be removed.
	PreviousEncryptionKeys []string `yaml:"previous_encryption_keys,omitempty" secret:"true"`
}

// Intake tunes event intake.
type Intake struct {
	HTTP         HTTPIntake `yaml:"http"`
	DedupeWindow Duration   `yaml:"dedupe_window"`
	// AMQP lists the queues Sluice consumes events from.
	AMQP []AMQPIntake `yaml:"amqp,omitempty"`
	// InlineSubscriptions lets an event register per-run webhook destinations (DESIGN §4).
	InlineSubscriptions InlineSubscriptions `yaml:"inline_subscriptions"`
	// ValidateTopics rejects events whose topic is not in the catalog (400) or whose data fails its schema (422).
	ValidateTopics bool `yaml:"validate_topics"`
}

// Where an AMQP consumer takes a plain message's topic from.
const (
	TopicFromBody       = "body"
	TopicFromRoutingKey = "routing_key"
)

// AMQPIntake is one queue consumer.
type AMQPIntake struct {
	// Name labels the consumer in logs; it defaults to the queue name.
	Name string `yaml:"name,omitempty"`
	URL  string `yaml:"url" secret:"true"`
	// Queue is consumed; with Declare it is created durable when missing.
	Queue    string        `yaml:"queue"`
	Declare  bool          `yaml:"declare,omitempty"`
	Bindings []AMQPBinding `yaml:"bindings,omitempty"`
	// Prefetch bounds the unacknowledged messages the broker hands over at once (default 256).
	Prefetch int `yaml:"prefetch"`
	// TopicFrom is body (the message is a Sluice event or a CloudEvent) or routing_key (the body is the data).
	TopicFrom string `yaml:"topic_from"`
	// DeadLetterExchange receives malformed messages, with the reason in the x-sluice-reject-reason header.
	DeadLetterExchange string `yaml:"dead_letter_exchange,omitempty"`
	// Tenant binds the consumer to one tenant: every event it accepts belongs to it.
	Tenant string `yaml:"tenant,omitempty"`
	// AllowTenantFromMessage lets a message body name its tenant (a consumer without Tenant only); off, a
	// message that names one is dead-lettered.
	AllowTenantFromMessage bool `yaml:"allow_tenant_from_message,omitempty"`
	// AllowSubscriptions lets a message body register per-run subscriptions; off, one that carries them is
	// dead-lettered.
	AllowSubscriptions bool `yaml:"allow_subscriptions,omitempty"`
}

// AMQPBinding binds the queue to an exchange under routing keys.
type AMQPBinding struct {
	Exchange    string   `yaml:"exchange"`
	RoutingKeys []string `yaml:"routing_keys"`
}

// InlineSubscriptions configures per-run subscriptions carried by events.
type InlineSubscriptions struct {
	Enabled bool `yaml:"enabled"`
	// TTL is how long a subscription lives after the last event that registered it (default 24h).
	TTL Duration `yaml:"ttl"`
	// MaxPerCorrelation caps the subscriptions one correlation id may hold (default 10).
	MaxPerCorrelation int `yaml:"max_per_correlation"`
	// MaxActive caps the live subscriptions of all tenants together (default 10000); one tenant may hold at
	// most half of it.
	MaxActive int `yaml:"max_active"`
	// AllowCIDRs opens holes in the SSRF guard for per-run subscription URLs only (default none: a publisher
	// must not reach what destinations configured by the operator may).
	AllowCIDRs []string `yaml:"allow_cidrs,omitempty"`
}

// HTTPIntake tunes POST /v1/events.
type HTTPIntake struct {
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// Delivery holds the defaults every destination inherits.
type Delivery struct {
	Timeout     Duration `yaml:"timeout"`
	Concurrency int      `yaml:"concurrency"`
	Retry       Retry    `yaml:"retry"`
	Breaker     Breaker  `yaml:"breaker"`
	Network     Network  `yaml:"network"`
	// AutoDisableAfter disables a destination after that many consecutive deliveries ended failed (0 = never).
	AutoDisableAfter int `yaml:"auto_disable_after"`
	// RotationOverlap is how long a rotated-out signing secret keeps signing beside the new one.
	RotationOverlap Duration `yaml:"rotation_overlap"`
	// MaxInFlightBytes bounds the bytes all in-flight attempts hold together, every sink's (webhook, queues,
	// buckets, plugins): each attempt holds its events' payloads plus a small allowance for envelope and
	// answer until it ends; attempts past the bound wait for room, and one larger than it goes alone
	// (default 256 MiB). Read at startup.
	MaxInFlightBytes int64 `yaml:"max_inflight_bytes"`
}

// Retry is a retry policy: an explicit schedule of delays after the first attempt, or an exponential one.
type Retry struct {
	Schedule    []Duration   `yaml:"schedule,omitempty"`
	Jitter      *float64     `yaml:"jitter,omitempty"`
	Exponential *Exponential `yaml:"exponential,omitempty"`
}

// Exponential is base·2^n capped at max, for attempts retries.
type Exponential struct {
	Base     Duration `yaml:"base"`
	Max      Duration `yaml:"max"`
	Attempts int      `yaml:"attempts"`
}

// RateLimit caps how fast a destination is sent to.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst,omitempty"`
}

// Ordering says what a later event does when an earlier one of the same key finally fails.
type Ordering struct {
	// OnFailure: skip (the later events proceed; the default) or block (they wait until the failed one is
	// retried by hand and delivered).
	OnFailure string `yaml:"on_failure"`
}

// Breaker stops a lane whose destination keeps failing: when, over the last Window and at least MinAttempts
// attempts, at least FailureRatio of them failed for the destination's health (timeouts, refusals, 5xx — never
// a failure caused by the event itself), the lane holds its backlog in the store and sends one probe every
// ProbeInterval, doubling up to MaxProbeInterval, until one succeeds. In a destination's block a field left
// out (or 0) takes the delivery default.
type Breaker struct {
	Window           Duration `yaml:"window,omitempty"`
	MinAttempts      int      `yaml:"min_attempts,omitempty"`
	FailureRatio     float64  `yaml:"failure_ratio,omitempty"`
	ProbeInterval    Duration `yaml:"probe_interval,omitempty"`
	MaxProbeInterval Duration `yaml:"max_probe_interval,omitempty"`
	// Failures is the deprecated form: failures: N reads as min_attempts: N with failure_ratio: 1 (every
	// attempt in the window failed), and wins over both when given; failures: 0 turns the breaker off.
	Failures *int `yaml:"failures,omitempty"`
}

// BreakerPolicy is a resolved breaker (dispatch.BreakerPolicy has the same shape). MinAttempts 0 = never opens.
type BreakerPolicy struct {
	Window           time.Duration
	MinAttempts      int
	FailureRatio     float64
	ProbeInterval    time.Duration
	MaxProbeInterval time.Duration
}

// Resolve lays a destination's breaker block (nil = none) over the delivery default b.
func (b Breaker) Resolve(d *Breaker) BreakerPolicy {
	p := b.apply(BreakerPolicy{})
	if d != nil {
		p = d.apply(p)
	}
	return p
}

// apply overrides p with the fields b sets.
func (b Breaker) apply(p BreakerPolicy) BreakerPolicy {
	if b.Window > 0 {
		p.Window = b.Window.D()
	}
	if b.MinAttempts > 0 {
		p.MinAttempts = b.MinAttempts
	}
	if b.FailureRatio > 0 {
		p.FailureRatio = b.FailureRatio
	}
	if b.ProbeInterval > 0 {
		p.ProbeInterval = b.ProbeInterval.D()
	}
	if b.MaxProbeInterval > 0 {
		p.MaxProbeInterval = b.MaxProbeInterval.D()
	}
	if b.Failures != nil {
		p.MinAttempts, p.FailureRatio = *b.Failures, 1
	}
	return p
}

// Network restricts where deliveries may connect.
type Network struct {
	// AllowCIDRs opens holes in the SSRF guard (loopback, private ranges, ...).
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// Proxy is the HTTP proxy every delivery goes through (http://host:port); proxy variables from the
	// environment are ignored. Targets are still checked by the guard before the proxy is asked.
	Proxy string `yaml:"proxy,omitempty" secret:"url"`
}

// Topic is one entry of the topic catalog.
type Topic struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description,omitempty"`
	// Schema is a JSON Schema for the event's data, inline; SchemaFile names a JSON or YAML file holding one
	// (relative to the config file).
	Schema     any    `yaml:"schema,omitempty"`
	SchemaFile string `yaml:"schema_file,omitempty"`
	Example    any    `yaml:"example,omitempty"`

	// Compiled by Load; nil when the topic has no schema.
	CompiledSchema *Schema `yaml:"-"`
}

// Destination is one subscriber.
type Destination struct {
	Name        string            `yaml:"name"`
	Type        string            `yaml:"type"`
	Topics      []string          `yaml:"topics"`
	Filter      any               `yaml:"filter,omitempty"`
	Transform   string            `yaml:"transform,omitempty"`
	Tenant      string            `yaml:"tenant,omitempty"`
	Scope       map[string]string `yaml:"scope,omitempty"`
	Enabled     *bool             `yaml:"enabled,omitempty"`
	Retry       *Retry            `yaml:"retry,omitempty"`
	Timeout     Duration          `yaml:"timeout,omitempty"`
	Concurrency int               `yaml:"concurrency,omitempty"`
	RateLimit   *RateLimit        `yaml:"rate_limit,omitempty"`
	// OrderingKey is a path into the event (data.case.id, metadata.k, tenant, topic, correlation_id): events
	// with the same value reach this destination strictly in order.
	OrderingKey string    `yaml:"ordering_key,omitempty"`
	Ordering    *Ordering `yaml:"ordering,omitempty"`
	Breaker     *Breaker  `yaml:"breaker,omitempty"`
	// AutoDisableAfter overrides delivery.auto_disable_after for this destination (0 = never).
	AutoDisableAfter *int      `yaml:"auto_disable_after,omitempty"`
	Config           yaml.Node `yaml:"config"`

	// Compiled by Load; nil before.
	SinkConfig  sinks.Config  `yaml:"-"`
	TopicsMatch match.Topics  `yaml:"-"`
	FilterMatch *match.Filter `yaml:"-"`
	// TransformExpr is the compiled transform; nil when the destination has none.
	TransformExpr *match.Transform `yaml:"-"`
}

// IsEnabled reports whether the destination receives events (the default).
func (d *Destination) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// Telemetry configures logs.
type Telemetry struct {
	Log Log `yaml:"log"`
}

// Log configures the slog handler.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | text
}

// Defaults returns a config with every default filled in; the YAML is decoded over it.
func Defaults() *Config {
	jitter := 0.2
	return &Config{
		Server: Server{Listen: "127.0.0.1:8080", ShutdownTimeout: Duration(30e9),
			ReadTimeout: Duration(30e9), WriteTimeout: Duration(30e9), IdleTimeout: Duration(120e9)},
		API:   API{Destinations: APIDestinations{TenantTypes: []string{"webhook"}, BucketPrefixes: []string{}}},
		Store: Store{Driver: "embedded", Path: "./data", Retention: Duration(168 * 3600e9)},
		Intake: Intake{HTTP: HTTPIntake{MaxBodyBytes: 1 << 20}, DedupeWindow: Duration(24 * 3600e9),
			InlineSubscriptions: InlineSubscriptions{TTL: Duration(24 * 3600e9), MaxPerCorrelation: 10, MaxActive: 10000}},
		Delivery: Delivery{
			Timeout:     Duration(15e9),
			Concurrency: 16,
			Breaker: Breaker{Window: Duration(30e9), MinAttempts: 20, FailureRatio: 0.8, ProbeInterval: Duration(5e9),
				MaxProbeInterval: Duration(30e9)},
			AutoDisableAfter: 100,
			RotationOverlap:  Duration(24 * 3600e9),
			MaxInFlightBytes: 256 << 20,
			Retry: Retry{
				Schedule: []Duration{Duration(5e9), Duration(300e9), Duration(1800e9), Duration(7200e9),
					Duration(5 * 3600e9), Duration(10 * 3600e9), Duration(14 * 3600e9), Duration(20 * 3600e9),
					Duration(24 * 3600e9)},
				Jitter: &jitter,
			},
		},
		Telemetry: Telemetry{Log: Log{Level: "info", Format: "json"}},
		Console:   Console{Enabled: true, SessionTTL: Duration(12 * 3600e9)},
	}
}
