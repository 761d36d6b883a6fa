// Package sqs is the Amazon SQS sink: it sends each batch with SendMessageBatch (up to 10 messages and 256 KiB
// per call), one message per event whose body is the event envelope and whose attributes carry the event id,
// topic, tenant and metadata, and reports every message's own result so the dispatcher retries only what SQS
// did not take.
//
// It works with any server that speaks the SQS JSON protocol (the `endpoint` setting): the tests run against
// fauxqs. The AWS SDK's own retries are off, because the dispatcher owns retries and their schedule; requests
// dial through the sinks.Env dialer (the SSRF guard in production). It imports the sink contract, core/event,
// sinks/template and core/netguard (to recognise a guard refusal), and nothing else of Sluice's.
//
// May import: core/event, core/netguard, sinks, sinks/awshttp, sinks/internal/..., sinks/template, plugins/sdk/....
// Must not import: core/store, core/dispatch, core/config, core/intake, core/destinations, core/api.
package sqs
