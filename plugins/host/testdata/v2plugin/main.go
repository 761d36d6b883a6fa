// Command v2plugin speaks only a future plugin protocol version, for the host's negotiation test.
package main

import (
	"github.com/hashicorp/go-plugin"
	"github.com/sluicehq/sluice/plugins/sdk/wire"
)

func main() {
	hs := wire.Handshake
	hs.ProtocolVersion = 2
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: hs,
		// No service behind it: negotiation fails before any call.
		VersionedPlugins: map[int]plugin.PluginSet{2: {wire.PluginKey: &wire.GRPCPlugin{}}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}
