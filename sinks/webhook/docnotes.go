package webhook

// DocNotes is the prose docs/sinks.md shows under the webhook's fields.
func (*Config) DocNotes() string {
	return `### Receivers

**Authentication.** ` + "`auth`" + ` takes exactly one of ` + "`oauth2_client_credentials`" + `, ` + "`basic`" + ` or ` + "`bearer`" + `.
With OAuth2, Sluice fetches a token from ` + "`token_url`" + ` (client credentials grant, with ` + "`scopes`" + `, ` + "`audience`" + `
and ` + "`extra_params`" + `), caches it until 30s before it expires and sends it as ` + "`Authorization: Bearer`" + `. A
401 from the receiver drops the token and the request is made once more with a fresh one. A token endpoint that
fails makes a retryable attempt error starting ` + "`oauth2 token endpoint:`" + `. The token endpoint is dialled through
the same SSRF guard as the receiver (` + "`delivery.network.allow_cidrs`" + `).

**mTLS.** ` + "`tls.client_cert`" + ` and ` + "`tls.client_key`" + ` (a PEM file path or the PEM itself) are presented to the
receiver; ` + "`tls.ca`" + ` replaces the system roots for verifying it. Files are checked on every attempt and read
again when they change (write the new file beside and rename it into place; a certificate whose key does not
match yet keeps the previous pair in use). Certificate failures are permanent: an unknown authority, a
certificate for another host name (set ` + "`tls.server_name`" + `) or a client certificate the receiver refuses.
` + "`tls.client_key`" + ` is secret: sealed in the store and masked everywhere, path or PEM.

**Templates.** ` + "`url`" + ` and ` + "`headers`" + ` values may use the placeholders of the queue sinks' names:
` + "`{data.account.region}`" + `, ` + "`{tenant}`" + `, ` + "`{metadata.key}`" + `, ` + "`{topic}`" + `, ` + "`{id}`" + `, each with an optional
default (` + "`{tenant:-none}`" + `); ` + "`{{`" + ` is a literal brace. For example
` + "`url: https://{data.account.region}.partner.example/hooks`" + `. A placeholder the event cannot fill fails that
event permanently, naming the path; a rendered host must stay a host name ending in the template's literal
suffix, and the SSRF guard judges the address it resolves to.

**Trace context.** Each request carries a W3C ` + "`traceparent`" + ` header: the attempt span's when tracing is on
(` + "`OTEL_EXPORTER_OTLP_ENDPOINT`" + ` or ` + "`OTEL_TRACES_EXPORTER=otlp`" + `), else the one the event was published with (the
` + "`traceparent`" + ` header of ` + "`POST /v1/events`" + ` or of an AMQP message, or a CloudEvent's ` + "`traceparent`" + `
extension), so publisher, Sluice and
receiver share one trace.

**Batches.** With ` + "`batch`" + `, the dispatcher fills a request with up to ` + "`max_events`" + ` events and ` + "`max_bytes`" + ` of
data, waiting at most ` + "`max_wait`" + ` for more. The body is a JSON array (` + "`batch.format: json`" + `) or NDJSON
(` + "`ndjson`" + `, ` + "`content-type: application/x-ndjson`" + `); each element is the event's standard body plus its id:

` + "```json" + `
[{"id": "0190…", "type": "case.status_updated", "timestamp": "2026-01-02T03:04:05Z", "data": {…}}, …]
` + "```" + `

The request is signed once; its ` + "`webhook-id`" + ` is the batch's (` + "`batch_`" + ` + 32 hex characters, derived from the
event ids, so a retried batch of the same events has the same id). A 2xx answer delivers every event; any
other status applies to all of them as for a single event. To fail some events, answer ` + "`207`" + ` with:

` + "```json" + `
{"results": [{"id": "0190…", "status": 200}, {"id": "0191…", "status": 503, "error": "busy"}]}
` + "```" + `

A 2xx result delivers that event; 408, 425, 429 and 5xx retry it; any other status fails it permanently (410
too: it does not disable the destination). An event the results do not mention is retried, and a 207 body
that is not this shape retries the whole batch. Batching needs ` + "`format: standard`" + `.
`
}
