package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/sinks"
)

// Reconnect backoff: the first retry after 100ms, doubling to at most 15s, ±20%.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 15 * time.Second
	heartbeat  = 10 * time.Second
	// maxIdleChannels bounds the pool; the dispatcher's concurrency is the usual number in use.
	maxIdleChannels = 64
)

// session is one AMQP connection and its pool of confirm-mode channels.
type session struct {
	conn    *amqp.Connection
	closes  chan *amqp.Error
	blocked atomic.Pointer[string] // the broker's reason while it blocks publishers (resource alarm)

	mu   sync.Mutex
	idle []*pubChan
}

// pubChan is a confirm-mode channel used by one Send at a time.
type pubChan struct {
	ch     *amqp.Channel
	closes chan *amqp.Error

	// With mandatory, returned messages are recorded by a forwarder goroutine: the broker sends basic.return
	// before the ack of the same message, and the client hands it to the forwarder before it processes that
	// ack, so after the ack a sync with the forwarder makes the return visible (see returned).
	returns  chan amqp.Return
	syncReq  chan chan struct{}
	fwdDone  chan struct{}
	rmu      sync.Mutex
	want     map[string]bool
	returned map[string]amqp.Return

	closeOnce sync.Once
	closeErr  *amqp.Error
}

// session returns the live connection, dialling when there is none. Within the backoff after a failed dial it
// answers the failure at once (retryable with the time left, or permanent for refused credentials).
func (s *Sink) session(ctx context.Context) (*session, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, sinks.Retryable(errors.New("rabbitmq: sink is closed"), 0)
	}
	if s.cur != nil {
		cur := s.cur
		s.mu.Unlock()
		return cur, nil
	}
	if s.dialing == nil {
		if wait := time.Until(s.nextDial); wait > 0 && s.lastErr != nil {
			err := s.lastErr
			s.mu.Unlock()
			if c, _ := sinks.Classify(err); c == sinks.ClassRetryable {
				return nil, sinks.Retryable(err, wait)
			}
			return nil, err
		}
		s.startDialLocked()
	}
	d := s.dialing
	s.mu.Unlock()
	select {
	case <-d:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		return s.cur, nil
	}
	if s.lastErr != nil {
		return nil, s.lastErr
	}
	return nil, sinks.Retryable(errors.New("rabbitmq: sink is closed"), 0)
}

func (s *Sink) startDialLocked() {
	d := make(chan struct{})
	s.dialing = d
	go func() {
		sess, err := s.open()
		s.mu.Lock()
		s.dialing = nil
		switch {
		case err != nil:
			s.lastErr = err
			s.failures++
			s.nextDial = time.Now().Add(backoff(s.failures))
		case s.closed:
			_ = sess.conn.Close()
		default:
			s.cur, s.lastErr, s.failures = sess, nil, 0
			go s.watch(sess)
		}
		s.mu.Unlock()
		close(d)
	}()
}

func backoff(failures int) time.Duration {
	d := backoffMin << min(failures-1, 10)
	d = min(d, backoffMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// watch waits for the connection to end; a connection lost (not closed by us) is re-dialled in the background
// with backoff so the dispatcher's next attempt finds a live one.
func (s *Sink) watch(sess *session) {
	aerr, lost := <-sess.closes
	s.mu.Lock()
	if s.cur == sess {
		s.cur = nil
	}
	closed := s.closed
	s.mu.Unlock()
	if !lost || aerr == nil || closed {
		return
	}
	s.log.Warn("rabbitmq connection lost; reconnecting", "server", s.where, "err", aerr.Error())
	for {
		s.mu.Lock()
		if s.closed || s.cur != nil {
			s.mu.Unlock()
			return
		}
		wait := time.Until(s.nextDial)
		if s.dialing == nil && wait <= 0 {
			s.startDialLocked()
		}
		d := s.dialing
		s.mu.Unlock()
		if d != nil {
			<-d
			s.mu.Lock()
			ok, err := s.cur != nil, s.lastErr
			s.mu.Unlock()
			if ok {
				s.log.Info("rabbitmq reconnected", "server", s.where)
				return
			}
			s.log.Warn("rabbitmq reconnect failed", "server", s.where, "err", err)
			continue
		}
		select {
		case <-time.After(wait):
		case <-s.done:
			return
		}
	}
}

// open dials, and declares the exchange when asked. Its error is classified.
func (s *Sink) open() (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	conn, err := amqp.DialConfig(s.cfg.URL, amqp.Config{
		Heartbeat: heartbeat,
		// Shown in the management UI, so ops can tell which destination a connection serves.
		Properties: amqp.Table{"connection_name": strings.TrimSpace("sluice " + s.dest)},
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := s.dialer(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bound the TLS and AMQP handshakes; the client clears the deadline once the connection is open.
			_ = c.SetDeadline(time.Now().Add(s.timeout))
			return c, nil
		},
	})
	if err != nil {
		return nil, s.dialError(err)
	}
	sess := &session{conn: conn, closes: conn.NotifyClose(make(chan *amqp.Error, 1))}
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go func() {
		for b := range blocks {
			if b.Active {
				reason := b.Reason
				sess.blocked.Store(&reason)
			} else {
				sess.blocked.Store(nil)
			}
		}
	}()
	if s.cfg.Declare {
		if err := s.declare(conn); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return sess, nil
}

func (s *Sink) declare(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return sinks.Retryable(fmt.Errorf("rabbitmq: open channel to declare exchange %q: %w", s.cfg.Exchange, err), 0)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(s.cfg.Exchange, s.cfg.ExchangeType, true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return sinks.Permanent(fmt.Errorf("rabbitmq: declare exchange %q: it exists with other settings "+
				"(%s); set exchange_type to match it, or remove declare: true to use it as it is", s.cfg.Exchange, ae.Reason))
		}
		return classifyAMQP(fmt.Sprintf("declare exchange %q", s.cfg.Exchange), err)
	}
	return nil
}

// channel takes an idle channel from the pool or opens one in confirm mode.
func (s *Sink) channel(sess *session) (*pubChan, error) {
	sess.mu.Lock()
	for len(sess.idle) > 0 {
		pc := sess.idle[len(sess.idle)-1]
		sess.idle = sess.idle[:len(sess.idle)-1]
		if !pc.ch.IsClosed() {
			sess.mu.Unlock()
			return pc, nil
		}
	}
	sess.mu.Unlock()
	ch, err := sess.conn.Channel()
	if err != nil {
		return nil, classifyAMQP("open channel", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, classifyAMQP("enable publisher confirms", err)
	}
	pc := &pubChan{ch: ch, closes: ch.NotifyClose(make(chan *amqp.Error, 1))}
	if s.cfg.Mandatory {
		pc.returns = ch.NotifyReturn(make(chan amqp.Return, 16))
		pc.syncReq = make(chan chan struct{})
		pc.fwdDone = make(chan struct{})
		pc.want = map[string]bool{}
		pc.returned = map[string]amqp.Return{}
		go pc.forward()
	}
	return pc, nil
}

// release puts a healthy channel back in the pool.
func (s *Sink) release(sess *session, pc *pubChan) {
	if pc.ch.IsClosed() {
		return
	}
	sess.mu.Lock()
	if len(sess.idle) < maxIdleChannels {
		sess.idle = append(sess.idle, pc)
		sess.mu.Unlock()
		return
	}
	sess.mu.Unlock()
	go func() { _ = pc.ch.Close() }()
}

func (pc *pubChan) forward() {
	defer close(pc.fwdDone)
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			pc.rmu.Lock()
			if pc.want[r.MessageId] {
				pc.returned[r.MessageId] = r
			}
			pc.rmu.Unlock()
		case ack := <-pc.syncReq:
			close(ack)
		}
	}
}

// expect registers the message ids of one Send, so returns for them are kept.
func (pc *pubChan) expect(ids []string) {
	if pc.returns == nil {
		return
	}
	pc.rmu.Lock()
	for _, id := range ids {
		pc.want[id] = true
	}
	pc.rmu.Unlock()
}

// forget drops a Send's ids and their returns.
func (pc *pubChan) forget(ids []string) {
	if pc.returns == nil {
		return
	}
	pc.rmu.Lock()
	for _, id := range ids {
		delete(pc.want, id)
		delete(pc.returned, id)
	}
	pc.rmu.Unlock()
}

// returnedMsg reports whether the broker returned message id, after every return sent before the acks seen
// so far has been recorded.
func (pc *pubChan) returnedMsg(id string) (amqp.Return, bool) {
	if pc.returns == nil {
		return amqp.Return{}, false
	}
	ack := make(chan struct{})
	select {
	case pc.syncReq <- ack:
		<-ack
	case <-pc.fwdDone:
	}
	pc.rmu.Lock()
	defer pc.rmu.Unlock()
	r, ok := pc.returned[id]
	return r, ok
}

// closeError is why the channel closed (nil while open or after a clean close).
func (pc *pubChan) closeError() *amqp.Error {
	if !pc.ch.IsClosed() {
		return nil
	}
	pc.closeOnce.Do(func() {
		// The client queues the reason before it marks the channel closed and nacks what was pending.
		select {
		case e := <-pc.closes:
			pc.closeErr = e
		case <-time.After(100 * time.Millisecond):
		}
	})
	return pc.closeErr
}
