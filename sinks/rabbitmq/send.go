package rabbitmq

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// Send publishes the batch on one confirm-mode channel and waits for the broker's confirm of each message.
// It answers nil when every event was confirmed, else a *sinks.BatchError (or one error for the whole batch
// when nothing could be tried).
func (s *Sink) Send(ctx context.Context, batch []event.Event) error {
	if len(batch) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	errs := make([]error, len(batch))
	msgs := make([]amqp.Publishing, len(batch))
	keys := make([]string, len(batch))
	ids := make([]string, 0, len(batch))
	var batchID string
	if s.key.Uses("batch_id") {
		batchID = event.NewID()
	}
	now := s.now()
	ready := 0
	for i := range batch {
		if err := s.message(&batch[i], batchID, now, &msgs[i], &keys[i]); err != nil {
			errs[i] = err
			continue
		}
		ids = append(ids, batch[i].ID)
		ready++
	}
	if ready == 0 {
		return result(errs)
	}

	sess, err := s.session(ctx)
	if err == nil {
		if reason := sess.blocked.Load(); reason != nil {
			// Publishing now would hang on TCP back-pressure until the alarm clears.
			err = sinks.Retryable(fmt.Errorf("rabbitmq: the broker at %s blocks publishers (%s): it is short of memory or disk", s.where, *reason), 0)
		}
	}
	var pc *pubChan
	if err == nil {
		pc, err = s.channel(sess)
	}
	if err != nil {
		return s.fill(errs, err)
	}
	defer s.release(sess, pc)
	pc.expect(ids)
	defer pc.forget(ids)

	// Publish everything first, then wait: the broker confirms asynchronously, so one round trip covers the batch.
	dcs := make([]*amqp.DeferredConfirmation, len(batch))
	for i := range batch {
		if errs[i] != nil {
			continue
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, s.cfg.Exchange, keys[i], s.cfg.Mandatory, false, msgs[i])
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			} else {
				err = s.channelError(pc, err)
			}
			for j := i; j < len(batch); j++ {
				if errs[j] == nil {
					errs[j] = err
				}
			}
			break
		}
		dcs[i] = dc
	}

	for i, dc := range dcs {
		if dc == nil {
			continue
		}
		select {
		case <-dc.Done():
		case <-ctx.Done():
		}
		select {
		case <-dc.Done():
		default:
			// Not confirmed in time: it may still arrive at the queue, and the retry makes a duplicate, which
			// at-least-once allows; reporting it delivered would not be true.
			errs[i] = ctx.Err()
			continue
		}
		if !dc.Acked() {
			if cerr := pc.closeError(); cerr != nil || pc.ch.IsClosed() {
				errs[i] = s.channelError(pc, amqp.ErrClosed)
			} else {
				errs[i] = sinks.Retryable(fmt.Errorf("rabbitmq: the broker refused (nacked) the message for exchange %q", s.cfg.Exchange), 0)
			}
			continue
		}
		if r, returned := pc.returnedMsg(batch[i].ID); returned {
			errs[i] = sinks.Permanent(fmt.Errorf("rabbitmq: unroutable: exchange %s has no queue bound for routing key %q "+
				"(%d %s); bind a queue for it, or turn mandatory off to let the broker drop such messages",
				exchangeName(s.cfg.Exchange), keys[i], r.ReplyCode, r.ReplyText))
		}
	}
	return result(errs)
}

// message builds the AMQP message for ev. Its errors are permanent: the event itself is at fault.
func (s *Sink) message(ev *event.Event, batchID string, now time.Time, msg *amqp.Publishing, key *string) error {
	body, err := ev.Envelope()
	if err != nil {
		return sinks.Permanent(fmt.Errorf("rabbitmq: encode event %s: %v", ev.ID, err))
	}
	if len(body) > s.cfg.MaxMessageBytes {
		return sinks.Permanent(fmt.Errorf("rabbitmq: message of %d bytes is over max_message_bytes (%d)", len(body), s.cfg.MaxMessageBytes))
	}
	k, err := s.key.Render(ev, batchID, now)
	if err != nil {
		return sinks.Permanent(fmt.Errorf("rabbitmq: routing_key %s: %v", s.key, err))
	}
	if len(k) > maxKeyBytes {
		return sinks.Permanent(fmt.Errorf("rabbitmq: routing key of %d bytes is over AMQP's %d", len(k), maxKeyBytes))
	}
	*key = k
	h := amqp.Table{"id": ev.ID, "topic": ev.Topic}
	if ev.Tenant != "" {
		h["tenant"] = ev.Tenant
	}
	for mk, mv := range ev.Metadata {
		h["metadata."+mk] = mv
	}
	mode := amqp.Transient
	if s.cfg.Persistent {
		mode = amqp.Persistent
	}
	*msg = amqp.Publishing{
		Headers:       h,
		ContentType:   "application/json",
		DeliveryMode:  mode,
		MessageId:     ev.ID,
		CorrelationId: ev.CorrelationID,
		Timestamp:     ev.Time,
		Type:          ev.Topic,
		AppId:         "sluice",
		Body:          body,
	}
	return nil
}

// fill gives err to every event that has no error yet.
func (s *Sink) fill(errs []error, err error) error {
	for i := range errs {
		if errs[i] == nil {
			errs[i] = err
		}
	}
	return result(errs)
}

// result turns per-event errors into Send's answer: nil when all were delivered, the error itself for a
// batch of one, else a *sinks.BatchError.
func result(errs []error) error {
	failed := false
	for _, e := range errs {
		if e != nil {
			failed = true
			break
		}
	}
	switch {
	case !failed:
		return nil
	case len(errs) == 1:
		return errs[0]
	}
	return &sinks.BatchError{Errs: errs}
}

func exchangeName(x string) string {
	if x == "" {
		return "(default)"
	}
	return fmt.Sprintf("%q", x)
}
