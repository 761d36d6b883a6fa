package sdk

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/sluicehq/sluice/plugins/sdk/internal/hook"
	"github.com/sluicehq/sluice/plugins/sdk/internal/proto"
	"github.com/sluicehq/sluice/plugins/sdk/netguard"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/plugins/sdk/sinkapi"
	"github.com/sluicehq/sluice/plugins/sdk/template"
	"github.com/sluicehq/sluice/plugins/sdk/wire"
)

// Version is the version of this SDK module. Sluice logs it when the plugin starts.
const Version = "0.1.0"

// Event is one event to deliver.
type Event struct {
	// ID is the event's id, the same on every attempt: receivers deduplicate on it (NATS: Nats-Msg-Id).
	ID string
	// Topic is what the event is about, e.g. "case.status_updated".
	Topic string
	// Time is when the event happened (UTC), as the publisher gave it or when Sluice accepted it.
	Time time.Time
	// Tenant is the event's tenant; empty for a tenant-less event.
	Tenant string
	// Metadata holds the publisher's string attributes.
	Metadata map[string]string
	// Scope holds the keys destinations were matched on (e.g. workflow_definition_id).
	Scope map[string]string
	// CorrelationID ties the events of one run together; empty when the publisher gave none.
	CorrelationID string
	// Data is the event's payload, JSON.
	Data json.RawMessage
	// Body, when the destination's transform produced one, is what the destination receives in place of the
	// envelope; Envelope returns it then.
	Body json.RawMessage
}

// Envelope is the message body Sluice's queue sinks carry: the destination's transformed Body when there is
// one, else `{"id","topic","time","tenant"?,"metadata"?,"data"}` as compact JSON.
func (e *Event) Envelope() ([]byte, error) {
	if len(e.Body) > 0 {
		return e.Body, nil
	}
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return json.Marshal(struct {
		ID       string            `json:"id"`
		Topic    string            `json:"topic"`
		Time     string            `json:"time"`
		Tenant   string            `json:"tenant,omitempty"`
		Metadata map[string]string `json:"metadata,omitempty"`
		Data     json.RawMessage   `json:"data"`
	}{e.ID, e.Topic, e.Time.UTC().Format(time.RFC3339Nano), e.Tenant, e.Metadata, data})
}

// The shared vocabulary: the very types Sluice's built-in sinks use.
type (
	// Limits tells Sluice how to batch for the sink (MaxBatch, MaxBatchBytes, MaxEventBytes, Linger).
	Limits = sinkapi.Limits
	// Field is one config field as `sluice sinks describe` shows it.
	Field = schema.Field
	// FieldError is one config problem at a path relative to the config block ("url", "tls.ca_file").
	FieldError = schema.FieldError
	// BatchError reports per-event failures: Errs has one entry per event, nil for delivered.
	BatchError = sinkapi.BatchError
	// Error is a classified failure (see Permanent, Retryable, Gone).
	Error = sinkapi.Error
	// Class is how Sluice treats a failure.
	Class = sinkapi.Class
)

// Failure classes.
const (
	ClassRetryable = sinkapi.ClassRetryable
	ClassPermanent = sinkapi.ClassPermanent
	ClassGone      = sinkapi.ClassGone
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
func Permanent(err error) error { return sinkapi.Permanent(err) }

// Retryable marks err as transient; after > 0 asks Sluice to wait at least that long before the next attempt.
func Retryable(err error, after time.Duration) error { return sinkapi.Retryable(err, after) }

// Gone marks err as "this destination no longer exists": the delivery fails and Sluice disables the
// destination.
func Gone(err error) error { return sinkapi.Gone(err) }

// Classify returns the class of err and any delay it asks for; unclassified errors are retryable.
func Classify(err error) (Class, time.Duration) { return sinkapi.Classify(err) }

// Outcome turns per-event results of a batch (nil = delivered) into Send's answer: nil when all were
// delivered, the one error when every event failed with the same error (or the batch held one event), else a
// *BatchError.
func Outcome(errs []error) error { return sinkapi.Outcome(errs) }

// Errorf returns a *FieldError for path, for a config's Validate method.
func Errorf(path, format string, args ...any) error { return schema.Errorf(path, format, args...) }

// Note records what the far side answered (a status code, an excerpt of its response) in the attempt log.
func Note(ctx context.Context, statusCode int, response []byte) {
	sinkapi.Note(ctx, statusCode, response)
}

// Template is a compiled name template such as `{topic}.{tenant}` or `orders.{data.region:-eu}`: the
// language of Sluice's own routing keys (see plugins/sdk/template for every placeholder).
type Template struct{ t *template.Template }

// CompileTemplate compiles a name template; an unknown placeholder or unbalanced brace is an error to return
// from the config's Validate (as a FieldError naming the field).
func CompileTemplate(s string) (*Template, error) {
	t, err := template.Compile(s)
	if err != nil {
		return nil, err
	}
	return &Template{t}, nil
}

// Render fills the template for one event of a batch. batchID is what {batch_id} renders to: any id the sink
// gives the batch being sent ("" when the template does not use it). now dates {yyyy}/{mm}/{dd}/{hh} for an
// event without a Time; pass time.Now(). A missing data path or metadata key without a default is an error
// naming it: make it that event's permanent failure (sdk.Permanent), never send to a half-rendered subject.
func (t *Template) Render(ev *Event, batchID string, now time.Time) (string, error) {
	if ev == nil {
		return t.t.Render(nil, batchID, now)
	}
	return t.t.Render(&template.Event{ID: ev.ID, Topic: ev.Topic, Tenant: ev.Tenant, Time: ev.Time,
		Metadata: ev.Metadata, Data: ev.Data}, batchID, now)
}

// String is the template as written.
func (t *Template) String() string { return t.t.String() }

// Static reports whether the template has no placeholders (it renders the same for every event).
func (t *Template) Static() bool { return t.t.Static() }

// Uses reports whether the template has the placeholder name: "topic", "tenant", "data", "batch_id", ….
func (t *Template) Uses(name string) bool { return t.t.Uses(name) }

// Info is what Sluice tells a sink about its destination; newSink reads it with InfoFrom(ctx).
type Info struct {
	Destination string        // the destination's name, for logs and errors
	UserAgent   string        // "Sluice/<version>"
	Timeout     time.Duration // the destination's per-attempt timeout
	// Network is Sluice's network policy for the destination (delivery.network); Dialer applies it.
	Network Network
}

// Network is the SSRF guard's policy Sluice hands a plugin: the CIDRs allowed beyond public addresses and the
// proxy to reach everything through ("" connects directly).
type Network struct {
	AllowCIDRs []string
	Proxy      string
	// Setting is the config key of the allow list, named when a connection is refused.
	Setting string
}

// Dialer returns the dialer a sink must connect with: Sluice's SSRF guard (loopback, private, link-local and
// metadata addresses are refused unless delivery.network.allow_cidrs allows them), judged after DNS at connect
// time, and the configured proxy (delivery.network.proxy; HTTP_PROXY and friends are ignored). Call it in
// newSink; give its DialContext to your client library (nats.SetCustomDialer, http.Transport.DialContext, or
// Transport(nil) for HTTP). A plugin that dials on its own is outside the guard.
func Dialer(ctx context.Context) *netguard.Dialer {
	return InfoFrom(ctx).Network.dialer()
}

func (n Network) dialer() *netguard.Dialer {
	// The host validated both; an entry that does not parse is dropped, which only makes the guard stricter.
	allow, _ := netguard.ParseCIDRs(n.AllowCIDRs)
	g := netguard.New(allow)
	if n.Setting != "" {
		g = g.Named(n.Setting)
	}
	proxy, err := netguard.ParseProxy(n.Proxy)
	if err != nil {
		// A proxy the plugin cannot read must not become a direct connection: point at a proxy that refuses.
		proxy = &url.URL{Scheme: "http", Host: "invalid.:1"}
	}
	return netguard.NewDialer(g, proxy)
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
		fields: schema.Describe(zero),
		decode: func(src []byte) (any, error) { return schema.Decode[C](src) },
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

// sdkVersion is what the plugin tells Sluice about the SDK it was built with: Version, and the module version
// the build recorded when it differs (a tagged release, or a replace directive).
func sdkVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Version
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/sluicehq/sluice/plugins/sdk" {
			if d.Replace != nil {
				return Version + " (replaced by " + d.Replace.Path + ")"
			}
			if d.Version != "" && d.Version != "v"+Version {
				return Version + " (module " + d.Version + ")"
			}
		}
	}
	return Version
}

// fromWire turns the events of a SendRequest into the plugin's.
func fromWire(in []wire.Event) []Event {
	out := make([]Event, len(in))
	for i, e := range in {
		out[i] = Event{ID: e.ID, Topic: e.Topic, Time: e.Time, Tenant: e.Tenant, Metadata: e.Metadata,
			Scope: e.Scope, CorrelationID: e.CorrelationID, Data: e.Data, Body: e.Body}
	}
	return out
}
