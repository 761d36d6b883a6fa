// Package proto is the generated gRPC contract between Sluice and its sink plugins (sink.proto, protocol
// version 1). It is internal to the SDK module: the SDK's wire package is both ends' only way to it, so
// plugin authors build on plugins/sdk and Sluice on plugins/host without ever naming it.
//
// Regenerate with `make proto` after editing sink.proto; TestGeneratedCodeIsFresh fails when the committed
// code does not match what the pinned generators produce.
package proto
