// Package intake turns published events into durable events and delivery rows: it validates, matches each
// event against the destinations (topics, tenant, scope, filter), appends to the store (acknowledging only once
// durable), and hands fresh deliveries to the dispatcher. HTTP (http.go, cloudevents.go) and AMQP consumers
// (amqp.go) end in the same Publish, after admit checks the topic catalog (catalog.go) and registers per-run
// subscriptions (inline.go).
package intake
