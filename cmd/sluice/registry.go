package main

import (
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/bucket"
	"github.com/sluicehq/sluice/sinks/pubsub"
	"github.com/sluicehq/sluice/sinks/rabbitmq"
	"github.com/sluicehq/sluice/sinks/sqs"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// registry lists every sink this binary ships. Adding a sink means adding it here.
func registry() *sinks.Registry {
	return sinks.NewRegistry(
		webhook.Spec,
		sqs.Spec,
		bucket.Spec,
		rabbitmq.Spec,
		pubsub.Spec,
	)
}
