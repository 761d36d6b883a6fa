// Command v2plugin speaks only a future plugin protocol version, for the host's negotiation test.
package main

import (
	"github.com/hashicorp/go-plugin"
	"github.com/sluicehq/sluice/plugins/internal/wire"
	"github.com/sluicehq/sluice/plugins/proto"
)

func main() {
	hs := wire.Handshake
	hs.ProtocolVersion = 2
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  hs,
		VersionedPlugins: map[int]plugin.PluginSet{2: {wire.PluginKey: &wire.GRPCPlugin{Impl: proto.UnimplementedSinkServer{}}}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}
