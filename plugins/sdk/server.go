package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/sluicehq/sluice/plugins/sdk/internal/proto"
	"github.com/sluicehq/sluice/plugins/sdk/sinkapi"
	"github.com/sluicehq/sluice/plugins/sdk/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// server is the plugin side of the Sink service.
type server struct {
	proto.UnimplementedSinkServer
	p *Plugin

	mu    sync.Mutex
	next  uint64
	sinks map[uint64]Sink
}

var _ proto.SinkServer = (*server)(nil)

func newServer(p *Plugin) *server { return &server{p: p, sinks: map[uint64]Sink{}} }

func (s *server) Describe(context.Context, *proto.DescribeRequest) (*proto.DescribeResponse, error) {
	return &proto.DescribeResponse{Name: s.p.name, Doc: s.p.doc, Fields: wire.FieldsToProto(s.p.fields),
		Limits: wire.LimitsToProto(s.p.limits), SdkVersion: sdkVersion()}, nil
}

func (s *server) Validate(_ context.Context, r *proto.ValidateRequest) (resp *proto.ValidateResponse, err error) {
	defer recoverTo("validate", &err)
	_, verr := s.p.decode(r.GetConfig())
	return &proto.ValidateResponse{Errors: wire.FieldErrorsToProto(verr)}, nil
}

func (s *server) Open(ctx context.Context, r *proto.OpenRequest) (resp *proto.OpenResponse, err error) {
	defer recoverTo("open", &err)
	cfg, verr := s.p.decode(r.GetConfig())
	if verr != nil {
		return &proto.OpenResponse{Errors: wire.FieldErrorsToProto(verr)}, nil
	}
	info := Info{Destination: r.GetDestination(), UserAgent: r.GetUserAgent(),
		Timeout: time.Duration(r.GetTimeoutMs()) * time.Millisecond}
	if n := wire.NetworkFromProto(r.GetNetwork()); n != nil {
		info.Network = Network{AllowCIDRs: n.AllowCIDRs, Proxy: n.Proxy, Setting: n.Setting}
	}
	ctx = context.WithValue(ctx, infoKey{}, info)
	sink, err := s.p.open(ctx, cfg)
	if err != nil {
		return &proto.OpenResponse{Error: wire.ResultsFromError(err, 1)[0]}, nil
	}
	if sink == nil {
		return nil, status.Error(codes.Internal, "newSink returned neither a sink nor an error")
	}
	s.mu.Lock()
	s.next++
	h := s.next
	s.sinks[h] = sink
	s.mu.Unlock()
	resp = &proto.OpenResponse{Handle: h}
	if l, ok := sink.(Limiter); ok {
		resp.Limits = wire.LimitsToProto(l.Limits())
		if resp.Limits == nil {
			resp.Limits = &proto.Limits{}
		}
	}
	return resp, nil
}

func (s *server) sink(h uint64) (Sink, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sk, ok := s.sinks[h]; ok {
		return sk, nil
	}
	return nil, status.Errorf(codes.NotFound, "no open sink with handle %d; open it again", h)
}

func (s *server) Send(ctx context.Context, r *proto.SendRequest) (resp *proto.SendResponse, err error) {
	sk, err := s.sink(r.GetHandle())
	if err != nil {
		return nil, err
	}
	batch := fromWire(wire.EventsFromProto(r.GetEvents()))
	var rep sinkapi.Report
	sendErr := func() (err error) {
		defer recoverTo("send", &err)
		return sk.Send(sinkapi.WithReport(ctx, &rep), batch)
	}()
	return &proto.SendResponse{Results: wire.ResultsFromError(sendErr, len(batch)),
		StatusCode: int32(rep.StatusCode), Response: rep.Response}, nil
}

func (s *server) Close(ctx context.Context, r *proto.CloseRequest) (resp *proto.CloseResponse, err error) {
	defer recoverTo("close", &err)
	s.mu.Lock()
	sk, ok := s.sinks[r.GetHandle()]
	delete(s.sinks, r.GetHandle())
	s.mu.Unlock()
	if ok {
		if err := sk.Close(ctx); err != nil {
			return nil, status.Errorf(codes.Unknown, "close: %v", err)
		}
	}
	return &proto.CloseResponse{}, nil
}

// recoverTo turns a panic in the plugin author's code into a retryable failure of that call (the plugin
// keeps serving its other destinations) and logs the stack.
func recoverTo(op string, err *error) {
	if r := recover(); r != nil {
		slog.Error("plugin panicked", "op", op, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = sinkapi.Retryable(fmt.Errorf("%s: plugin panicked: %v", op, r), 0)
	}
}
