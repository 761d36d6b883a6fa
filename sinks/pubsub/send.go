package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// orderingKey is the Pub/Sub ordering key of an event: the value of its destination's `ordering_key`, which
// the dispatcher sets per delivery. A non-empty key turns on message ordering.
func orderingKey(ev *event.Event) string { return ev.OrderingKey }

// Send publishes the batch and waits for every event's result. It answers nil when all were published, else
// a *sinks.BatchError (or one error for a batch of one).
func (s *Sink) Send(ctx context.Context, batch []event.Event) error {
	if len(batch) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	errs := make([]error, len(batch))
	msgs := make([]*pubsub.Message, len(batch))
	ready := 0
	for i := range batch {
		msg, err := s.message(&batch[i])
		if err != nil {
			errs[i] = err
			continue
		}
		msgs[i] = msg
		ready++
	}
	if ready == 0 {
		return result(errs)
	}
	pub, err := s.publisher()
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		return result(errs)
	}
	results := make([]*pubsub.PublishResult, len(batch))
	for i, msg := range msgs {
		if msg != nil {
			results[i] = pub.Publish(ctx, msg)
		}
	}
	for i, r := range results {
		if r == nil {
			continue
		}
		if _, err := r.Get(ctx); err != nil {
			if ctx.Err() != nil {
				// Not confirmed in time: the client may still publish it, and the retry then makes a duplicate,
				// which at-least-once allows.
				errs[i] = ctx.Err()
				continue
			}
			if key := msgs[i].OrderingKey; key != "" {
				// The client pauses a key after a failure to keep order; the dispatcher keeps order itself and
				// retries, so let that retry through.
				pub.ResumePublish(key)
			}
			errs[i] = s.classify(err)
		}
	}
	return result(errs)
}

// message builds the Pub/Sub message for ev. Its errors are permanent: the event itself is at fault.
func (s *Sink) message(ev *event.Event) (*pubsub.Message, error) {
	body, err := ev.Envelope()
	if err != nil {
		return nil, sinks.Permanent(fmt.Errorf("pubsub: encode event %s: %v", ev.ID, err))
	}
	attrs := make(map[string]string, 3+len(ev.Metadata))
	attrs["id"] = ev.ID
	attrs["topic"] = ev.Topic
	if ev.Tenant != "" {
		attrs["tenant"] = ev.Tenant
	}
	for k, v := range ev.Metadata {
		attrs["metadata."+k] = v
	}
	if len(attrs) > maxAttributes {
		return nil, sinks.Permanent(fmt.Errorf("pubsub: event %s needs %d attributes (id, topic, tenant and one per metadata entry); Pub/Sub allows %d",
			ev.ID, len(attrs), maxAttributes))
	}
	size := len(body)
	for k, v := range attrs {
		if len(k) > maxAttrKeyBytes {
			return nil, sinks.Permanent(fmt.Errorf("pubsub: attribute name %.40q… is %d bytes; Pub/Sub allows %d", k, len(k), maxAttrKeyBytes))
		}
		if len(v) > maxAttrValBytes {
			return nil, sinks.Permanent(fmt.Errorf("pubsub: attribute %s is %d bytes; Pub/Sub allows %d", k, len(v), maxAttrValBytes))
		}
		size += len(k) + len(v)
	}
	if size > maxMessageBytes {
		return nil, sinks.Permanent(fmt.Errorf("pubsub: message of %d bytes (body and attributes) is over Pub/Sub's limit of %d", size, maxMessageBytes))
	}
	key := s.orderingKey(ev)
	if len(key) > maxOrderKeyBytes {
		return nil, sinks.Permanent(fmt.Errorf("pubsub: ordering key of %d bytes is over Pub/Sub's %d", len(key), maxOrderKeyBytes))
	}
	return &pubsub.Message{Data: body, Attributes: attrs, OrderingKey: key}, nil
}

// publisher returns the topic's publisher, making the client on first use.
func (s *Sink) publisher() (*pubsub.Publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, sinks.Retryable(errors.New("pubsub: sink is closed"), 0)
	}
	if s.pub != nil {
		return s.pub, nil
	}
	opts, err := s.options()
	if err != nil {
		return nil, err
	}
	// The client's context only sets it up; it must outlive this Send.
	client, err := pubsub.NewClient(context.Background(), s.cfg.Project, opts...)
	if err != nil {
		return nil, s.classify(fmt.Errorf("create client: %w", err))
	}
	pub := client.Publisher(s.topic)
	pub.PublishSettings.DelayThreshold = time.Millisecond // a dispatcher batch is already whole: send it now
	pub.PublishSettings.CountThreshold = MaxBatch
	pub.PublishSettings.ByteThreshold = pubsub.MaxPublishRequestBytes / 2
	// How long the client keeps retrying one request; an attempt the dispatcher gave up on should not live
	// much longer than the attempt.
	pub.PublishSettings.Timeout = s.timeout
	pub.EnableMessageOrdering = true
	s.client, s.pub = client, pub
	return pub, nil
}

func (s *Sink) options() ([]option.ClientOption, error) {
	var opts []option.ClientOption
	if s.cfg.EmulatorHost != "" {
		opts = append(opts,
			option.WithEndpoint(s.cfg.EmulatorHost),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
			option.WithoutAuthentication(),
			option.WithTelemetryDisabled(),
			internaloption.SkipDialSettingsValidation(),
		)
	}
	if s.cfg.CredentialsFile != "" {
		typ, err := credentialsType(s.cfg.CredentialsFile)
		if err != nil {
			return nil, sinks.Permanent(err)
		}
		opts = append(opts, option.WithAuthCredentialsFile(typ, s.cfg.CredentialsFile))
	}
	// gRPC's reconnect backoff grows to two minutes; a relay should notice the service is back sooner.
	opts = append(opts, option.WithGRPCDialOption(grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 10 * time.Second,
	})))
	// Proxy variables from the environment are ignored (a custom dialer disables them too; this covers the
	// tests that build a sink without one). delivery.network.proxy reaches gRPC through s.dial's CONNECT.
	opts = append(opts, option.WithGRPCDialOption(grpc.WithNoProxy()))
	if s.dial != nil {
		dial := s.dial
		opts = append(opts, option.WithGRPCDialOption(grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		})))
	}
	return opts, nil
}

// credentialsType reads the "type" of a Google credentials JSON file. The file is the operator's own config,
// so every kind Google issues is accepted; the error never shows the file's contents.
func credentialsType(path string) (option.CredentialsType, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("pubsub: credentials_file: %v", err)
	}
	var f struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return "", fmt.Errorf("pubsub: credentials_file %s is not a JSON credentials file", path)
	}
	switch t := option.CredentialsType(f.Type); t {
	case option.ServiceAccount, option.AuthorizedUser, option.ExternalAccount, option.ImpersonatedServiceAccount:
		return t, nil
	}
	return "", fmt.Errorf("pubsub: credentials_file %s has type %q; use a service_account, authorized_user, "+
		"external_account or impersonated_service_account file", path, f.Type)
}

// result turns per-event errors into Send's answer.
func result(errs []error) error {
	for _, e := range errs {
		if e != nil {
			if len(errs) == 1 {
				return e
			}
			return &sinks.BatchError{Errs: errs}
		}
	}
	return nil
}
