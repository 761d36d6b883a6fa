package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sluicehq/sluice/plugins/sdk"
)

// Sink publishes to one JetStream stream.
type Sink struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	closed    chan struct{} // closed by Close: sends waiting for acks give up
	closeOnce sync.Once
}

var (
	_ sdk.Sink    = (*Sink)(nil)
	_ sdk.Limiter = (*Sink)(nil)
)

func newSink(ctx context.Context, cfg Config) (*Sink, error) {
	info := sdk.InfoFrom(ctx)
	opts := []nats.Option{
		// Every connection (reconnects too) goes through Sluice's SSRF guard and configured proxy.
		nats.SetCustomDialer(guardedDialer{dial: sdk.Dialer(ctx).DialContext, timeout: cfg.ConnectTimeout}),
		nats.Name("sluice/" + info.Destination),
		nats.Timeout(cfg.ConnectTimeout),
		// Keep reconnecting for as long as the sink lives, and fail publishes at once while disconnected
		// (no client-side buffer): Sluice's retry schedule is the buffer, and it survives restarts.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				slog.Warn("nats: disconnected", "destination", info.Destination, "err", err.Error())
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { slog.Info("nats: reconnected", "destination", info.Destination) }),
	}
	switch {
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.Username != "":
		opts = append(opts, nats.UserInfo(cfg.Username, cfg.Password))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, classifyConnect(err, cfg)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	s := &Sink{cfg: cfg, nc: nc, js: js, closed: make(chan struct{})}
	if cfg.CreateStream {
		if err := s.ensureStream(ctx); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return s, nil
}

// ensureStream creates the stream if it is missing; an existing one is left as ops configured it.
func (s *Sink) ensureStream(ctx context.Context) error {
	_, err := s.js.Stream(ctx, s.cfg.Stream)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("nats: look up stream %s: %w", s.cfg.Stream, err)
	}
	_, err = s.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: s.cfg.Stream, Subjects: s.cfg.streamSubjects(), Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil // created by another destination meanwhile
	}
	if err != nil {
		return classifyAPI(fmt.Errorf("nats: create stream %s with subjects %v: %w", s.cfg.Stream, s.cfg.streamSubjects(), err))
	}
	slog.Info("nats: created stream", "stream", s.cfg.Stream, "subjects", s.cfg.streamSubjects())
	return nil
}

// Limits lets Sluice batch up to max_batch events.
func (s *Sink) Limits() sdk.Limits { return sdk.Limits{MaxBatch: s.cfg.MaxBatch} }

// Send publishes the batch asynchronously and waits for every acknowledgement; each event gets its own
// outcome.
func (s *Sink) Send(ctx context.Context, batch []sdk.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.nc.IsClosed() {
		return errors.New("nats: the sink is closed")
	}
	if !s.nc.IsConnected() {
		return sdk.Retryable(fmt.Errorf("nats: not connected to %s (status %s); reconnecting", redact(s.cfg.URL), s.nc.Status()), 0)
	}
	errs := make([]error, len(batch))
	futures := make([]jetstream.PubAckFuture, len(batch))
	now := time.Now()
	max := s.nc.MaxPayload()
	for i := range batch {
		ev := &batch[i]
		subject, err := s.cfg.subject.Render(ev, "", now)
		if err != nil {
			errs[i] = sdk.Permanent(fmt.Errorf("nats: subject for event %s: %w", ev.ID, err))
			continue
		}
		if bad := invalidSubject(subject); bad != "" {
			errs[i] = sdk.Permanent(fmt.Errorf("nats: subject %q for event %s %s", subject, ev.ID, bad))
			continue
		}
		body, err := ev.Envelope()
		if err != nil {
			errs[i] = sdk.Permanent(fmt.Errorf("nats: encode event %s: %w", ev.ID, err))
			continue
		}
		if int64(len(body)) > max {
			errs[i] = sdk.Permanent(fmt.Errorf("nats: event %s is %d bytes; the server takes at most %d (max_payload)", ev.ID, len(body), max))
			continue
		}
		msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
		msg.Header.Set("Sluice-Topic", ev.Topic)
		msg.Header.Set("Content-Type", "application/json")
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(ev.ID)}
		if s.cfg.Stream != "" {
			opts = append(opts, jetstream.WithExpectStream(s.cfg.Stream))
		}
		futures[i], err = s.js.PublishMsgAsync(msg, opts...)
		if err != nil {
			errs[i] = classifyPublish(err)
		}
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs[i] = classifyPublish(err)
		case <-ctx.Done():
			errs[i] = ctx.Err()
		case <-s.closed:
			errs[i] = errors.New("nats: the sink was closed before the server acknowledged the event")
		}
	}
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	if failed == 0 {
		return nil
	}
	return &sdk.BatchError{Errs: errs}
}

// Close drains nothing: unacknowledged publishes are Sluice's to retry.
func (s *Sink) Close(context.Context) error {
	s.closeOnce.Do(func() { close(s.closed) })
	s.nc.Close()
	return nil
}

// invalidSubject says what is wrong with a rendered subject, or "".
func invalidSubject(s string) string {
	switch {
	case s == "":
		return "is empty"
	case strings.ContainsAny(s, " \t\r\n"):
		return "contains whitespace"
	case strings.ContainsAny(s, "*>"):
		return "contains a wildcard (* or >)"
	case strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, ".."):
		return "has an empty token"
	}
	return ""
}

// classifyConnect: refused credentials are permanent; anything else (server down, DNS) is retried.
func classifyConnect(err error, cfg Config) error {
	err = fmt.Errorf("nats: connect to %s: %w", redact(cfg.URL), err)
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		return sdk.Permanent(fmt.Errorf("%w: check username/password, token or creds_file", err))
	}
	return sdk.Retryable(err, 0)
}

// classifyPublish maps a publish or acknowledgement error to its class.
func classifyPublish(err error) error {
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return sdk.Permanent(fmt.Errorf("nats: publish: %w", err))
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		// No stream captures the subject. Retried: the stream may be being created or recovering; the
		// delivery log shows this message until it is fixed.
		return sdk.Retryable(fmt.Errorf("nats: publish: no stream captures the subject (create it, or set create_stream: true): %w", err), 0)
	}
	return classifyAPI(fmt.Errorf("nats: publish: %w", err))
}

// classifyAPI makes JetStream's refusals of the request itself permanent and everything else retryable.
func classifyAPI(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamNotFound:
			return sdk.Retryable(err, 0)
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, 10060: // 10060: the subject lands in another stream than `stream`
			return sdk.Permanent(err)
		}
		if apiErr.Code == 400 {
			return sdk.Permanent(err)
		}
	}
	return sdk.Retryable(err, 0)
}

// guardedDialer adapts sdk.Dialer to nats.CustomDialer, which has no context: each dial is bounded by the
// connect timeout instead.
type guardedDialer struct {
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	timeout time.Duration
}

func (g guardedDialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	return g.dial(ctx, network, address)
}
