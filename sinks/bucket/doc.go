// Package bucket is the object-storage sink: it writes each batch as NDJSON objects (one event envelope per
// line, optionally gzip-compressed) to Amazon S3 or an S3-compatible server, Google Cloud Storage, or a local
// directory, through gocloud.dev/blob.
//
// The dispatcher fills a batch up to max_events, max_bytes or max_age (sinks.Limits with Linger); Send writes
// one object per distinct rendered key, and an event counts as delivered only once the object holding it is
// complete (the writer's Close succeeded), so a failure at any point before that leaves no partial object and
// the retry writes the events again under a new batch id.
//
// Network clients dial through the sinks.Env dialer (the SSRF guard in production), and the cloud SDKs' own
// retries are off because the dispatcher owns retries. It imports the sink contract, core/event,
// sinks/template and core/netguard (to recognise a guard refusal), and nothing else of Sluice's.
//
// May import: core/event, core/netguard, sinks, sinks/awshttp, sinks/internal/..., sinks/template, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package bucket
