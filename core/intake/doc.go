// Package intake turns published events into durable events and delivery rows, whatever transport brought
// them: it decodes (decode.go: Sluice events and batches; cloudevents.go: structured, batch and binary
// CloudEvents from transport-neutral attributes), admits (Admit: the topic catalog in catalog.go, and the
// per-run subscriptions an event carries, handed to a Subscriptions — core/destinations — which owns their
// lanes), and publishes (Publish: routes with a match.Router, appends to the store, acknowledging only once
// durable, and hands fresh deliveries to the dispatcher). Refusals are *Error values whose Kind says why
// (ErrInvalid, ErrUnknownTopic, ...); the transport maps them to its own answers.
//
// amqp.go is a transport: an AMQP consumer that acks, requeues or dead-letters by those kinds. The HTTP
// transport lives in core/api.
//
// intake must not import net/http (nor core/api or core/destinations): HTTP is core/api's.
//
// May import: core/config, core/dispatch, core/event, core/match, core/netguard, core/store, sinks, plugins/sdk/....
// Must not import: net/http, core/destinations, core/api, sinks/webhook.
package intake
