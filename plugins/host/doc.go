// Package host runs Sluice's sink plugins: it launches each executable declared under `plugins:` with
// hashicorp/go-plugin (gRPC only, sha256 pin checked before every launch, AutoMTLS, a parent-death signal so
// a killed Sluice leaves no orphans), negotiates the protocol version, asks the plugin to describe itself,
// and adapts it to sinks.Spec and sinks.Sink so the config loader and the dispatcher treat plugin sinks like
// built-in ones.
//
// Supervision: a plugin that exits or fails its health check is restarted with exponential backoff; sends
// in flight when it died, and sends while it restarts, fail retryably; sinks are reopened on the new process
// transparently. A plugin that keeps crashing makes Check fail (wired to /readyz) naming its destinations.
//
// The plugin's stdout, stderr and log records become records of the configured slog handler, naming the
// plugin once. Errors come back typed from the wire (plugins/sdk/wire): classes, per-event results, the
// context's own errors, config problems with their paths.
//
// host imports core/config, sinks and the SDK module's wire and schema packages; nothing but cmd/sluice
// imports host.
//
// May import: core/config, core/event, core/match, core/netguard, sinks, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/intake, core/destinations, core/api.
package host
