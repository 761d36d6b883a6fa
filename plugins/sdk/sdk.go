package sdk

import (
	"context"
	"log/slog"
	"os"
	"reflect"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/plugins/internal/wire"
	"github.com/sluicehq/sluice/plugins/proto"
	"github.com/sluicehq/sluice/plugins/sdk/internal/hook"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/template"
)

// The shared vocabulary, the same types Sluice's built-in sinks use.
type (
	// Event is one event to deliver. Envelope() encodes the body queue-like sinks carry:
	// {"id","topic","time","tenant"?,"metadata"?,"data"}.
	Event = event.Event
	// Limits tells Sluice how to batch for the sink (MaxBatch, MaxBatchBytes, MaxEventBytes, Linger).
	Limits = sinks.Limits
	// Field is one config field as `sluice sinks describe` shows it.
	Field = sinks.Field
	// FieldError is one config problem at a path relative to the config block ("url", "tls.ca_file").
	FieldError = sinks.FieldError
	// BatchError reports per-event failures: Errs has one entry per event, nil for delivered.
	BatchError = sinks.BatchError
	// Error is a classified failure (see Permanent, Retryable, Gone).
	Error = sinks.Error
	// Class is how Sluice treats a failure.
	Class = sinks.Class
	// Template is a compiled name template such as `{topic}.{tenant}` or `orders.{data.region:-eu}`.
	Template = template.Template
)

// Failure classes.
const (
	ClassRetryable = sinks.ClassRetryable
	ClassPermanent = sinks.ClassPermanent
	ClassGone      = sinks.ClassGone
)

// Sink delivers batches of events for one destination.
type Sink interface {
	// Send delivers batch. ctx carries the attempt's deadline and is canceled when Sluice gives up on it.
	Send(ctx context.Context, batch []Event) error
	// Close releases connections. It must be safe while a Send is running.
	Close(ctx context.Context) error
}

// Limiter is implemented by a Sink whose limits depend on its config; they replace the WithLimits option
// for that destination.
type Limiter interface {
	Limits() Limits
}

// Permanent marks err as a failure retrying cannot fix (bad request, unknown stream, oversized event).
func Permanent(err error) error { return sinks.Permanent(err) }

// Retryable marks err as transient; after > 0 asks Sluice to wait at least that long before the next attempt.
func Retryable(err error, after time.Duration) error { return sinks.Retryable(err, after) }

// Gone marks err as "this destination no longer exists": the delivery fails and Sluice disables the
// destination.
func Gone(err error) error { return sinks.Gone(err) }

// Classify returns the class of err and any delay it asks for; unclassified errors are retryable.
func Classify(err error) (Class, time.Duration) { return sinks.Classify(err) }

// Errorf returns a *FieldError for path, for a config's Validate method.
func Errorf(path, format string, args ...any) error { return sinks.Errorf(path, format, args...) }

// Note records what the far side answered (a status code, an excerpt of its response) in the attempt log.
func Note(ctx context.Context, statusCode int, response []byte) {
	sinks.Note(ctx, statusCode, response)
}

// CompileTemplate compiles a name template; an unknown placeholder or unbalanced brace is an error to return
// from the config's Validate. Render it per event with t.Render(&ev, batchID, time.Now()); a render error is
// that event's permanent failure.
func CompileTemplate(s string) (*Template, error) { return template.Compile(s) }

// Info is what Sluice tells a sink about its destination; newSink reads it with InfoFrom(ctx).
type Info struct {
	Destination string        // the destination's name, for logs and errors
	UserAgent   string        // "Sluice/<version>"
	Timeout     time.Duration // the destination's per-attempt timeout
}

type infoKey struct{}

// InfoFrom returns the destination's Info inside newSink.
func InfoFrom(ctx context.Context) Info {
	i, _ := ctx.Value(infoKey{}).(Info)
	return i
}

// Option tunes a plugin.
type Option func(*Plugin)

// WithDoc sets the one-line description `sluice sinks` shows.
func WithDoc(doc string) Option { return func(p *Plugin) { p.doc = doc } }

// WithLimits sets how Sluice may batch for every destination of this plugin.
func WithLimits(l Limits) Option { return func(p *Plugin) { p.limits = l } }

// Plugin is a described sink plugin: Serve runs it under Sluice, sdktest runs it in-process.
type Plugin struct {
	name   string
	doc    string
	limits Limits
	fields []Field
	// decode checks a YAML config block and returns the decoded config, or every problem joined.
	decode func(src []byte) (any, error)
	open   func(ctx context.Context, cfg any) (Sink, error)
}

// New describes a plugin named name (the destination type ops write in YAML) whose sinks newSink builds from
// a config of type C. C is a struct; its tags describe it (see the package doc).
func New[C any](name string, newSink func(ctx context.Context, cfg C) (Sink, error), opts ...Option) *Plugin {
	var zero C
	if t := reflect.TypeOf(zero); t == nil || t.Kind() != reflect.Struct {
		panic("sdk: the config type of plugin " + name + " must be a struct")
	}
	p := &Plugin{
		name:   name,
		fields: sinks.Describe(zero),
		decode: func(src []byte) (any, error) { return decode[C](src) },
		open:   func(ctx context.Context, cfg any) (Sink, error) { return newSink(ctx, cfg.(C)) },
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Name is the plugin's sink type.
func (p *Plugin) Name() string { return p.name }

// Serve runs a plugin under Sluice: New(name, newSink, opts...).Serve().
func Serve[C any](name string, newSink func(ctx context.Context, cfg C) (Sink, error), opts ...Option) {
	New(name, newSink, opts...).Serve()
}

// Serve speaks the plugin protocol on behalf of p until Sluice stops it; it does not return. Run by hand, the
// executable says that it is a plugin and exits 1.
func (p *Plugin) Serve() {
	// Sluice reads the plugin's stderr: JSON lines in hclog's format keep their level and fields there.
	slog.SetDefault(slog.New(newStderrHandler(os.Stderr)))
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  wire.Handshake,
		VersionedPlugins: wire.Plugins(newServer(p)),
		GRPCServer:       plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: p.name, Level: hclog.Info, Output: os.Stderr, JSONFormat: true,
		}),
	})
	os.Exit(0)
}

func init() {
	hook.Service = func(p any) proto.SinkServer { return newServer(p.(*Plugin)) }
}

// sdkVersion is the version of the module plugins/sdk was built from, when the build knows it.
func sdkVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if bi.Main.Path == "github.com/sluicehq/sluice" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/sluicehq/sluice" {
			if d.Replace != nil {
				return d.Version + " (replaced by " + d.Replace.Path + ")"
			}
			return d.Version
		}
	}
	return ""
}
