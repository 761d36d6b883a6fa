// Package api is Sluice's HTTP surface: bearer-key auth with roles and tenants, the intake routes, the admin
// routes over events, deliveries and destinations (backed by the store and the destinations.Manager), the
// health endpoints, /metrics, and the OpenAPI 3.1 document (openapi.json, embedded and served at
// /v1/openapi.json). It wires handlers; the work happens in intake, store, destinations and dispatch.
//
// A key with a tenant sees only its tenant: another tenant's event, delivery or destination answers 404, never
// 403, so a key cannot learn what exists outside its tenant.
package api
