package intake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// Headers Sluice adds to a message it dead-letters.
const (
	HeaderRejectReason = "x-sluice-reject-reason"
	HeaderRejectQueue  = "x-sluice-queue"
)

// AMQP consumer tuning.
const (
	amqpWorkers    = 4   // concurrent batches per consumer; group commit merges their appends
	amqpMaxBatch   = 256 // messages one worker publishes in one call
	amqpMaxBackoff = 30 * time.Second
)

// ConsumeAMQP consumes one queue until ctx ends, reconnecting with backoff when the connection drops or the
// broker cancels the consumer. Each message is acknowledged only after its events are durable; a malformed one
// is rejected without requeue and, when dead_letter_exchange is set, published there first with the reason in
// the x-sluice-reject-reason header.
func (in *Intake) ConsumeAMQP(ctx context.Context, c config.AMQPIntake) {
	log := in.opts.Logger.With("consumer", c.Name, "queue", c.Queue)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		err := in.consumeOnce(ctx, c, log)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > amqpMaxBackoff {
			backoff = 100 * time.Millisecond
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("amqp consumer stopped; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, amqpMaxBackoff)
	}
}

// consumeOnce runs one connection until it fails, the broker cancels the consumer, or ctx ends.
func (in *Intake) consumeOnce(ctx context.Context, c config.AMQPIntake, log *slog.Logger) error {
	conn, err := amqp.DialConfig(c.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "sluice intake " + c.Name},
	})
	if err != nil {
		return fmt.Errorf("connect: %w", redactURL(err, c.URL))
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(c.Prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	if c.Declare {
		if _, err := ch.QueueDeclare(c.Queue, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare queue: %w", err)
		}
	}
	for _, b := range c.Bindings {
		for _, key := range b.RoutingKeys {
			if err := ch.QueueBind(c.Queue, key, b.Exchange, false, nil); err != nil {
				return fmt.Errorf("bind to exchange %s with key %q: %w", b.Exchange, key, err)
			}
		}
	}
	cancelled := ch.NotifyCancel(make(chan string, 1))
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	tag := fmt.Sprintf("sluice-%s-%d", c.Name, time.Now().UnixNano())
	deliveries, err := ch.ConsumeWithContext(ctx, c.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	log.Info("amqp consumer started", "prefetch", c.Prefetch, "topic_from", c.TopicFrom)

	dl := &deadLetter{conn: conn, exchange: c.DeadLetterExchange, queue: c.Queue, log: log}
	defer dl.close()
	work, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for range amqpWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.amqpWorker(work, c, deliveries, dl, log)
		}()
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var reason error
	select {
	case <-ctx.Done():
		// Unacknowledged messages go back to the queue when the channel closes; nothing in flight is lost.
		_ = ch.Cancel(tag, false)
	case tagGone := <-cancelled:
		reason = fmt.Errorf("the broker cancelled consumer %s (was the queue deleted?)", tagGone)
	case e := <-closed:
		if e != nil {
			reason = fmt.Errorf("connection closed: %w", e)
		} else {
			reason = errors.New("connection closed")
		}
	case <-workersDone:
		reason = errors.New("delivery channel closed")
	}
	stop()
	<-workersDone
	return reason
}

// amqpWorker takes whatever messages are waiting (up to amqpMaxBatch) and publishes them in one call.
func (in *Intake) amqpWorker(ctx context.Context, c config.AMQPIntake, deliveries <-chan amqp.Delivery, dl *deadLetter, log *slog.Logger) {
	batch := make([]amqp.Delivery, 0, amqpMaxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			batch = append(batch[:0], d)
		}
	fill:
		for len(batch) < amqpMaxBatch {
			select {
			case d, ok := <-deliveries:
				if !ok {
					break fill
				}
				batch = append(batch, d)
			default:
				break fill
			}
		}
		if !in.handleDeliveries(ctx, c, batch, dl, log) {
			return
		}
	}
}

// handleDeliveries publishes a batch of messages and settles each. It returns false when intake is closed (the
// messages stay unacknowledged and return to the queue).
func (in *Intake) handleDeliveries(ctx context.Context, c config.AMQPIntake, batch []amqp.Delivery, dl *deadLetter, log *slog.Logger) bool {
	type msg struct {
		d     amqp.Delivery
		first int // index of its first event in evs
		n     int
	}
	var msgs []msg
	var evs []event.Event
	// A consumer bound to a tenant stamps it on every event and refuses messages naming another, as a
	// tenant's publisher key does over HTTP.
	decodeCtx := ctx
	if c.Tenant != "" {
		decodeCtx = WithTenant(ctx, c.Tenant)
	}
	for _, d := range batch {
		items, err := in.amqpItems(decodeCtx, c, d)
		for i := 0; err == nil && i < len(items); i++ {
			prefix := ""
			if len(items) > 1 {
				prefix = fmt.Sprintf("[%d].", i)
			}
			if err = amqpTrusts(c, &items[i], prefix); err == nil {
				err = in.Admit(ctx, &items[i], prefix)
			}
		}
		if errors.Is(err, ErrUnavailable) {
			// Not the message's fault (the store could not record a subscription): it goes back to the queue.
			log.Error("amqp message not admitted; it returns to the queue", "message_id", d.MessageId, "err", err)
			_ = d.Nack(false, true)
			continue
		}
		if err != nil {
			dl.reject(ctx, d, err.Error())
			continue
		}
		m := msg{d: d, first: len(evs), n: len(items)}
		tp, _ := d.Headers["traceparent"].(string)
		for _, it := range items {
			KeepTraceparent(&it.Event, tp)
			evs = append(evs, it.Event)
		}
		msgs = append(msgs, m)
	}
	if len(evs) == 0 {
		return true
	}
	res, err := in.Publish(ctx, evs)
	if errors.Is(err, ErrClosed) {
		return false
	}
	if err != nil {
		log.Error("amqp messages not stored; they return to the queue", "messages", len(msgs), "err", err)
		for _, m := range msgs {
			_ = m.d.Nack(false, true)
		}
		select { // let the store recover rather than spin on the same messages
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return true
	}
	for _, m := range msgs {
		var failed error
		for _, r := range res[m.first : m.first+m.n] {
			if r.Err != nil {
				failed = r.Err
				break
			}
		}
		switch {
		case failed == nil:
			if err := m.d.Ack(false); err != nil {
				// The channel is gone: the message is redelivered and recognised as a duplicate by its id.
				log.Warn("ack failed; the message will be redelivered", "message_id", m.d.MessageId, "err", err)
			}
		case errors.Is(failed, store.ErrIDReused):
			dl.reject(ctx, m.d, "id: "+failed.Error())
		case errors.Is(failed, store.ErrFanout):
			// Sent again it would match as many destinations: it goes to the dead letters, not round and round.
			dl.reject(ctx, m.d, failed.Error())
		default:
			log.Error("amqp message not stored; it returns to the queue", "message_id", m.d.MessageId, "err", failed)
			_ = m.d.Nack(false, true)
		}
	}
	return true
}

// amqpTrusts refuses what a message may not decide for itself: whoever can publish to the queue is not
// thereby trusted to pick a tenant (allow_tenant_from_message) or to make Sluice call URLs of its choosing
// (allow_subscriptions). The refusal dead-letters the message with the reason.
func amqpTrusts(c config.AMQPIntake, it *Item, prefix string) error {
	if c.Tenant == "" && it.Event.Tenant != "" && !c.AllowTenantFromMessage {
		return refuse(ErrForbidden, prefix+"tenant", "consumer %q does not take a tenant from messages; "+
			"bind it to one with intake.amqp[].tenant, or set allow_tenant_from_message: true if every publisher "+
			"to the queue may choose", c.Name)
	}
	if len(it.Subscriptions) > 0 && !c.AllowSubscriptions {
		return refuse(ErrForbidden, prefix+"subscriptions", "consumer %q does not accept per-run subscriptions "+
			"from messages; set allow_subscriptions: true on it if every publisher to the queue may register them", c.Name)
	}
	return nil
}

// amqpItems decodes one message into events. A message is a CloudEvent when its content type says so
// (structured or batch) or when it carries cloudEvents:specversion (binary mode); otherwise it is a Sluice
// event (topic_from: body) or bare data whose topic is the routing key (topic_from: routing_key). The message_id
// property is the event id when the body gives none, so a redelivered message is recognised as a duplicate.
func (in *Intake) amqpItems(ctx context.Context, c config.AMQPIntake, d amqp.Delivery) ([]Item, error) {
	if int64(len(d.Body)) > in.opts.MaxBodyBytes {
		return nil, TooLarge(in.opts.MaxBodyBytes)
	}
	mt := mediaType(d.ContentType)
	switch {
	case mt == MediaCloudEventBatch:
		raws, err := SplitCloudEventBatch(d.Body)
		if err != nil {
			return nil, err
		}
		if len(raws) == 0 {
			return nil, invalid("", "the CloudEvents batch is empty")
		}
		items := make([]Item, len(raws))
		for i, raw := range raws {
			if items[i], err = DecodeCloudEvent(ctx, raw, fmt.Sprintf("[%d].", i)); err != nil {
				return nil, err
			}
		}
		return items, nil
	case mt == MediaCloudEvent:
		it, err := DecodeCloudEvent(ctx, d.Body, "")
		if err != nil {
			return nil, err
		}
		return []Item{it}, nil
	}
	if attrs := amqpCEAttrs(d.Headers); attrs != nil {
		it, err := BinaryCloudEvent(ctx, attrs, d.ContentType, d.Body, "cloudEvents:")
		if err != nil {
			return nil, err
		}
		return []Item{it}, nil
	}
	var body input
	if c.TopicFrom == config.TopicFromRoutingKey {
		topic := d.RoutingKey
		body.Topic = &topic
		data, err := dataFor(d.Body, d.ContentType, "data")
		if err != nil {
			return nil, err
		}
		body.Data = data
		if !d.Timestamp.IsZero() {
			t := d.Timestamp.UTC().Format(time.RFC3339Nano)
			body.Time = &t
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(d.Body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			return nil, invalid("", "the message body is not a Sluice event (%v); send {\"topic\": ..., \"data\": ...}, a CloudEvent, or set topic_from: routing_key to take the body as data",
				strings.TrimPrefix(err.Error(), "json: "))
		}
		if dec.More() {
			return nil, invalid("", "the message body must hold a single JSON object")
		}
	}
	if body.ID == nil && d.MessageId != "" {
		id := d.MessageId
		body.ID = &id
	}
	if body.CorrelationID == "" {
		body.CorrelationID = d.CorrelationId
	}
	it, err := jsonItem(ctx, &body, "")
	if err != nil {
		return nil, err
	}
	return []Item{it}, nil
}

// amqpCEAttrs returns the CloudEvents attributes of a binary-mode AMQP message (application properties
// prefixed cloudEvents: or cloudEvents_), or nil when it is not one.
func amqpCEAttrs(h amqp.Table) map[string]string {
	var attrs map[string]string
	for k, v := range h {
		var name string
		switch {
		case strings.HasPrefix(k, "cloudEvents:"):
			name = k[len("cloudEvents:"):]
		case strings.HasPrefix(k, "cloudEvents_"):
			name = k[len("cloudEvents_"):]
		default:
			continue
		}
		if attrs == nil {
			attrs = map[string]string{}
		}
		switch t := v.(type) {
		case string:
			attrs[name] = t
		case time.Time:
			attrs[name] = t.UTC().Format(time.RFC3339Nano)
		default:
			attrs[name] = fmt.Sprint(t)
		}
	}
	if attrs["specversion"] == "" {
		return nil
	}
	return attrs
}

// deadLetter rejects messages, first publishing them to the dead-letter exchange when one is configured.
type deadLetter struct {
	conn     *amqp.Connection
	exchange string
	queue    string
	log      *slog.Logger

	mu sync.Mutex
	ch *amqp.Channel // confirm-mode publishing channel, opened on first use and after a failure
}

func (dl *deadLetter) reject(ctx context.Context, d amqp.Delivery, reason string) {
	if dl.exchange != "" {
		if err := dl.publish(ctx, d, reason); err != nil {
			// Requeueing would block the queue on this message forever; the queue's own dead-lettering (if
			// any) still applies to the rejection.
			dl.log.Error("malformed message could not be dead-lettered; rejecting it", "message_id", d.MessageId,
				"reason", reason, "dead_letter_exchange", dl.exchange, "err", err)
		}
	} else {
		dl.log.Warn("malformed message rejected", "message_id", d.MessageId, "reason", reason)
	}
	_ = d.Reject(false)
}

func (dl *deadLetter) publish(ctx context.Context, d amqp.Delivery, reason string) error {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.ch == nil || dl.ch.IsClosed() {
		ch, err := dl.conn.Channel()
		if err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			ch.Close()
			return err
		}
		dl.ch = ch
	}
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[HeaderRejectReason] = reason
	headers[HeaderRejectQueue] = dl.queue
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conf, err := dl.ch.PublishWithDeferredConfirmWithContext(pctx, dl.exchange, d.RoutingKey, false, false, amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: amqp.Persistent,
		CorrelationId: d.CorrelationId, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId,
		Body: d.Body,
	})
	if err != nil {
		return err
	}
	ok, err := conf.WaitContext(pctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the broker refused the message (nack)")
	}
	return nil
}

func (dl *deadLetter) close() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.ch != nil {
		dl.ch.Close()
	}
}

// redactURL keeps a connection error from repeating the URL's password.
func redactURL(err error, rawURL string) error {
	msg := err.Error()
	if rawURL != "" && strings.Contains(msg, rawURL) {
		return errors.New(strings.ReplaceAll(msg, rawURL, "intake.amqp[].url"))
	}
	return err
}
