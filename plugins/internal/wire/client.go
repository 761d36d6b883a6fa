package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/plugins/proto"
	"github.com/sluicehq/sluice/sinks"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Description is what a plugin says about itself.
type Description struct {
	Name       string
	Doc        string
	Fields     []sinks.Field
	Limits     sinks.Limits
	SDKVersion string
}

// Client calls a plugin's Sink service with sinks types. Transport failures of Send come back retryable;
// the caller adds which plugin it was.
type Client struct {
	RPC  proto.SinkClient
	Name string // the plugin's name, for errors
}

// Describe asks the plugin for its name, config fields and limits.
func (c Client) Describe(ctx context.Context) (Description, error) {
	r, err := c.RPC.Describe(ctx, &proto.DescribeRequest{})
	if err != nil {
		return Description{}, c.rpcError("describe", err)
	}
	return Description{Name: r.GetName(), Doc: r.GetDoc(), Fields: FieldsFromProto(r.GetFields()),
		Limits: LimitsFromProto(r.GetLimits()), SDKVersion: r.GetSdkVersion()}, nil
}

// Validate asks the plugin to check a config block (YAML). problems joins *sinks.FieldError; err is a
// failed call.
func (c Client) Validate(ctx context.Context, config []byte) (problems, err error) {
	r, err := c.RPC.Validate(ctx, &proto.ValidateRequest{Config: config})
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
}

// Opened is the answer to Open.
type Opened struct {
	Handle uint64
	// Limits are the sink's own limits, when it has some beyond Describe's.
	Limits *sinks.Limits
}

// Open builds a sink in the plugin. A config the plugin refuses comes back as joined *sinks.FieldError; a
// sink that could not be built as a classified error.
func (c Client) Open(ctx context.Context, p OpenParams) (Opened, error) {
	r, err := c.RPC.Open(ctx, &proto.OpenRequest{Config: p.Config, Destination: p.Destination,
		UserAgent: p.UserAgent, TimeoutMs: p.Timeout.Milliseconds()})
	if err != nil {
		return Opened{}, c.rpcError("open", err)
	}
	if err := FieldErrorsFromProto(r.GetErrors()); err != nil {
		return Opened{}, sinks.Permanent(fmt.Errorf("invalid config: %w", err))
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
func (c Client) Send(ctx context.Context, handle uint64, batch []event.Event) (*sinks.Report, error) {
	r, err := c.RPC.Send(ctx, &proto.SendRequest{Handle: handle, Events: EventsToProto(batch)})
	if err != nil {
		return nil, c.rpcError("send", err)
	}
	var rep *sinks.Report
	if r.GetStatusCode() != 0 || len(r.GetResponse()) > 0 {
		rep = &sinks.Report{StatusCode: int(r.GetStatusCode()), Response: r.GetResponse()}
	}
	return rep, ErrorFromResults(r.GetResults(), len(batch))
}

// Close releases an opened sink.
func (c Client) Close(ctx context.Context, handle uint64) error {
	if _, err := c.RPC.Close(ctx, &proto.CloseRequest{Handle: handle}); err != nil {
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
		}
		return sinks.Retryable(fmt.Errorf("plugin %s: %s failed: %s", c.Name, op, s.Message()), 0)
	}
	return sinks.Retryable(fmt.Errorf("plugin %s: %s failed: %v", c.Name, op, err), 0)
}
