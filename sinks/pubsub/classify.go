package pubsub

import (
	"errors"
	"fmt"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// classify maps a publish error to the dispatcher's classes. What retrying cannot fix — a missing topic,
// refused or missing credentials, a request the service calls invalid, a guard refusal — is permanent; the
// rest (unavailable, deadline, quota, internal) is retryable.
func (s *Sink) classify(err error) error {
	if refused := classify.Refused("pubsub", err); refused != nil {
		return refused
	}
	switch {
	case errors.Is(err, pubsub.ErrPublisherStopped):
		return sinks.Retryable(errors.New("pubsub: sink is closed"), 0)
	case errors.Is(err, pubsub.ErrOversizedMessage):
		return sinks.Permanent(fmt.Errorf("pubsub: message is over Pub/Sub's request limit: %v", err))
	}
	var paused pubsub.ErrPublishingPaused
	if errors.As(err, &paused) {
		return sinks.Retryable(fmt.Errorf("pubsub: ordering key %q paused after an earlier failure; resumed for the next attempt", paused.OrderingKey), 0)
	}
	st, ok := status.FromError(err)
	if !ok {
		var se interface{ GRPCStatus() *status.Status }
		if errors.As(err, &se) {
			st, ok = se.GRPCStatus(), true
		}
	}
	if !ok {
		return sinks.Retryable(fmt.Errorf("pubsub: publish to %s: %v", s.topic, err), 0)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		return sinks.Permanent(fmt.Errorf("pubsub: topic %s does not exist (%s); create it, Sluice does not", s.topic, msg))
	case codes.PermissionDenied:
		return sinks.Permanent(fmt.Errorf("pubsub: publish to %s denied (%s); grant the credentials roles/pubsub.publisher on the topic", s.topic, msg))
	case codes.Unauthenticated:
		return sinks.Permanent(fmt.Errorf("pubsub: publish to %s: not authenticated (%s); check credentials_file or the Application Default Credentials", s.topic, msg))
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented:
		return sinks.Permanent(fmt.Errorf("pubsub: publish to %s refused: %s (%s)", s.topic, msg, st.Code()))
	}
	return sinks.Retryable(fmt.Errorf("pubsub: publish to %s: %s (%s)", s.topic, msg, st.Code()), 0)
}
