package wire

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"github.com/sluicehq/sluice/plugins/sdk/internal/proto"
	"google.golang.org/grpc"
)

// ProtocolVersion is the plugin protocol this build speaks (the proto package sluice.plugin.v1). A host
// offers every version it can speak and a plugin serves every version it can; go-plugin picks the newest
// both know.
const ProtocolVersion = 1

// PluginKey names the one plugin each plugin executable serves.
const PluginKey = "sink"

// Handshake is the go-plugin handshake. The cookie only stops a plugin from being run by hand by mistake;
// it is not a security measure (the sha256 pin is).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "SLUICE_PLUGIN",
	MagicCookieValue: "sink-v1-6d2f0e3a9b",
}

// GRPCPlugin adapts the Sink service to go-plugin: Server on the plugin side, a proto.SinkClient on the
// host side. Impl is the service a plugin serves (nil on the host).
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl proto.SinkServer
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers the sink service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	proto.RegisterSinkServer(s, p.Impl)
	return nil
}

// GRPCClient returns a proto.SinkClient over the plugin's connection.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return proto.NewSinkClient(c), nil
}

// Plugins is the plugin set for each protocol version served or accepted.
func Plugins(server proto.SinkServer) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{ProtocolVersion: {PluginKey: &GRPCPlugin{Impl: server}}}
}
