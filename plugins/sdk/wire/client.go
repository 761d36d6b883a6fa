package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk/internal/proto"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/plugins/sdk/sinkapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Description is what a plugin says about itself.
type Description struct {
	Name       string
	Doc        string
	Fields     []schema.Field
	Limits     sinkapi.Limits
	SDKVersion string
}

// ErrUnknownHandle is what a call on a sink the plugin process does not know answers (the process was
// restarted since it was opened): open it again.
var ErrUnknownHandle = errors.New("the plugin has no open sink with this handle")

// Client calls a plugin's Sink service with sinkapi types. Transport failures come back retryable; a
// context's end comes back as context.Canceled or context.DeadlineExceeded themselves.
type Client struct {
	rpc  proto.SinkClient
	name string // the plugin's name, for errors
}

// NewClient wraps what go-plugin dispenses for PluginKey on the host side.
func NewClient(dispensed any, name string) (Client, error) {
	rpc, ok := dispensed.(proto.SinkClient)
	if !ok {
		return Client{}, fmt.Errorf("plugin %s: dispensed %T, not the sink service", name, dispensed)
	}
	return Client{rpc: rpc, name: name}, nil
}

// Describe asks the plugin for its name, config fields and limits.
func (c Client) Describe(ctx context.Context) (Description, error) {
	r, err := c.rpc.Describe(ctx, &proto.DescribeRequest{})
	if err != nil {
		return Description{}, c.rpcError("describe", err)
	}
	return Description{Name: r.GetName(), Doc: r.GetDoc(), Fields: FieldsFromProto(r.GetFields()),
		Limits: LimitsFromProto(r.GetLimits()), SDKVersion: r.GetSdkVersion()}, nil
}

// Validate asks the plugin to check a config block (YAML). problems joins *schema.FieldError; err is a
// failed call.
func (c Client) Validate(ctx context.Context, config []byte) (problems, err error) {
	r, err := c.rpc.Validate(ctx, &proto.ValidateRequest{Config: config})
	if err != nil {
		return nil, c.rpcError("validate", err)
	}
	return FieldErrorsFromProto(r.GetErrors()), nil
}

// OpenParams is what Open passes besides the config.
type OpenParams struct {
	Config      []byte
	Destination string
	UserAgent   string
	Timeout     time.Duration
	// Network is the host's network policy for the destination; nil sends none (the plugin's sdk.Dialer
	// then allows public addresses only).
	Network *Network
}

// Network is the SSRF guard's policy as it crosses the wire.
type Network struct {
	AllowCIDRs []string
	Proxy      string // http://host:port, "" for direct
	Setting    string // the allow list's config key, for refusals
}

// NetworkToProto converts a policy for the wire (nil stays nil).
func NetworkToProto(n *Network) *proto.Network {
	if n == nil {
		return nil
	}
	return &proto.Network{AllowCidrs: n.AllowCIDRs, Proxy: n.Proxy, Setting: n.Setting}
}

// NetworkFromProto converts a policy from the wire (nil stays nil).
func NetworkFromProto(n *proto.Network) *Network {
	if n == nil {
		return nil
	}
	return &Network{AllowCIDRs: n.GetAllowCidrs(), Proxy: n.GetProxy(), Setting: n.GetSetting()}
}

// Opened is the answer to Open.
type Opened struct {
	Handle uint64
	// Limits are the sink's own limits, when it has some beyond Describe's.
	Limits *sinkapi.Limits
}

// Open builds a sink in the plugin. A config the plugin refuses comes back as joined *schema.FieldError; a
// sink that could not be built as a classified error.
func (c Client) Open(ctx context.Context, p OpenParams) (Opened, error) {
	r, err := c.rpc.Open(ctx, &proto.OpenRequest{Config: p.Config, Destination: p.Destination,
		UserAgent: p.UserAgent, TimeoutMs: p.Timeout.Milliseconds(), Network: NetworkToProto(p.Network)})
	if err != nil {
		return Opened{}, c.rpcError("open", err)
	}
	if err := FieldErrorsFromProto(r.GetErrors()); err != nil {
		return Opened{}, sinkapi.Permanent(fmt.Errorf("invalid config: %w", err))
	}
	if r.GetError() != nil {
		return Opened{}, resultError(r.GetError())
	}
	o := Opened{Handle: r.GetHandle()}
	if r.GetLimits() != nil {
		l := LimitsFromProto(r.GetLimits())
		o.Limits = &l
	}
	return o, nil
}

// Send delivers a batch through an opened sink.
func (c Client) Send(ctx context.Context, handle uint64, batch []Event) (*sinkapi.Report, error) {
	r, err := c.rpc.Send(ctx, &proto.SendRequest{Handle: handle, Events: EventsToProto(batch)})
	if err != nil {
		return nil, c.rpcError("send", err)
	}
	var rep *sinkapi.Report
	if r.GetStatusCode() != 0 || len(r.GetResponse()) > 0 {
		rep = &sinkapi.Report{StatusCode: int(r.GetStatusCode()), Response: r.GetResponse()}
	}
	return rep, ErrorFromResults(r.GetResults(), len(batch))
}

// Close releases an opened sink.
func (c Client) Close(ctx context.Context, handle uint64) error {
	if _, err := c.rpc.Close(ctx, &proto.CloseRequest{Handle: handle}); err != nil {
		return c.rpcError("close", err)
	}
	return nil
}

// rpcError makes a failed call retryable, keeping context errors as they are: a canceled attempt is not a
// failed delivery.
func (c Client) rpcError(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Canceled:
			return context.Canceled
		case codes.DeadlineExceeded:
			return context.DeadlineExceeded
		case codes.NotFound:
			return sinkapi.Retryable(fmt.Errorf("plugin %s: %s: %w", c.name, op, ErrUnknownHandle), 0)
		}
		return sinkapi.Retryable(fmt.Errorf("plugin %s: %s failed: %s", c.name, op, s.Message()), 0)
	}
	return sinkapi.Retryable(fmt.Errorf("plugin %s: %s failed: %v", c.name, op, err), 0)
}
