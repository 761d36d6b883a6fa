// Package api is Sluice's HTTP surface: bearer-key auth with roles, the intake routes, the admin routes that
// read the store, and the health endpoints. It wires handlers; the work happens in intake, store and dispatch.
package api
