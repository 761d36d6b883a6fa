// Package wire is what both ends of the plugin boundary share: the go-plugin handshake and protocol version,
// the go-plugin adapter for the gRPC service, and the conversions between sinks/core types and plugins/proto.
// It is internal so that plugin authors see only plugins/sdk and Sluice only plugins/host.
package wire
