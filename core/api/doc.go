// Package api is Sluice's HTTP surface: bearer-key auth with roles and tenants, the intake routes, the admin
// routes over events, deliveries and destinations (backed by the store and the destinations.Manager), the
// health endpoints, /metrics, and the OpenAPI 3.1 document (openapi.json, embedded and served at
// /v1/openapi.json). It wires handlers; the work happens in intake, store, destinations and dispatch.
//
// It is the only package of core that speaks HTTP (besides netguard's proxy policy and telemetry's /metrics
// handler): the intake routes with the CloudEvents HTTP binding (publish.go), and the error model
// {"error": {"code", "message", "field"?}}. The packages behind it answer domain errors; errors.go maps them to
// statuses and codes in one table (statusOf).
//
// The web console (console/) is mounted at /console/ on the same port, with the same authorization (authz/: one
// rule for roles and tenants, used by both); portal.go makes its tenant portal links (POST /v1/portal-links).
//
// A key with a tenant sees only its tenant: another tenant's event, delivery or destination answers 404, never
// 403, so a key cannot learn what exists outside its tenant.
//
// Must not import: plugins/host, core/store/embedded, sinks/bucket, sinks/sqs, sinks/pubsub, sinks/rabbitmq.
package api
