package rabbitmq

import (
	"crypto/x509"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/internal/classify"
)

// dialError classifies a failed connect. Refused credentials, a vhost the user may not use, a guard refusal and
// an untrusted certificate are permanent (retrying cannot fix them); the rest — refused, reset, timed out,
// DNS — are retryable. The URL is named with its password redacted.
func (s *Sink) dialError(err error) error {
	if refused := classify.Refused("rabbitmq: connect to "+s.where, err); refused != nil {
		return refused
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused, amqp.NotAllowed:
			return sinks.Permanent(fmt.Errorf("rabbitmq: connect to %s: access refused (%s); check the user, "+
				"password and vhost in url", s.where, ae.Reason))
		}
		return sinks.Retryable(fmt.Errorf("rabbitmq: connect to %s: %s", s.where, ae.Reason), 0)
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) {
		return sinks.Permanent(fmt.Errorf("rabbitmq: connect to %s: %v", s.where, err))
	}
	return sinks.Retryable(fmt.Errorf("rabbitmq: connect to %s: %v", s.where, err), 0)
}

// classifyAMQP classifies an error from a channel operation.
func classifyAMQP(op string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		msg := fmt.Errorf("rabbitmq: %s: %s (%d)", op, ae.Reason, ae.Code)
		switch ae.Code {
		case amqp.AccessRefused, amqp.NotFound, amqp.PreconditionFailed, amqp.NotAllowed:
			return sinks.Permanent(msg)
		}
		return sinks.Retryable(msg, 0)
	}
	return sinks.Retryable(fmt.Errorf("rabbitmq: %s: %v", op, err), 0)
}

// channelError classifies why a publish or its confirm failed, from the reason the channel was closed.
func (s *Sink) channelError(pc *pubChan, err error) error {
	cerr := pc.closeError()
	if cerr == nil {
		return sinks.Retryable(fmt.Errorf("rabbitmq: publish to exchange %s: connection lost before the broker "+
			"confirmed (%v)", exchangeName(s.cfg.Exchange), err), 0)
	}
	switch cerr.Code {
	case amqp.NotFound:
		return sinks.Permanent(fmt.Errorf("rabbitmq: exchange %s does not exist (%s); create it, or set "+
			"declare: true to have Sluice declare it", exchangeName(s.cfg.Exchange), cerr.Reason))
	case amqp.AccessRefused:
		return sinks.Permanent(fmt.Errorf("rabbitmq: publish to exchange %s refused (%s); grant the user write "+
			"permission on it", exchangeName(s.cfg.Exchange), cerr.Reason))
	case amqp.PreconditionFailed:
		return sinks.Permanent(fmt.Errorf("rabbitmq: publish to exchange %s: %s; if the message is too large, "+
			"lower max_message_bytes to the broker's max_message_size", exchangeName(s.cfg.Exchange), cerr.Reason))
	}
	return sinks.Retryable(fmt.Errorf("rabbitmq: publish to exchange %s: %s (%d)", exchangeName(s.cfg.Exchange), cerr.Reason, cerr.Code), 0)
}
