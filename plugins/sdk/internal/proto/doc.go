// Package proto is the generated gRPC contract between Sluice and its sink plugins (sink.proto, protocol
// version 1). Only plugins/ imports it: plugin authors build on plugins/sdk, Sluice on plugins/host.
//
// Regenerate with `make proto` after editing sink.proto; TestGeneratedCodeIsFresh fails when the committed
// code does not match what the pinned generators produce.
package proto
