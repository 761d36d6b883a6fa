// Package hook lets sdktest reach the gRPC service of an *sdk.Plugin without sdk exporting it.
package hook

import "github.com/sluicehq/sluice/plugins/sdk/internal/proto"

// Service returns the Sink service of an *sdk.Plugin; sdk sets it in its init.
var Service func(plugin any) proto.SinkServer
