// Package sdktest runs a plugin in-process, through the same gRPC contract and conversions Sluice uses,
// so a plugin author tests config checking, outcomes and batching with `go test` and no subprocess:
//
//	p := sdktest.Start(t, sdk.New("nats", newSink))
//	err := p.Validate("url: nats://127.0.0.1:4222\nsubject: '{topic}'")
//	sink, err := p.Open(ctx, "url: …")
//	err = sink.Send(ctx, []sdk.Event{{ID: "1", Topic: "case.created", Data: []byte(`{}`)}})
//
// Send returns exactly what Sluice's dispatcher would see: nil, an error classified like sdk.Permanent /
// sdk.Retryable (read it with sdk.Classify), or an *sdk.BatchError; a canceled or timed-out Send returns
// context.Canceled or context.DeadlineExceeded themselves.
package sdktest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk"
	"github.com/sluicehq/sluice/plugins/sdk/internal/hook"
	"github.com/sluicehq/sluice/plugins/sdk/internal/proto"
	"github.com/sluicehq/sluice/plugins/sdk/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Plugin is a plugin served in-process for a test.
type Plugin struct {
	c    wire.Client
	desc Description
}

// Description is what the plugin tells Sluice about itself.
type Description struct {
	Name   string
	Doc    string
	Fields []sdk.Field
	Limits sdk.Limits
}

// Start serves p on an in-memory connection until the test ends.
func Start(t testing.TB, p *sdk.Plugin) *Plugin {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	proto.RegisterSinkServer(srv, hook.Service(p))
	go func() { _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient("passthrough:///sdktest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("sdktest: connect: %v", err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	c, err := wire.NewClient(proto.NewSinkClient(conn), p.Name())
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	tp := &Plugin{c: c}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := tp.c.Describe(ctx)
	if err != nil {
		t.Fatalf("sdktest: describe: %v", err)
	}
	tp.desc = Description{Name: d.Name, Doc: d.Doc, Fields: d.Fields, Limits: d.Limits}
	return tp
}

// Describe returns the plugin's name, config fields and limits, as `sluice sinks describe` shows them.
func (p *Plugin) Describe() Description { return p.desc }

// Validate checks a config block written as YAML, as `sluice validate` does. It returns nil, or every
// problem joined, each an *sdk.FieldError with its path in the block.
func (p *Plugin) Validate(config string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	problems, err := p.c.Validate(ctx, []byte(config))
	if err != nil {
		return err
	}
	return problems
}

// Open builds a sink from a config block written as YAML. An invalid config is a permanent error wrapping
// the field errors; a sink the plugin could not build returns the plugin's classified error.
func (p *Plugin) Open(ctx context.Context, config string) (*Sink, error) {
	return p.OpenDestination(ctx, config, sdk.Info{Destination: "sdktest", UserAgent: "Sluice/sdktest", Timeout: 15 * time.Second,
		Network: Loopback})
}

// Loopback is the network policy Open gives a sink: loopback allowed (where test servers listen), everything
// else as Sluice's default guard has it.
var Loopback = sdk.Network{AllowCIDRs: []string{"127.0.0.0/8", "::1/128"}}

// OpenDestination is Open with the destination details newSink reads from sdk.InfoFrom.
func (p *Plugin) OpenDestination(ctx context.Context, config string, info sdk.Info) (*Sink, error) {
	o, err := p.c.Open(ctx, wire.OpenParams{Config: []byte(config), Destination: info.Destination,
		UserAgent: info.UserAgent, Timeout: info.Timeout,
		Network: &wire.Network{AllowCIDRs: info.Network.AllowCIDRs, Proxy: info.Network.Proxy, Setting: info.Network.Setting}})
	if err != nil {
		return nil, err
	}
	s := &Sink{c: p.c, handle: o.Handle, limits: p.desc.Limits}
	if o.Limits != nil {
		s.limits = *o.Limits
	}
	return s, nil
}

// Sink is an opened sink of the plugin.
type Sink struct {
	c      wire.Client
	handle uint64
	limits sdk.Limits
}

// Send delivers a batch and returns what Sluice's dispatcher would see.
func (s *Sink) Send(ctx context.Context, batch []sdk.Event) error {
	in := make([]wire.Event, len(batch))
	for i, e := range batch {
		in[i] = wire.Event{ID: e.ID, Topic: e.Topic, Time: e.Time, Tenant: e.Tenant, Metadata: e.Metadata,
			Scope: e.Scope, CorrelationID: e.CorrelationID, Data: e.Data, Body: e.Body}
	}
	_, err := s.c.Send(ctx, s.handle, in)
	return err
}

// Close closes the sink in the plugin.
func (s *Sink) Close(ctx context.Context) error { return s.c.Close(ctx, s.handle) }

// Limits are the batching limits Sluice would use for this sink.
func (s *Sink) Limits() sdk.Limits { return s.limits }
