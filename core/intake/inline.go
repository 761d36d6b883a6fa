package intake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// InlineOptions configures per-run subscriptions: webhook destinations an event registers for its
// correlation id (DESIGN §4).
type InlineOptions struct {
	Enabled bool
	// TTL is how long a subscription lives after the last event that carried it.
	TTL time.Duration
	// MaxPerCorrelation caps the subscriptions of one correlation id.
	MaxPerCorrelation int
	// NewSink builds a subscription's webhook sink; the server's dials through the SSRF guard. An error means
	// the subscription is unusable (a bad url or secret) and is shown to the publisher.
	NewSink func(sub store.Subscription) (sinks.Sink, error)
	// Policy is the delivery policy of every subscription's lane.
	Policy dispatch.Policy
	// Seal and Open, when set, encrypt a subscription's signing secret at rest (store.encryption_key) and
	// decrypt it when subscriptions are restored.
	Seal func(secret string) (string, error)
	Open func(stored string) (string, error)
	// OnEnded, when set, hears of each subscription that expired (the server drops its metric series, which
	// would otherwise pile up with every run).
	OnEnded func(name string)
}

// SubscriptionRequest is one entry of an event's `subscriptions`.
type SubscriptionRequest struct {
	URL    string   `json:"url"`
	Topics []string `json:"topics"`
	Secret string   `json:"secret,omitempty"`
}

// InlinePrefix starts the destination name of every per-run subscription.
const InlinePrefix = "inline-"

// parseSubscriptions reads an event's subscriptions field strictly.
func parseSubscriptions(raw json.RawMessage, prefix string) ([]SubscriptionRequest, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var subs []SubscriptionRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&subs); err != nil {
		return nil, invalid(prefix+"subscriptions", "must be an array of {\"url\", \"topics\", \"secret\"?}: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	for i, s := range subs {
		p := fmt.Sprintf("%ssubscriptions[%d]", prefix, i)
		if s.URL == "" {
			return nil, invalid(p+".url", "is required: the webhook URL to deliver this run's events to")
		}
		if len(s.Topics) == 0 {
			return nil, invalid(p+".topics", "at least one topic pattern is required, e.g. [\"case.*\"]")
		}
		if _, err := match.CompileTopics(s.Topics); err != nil {
			return nil, invalid(p+".topics", "%v", err)
		}
	}
	return subs, nil
}

type inline struct {
	st   store.Store
	disp *dispatch.Dispatcher
	opts InlineOptions
	now  func() time.Time
	log  *slog.Logger

	regMu  sync.Mutex // one registration at a time: each writes the store and adds lanes
	mu     sync.RWMutex
	byName map[string]*inlineSub
	byCorr map[string][]*inlineSub

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

type inlineSub struct {
	store.Subscription
	topics match.Topics
	// written is when the expiry was last made durable; refreshes within a minute are not written again.
	written time.Time
}

func newInline(st store.Store, disp *dispatch.Dispatcher, opts InlineOptions, now func() time.Time, log *slog.Logger) *inline {
	if opts.TTL <= 0 {
		opts.TTL = 24 * time.Hour
	}
	if opts.MaxPerCorrelation <= 0 {
		opts.MaxPerCorrelation = 10
	}
	return &inline{st: st, disp: disp, opts: opts, now: now, log: log,
		byName: map[string]*inlineSub{}, byCorr: map[string][]*inlineSub{},
		stop: make(chan struct{}), done: make(chan struct{})}
}

// subscriptionName derives a subscription's destination name from what identifies it, so the same
// subscription sent again with each event of a run is one destination.
func subscriptionName(corr, tenant, url string, topics []string) string {
	t := slices.Clone(topics)
	slices.Sort(t)
	h := sha256.Sum256([]byte(corr + "\x00" + tenant + "\x00" + url + "\x00" + strings.Join(t, "\x00")))
	return InlinePrefix + hex.EncodeToString(h[:8])
}

// match returns the subscriptions ev reaches: same correlation id and tenant, a matching topic, not expired.
func (il *inline) match(ev *event.Event) []string {
	now := il.now()
	il.mu.RLock()
	defer il.mu.RUnlock()
	var out []string
	for _, s := range il.byCorr[ev.CorrelationID] {
		if s.Tenant == ev.Tenant && now.Before(s.ExpiresAt) && s.topics.Match(ev.Topic) {
			out = append(out, s.Name)
		}
	}
	return out
}

// register makes an event's subscriptions durable and starts their lanes before the event is published, so
// the event itself reaches them. A subscription already known is refreshed: its expiry moves to now+ttl.
func (il *inline) register(ctx context.Context, ev *event.Event, reqs []SubscriptionRequest, prefix string) error {
	il.regMu.Lock()
	defer il.regMu.Unlock()
	now := il.now()
	il.mu.RLock()
	have := len(il.byCorr[ev.CorrelationID])
	il.mu.RUnlock()
	for i, req := range reqs {
		p := fmt.Sprintf("%ssubscriptions[%d]", prefix, i)
		sub := store.Subscription{
			Name: subscriptionName(ev.CorrelationID, ev.Tenant, req.URL, req.Topics), CorrelationID: ev.CorrelationID,
			Tenant: ev.Tenant, URL: req.URL, Topics: req.Topics, Secret: req.Secret, CreatedAt: now, ExpiresAt: now.Add(il.opts.TTL),
		}
		il.mu.RLock()
		old := il.byName[sub.Name]
		il.mu.RUnlock()
		if old != nil && old.Secret == sub.Secret {
			if now.Sub(old.written) < time.Minute {
				continue
			}
			sub.CreatedAt = old.CreatedAt
			if err := il.put(ctx, sub); err != nil {
				return storeProblem(p, err)
			}
			il.mu.Lock()
			old.ExpiresAt, old.written = sub.ExpiresAt, now
			il.mu.Unlock()
			continue
		}
		if old == nil {
			if have >= il.opts.MaxPerCorrelation {
				return refuse(ErrLimit, p, "correlation id %q already has %d subscriptions, the most intake.inline_subscriptions.max_per_correlation allows", ev.CorrelationID, have)
			}
			have++
		}
		sink, err := il.opts.NewSink(sub)
		if err != nil {
			return invalid(p, "cannot deliver to this subscription: %v", err)
		}
		topics, _ := match.CompileTopics(sub.Topics) // parseSubscriptions compiled them already
		if err := il.put(ctx, sub); err != nil {
			_ = sink.Close(ctx)
			return storeProblem(p, err)
		}
		if old != nil {
			// A new secret: the lane restarts with a sink that signs with it.
			il.forget(old.Name)
			_ = il.disp.Remove(ctx, old.Name)
		}
		il.add(&inlineSub{Subscription: sub, topics: topics, written: now}, sink)
		il.log.Info("inline subscription registered", "destination", sub.Name, "correlation_id", sub.CorrelationID,
			"topics", sub.Topics, "expires_at", sub.ExpiresAt)
	}
	return nil
}

// put stores a subscription with its secret sealed.
func (il *inline) put(ctx context.Context, sub store.Subscription) error {
	if sub.Secret != "" && il.opts.Seal != nil {
		sealed, err := il.opts.Seal(sub.Secret)
		if err != nil {
			return err
		}
		sub.Secret = sealed
	}
	return il.st.PutSubscription(ctx, sub)
}

func storeProblem(field string, err error) error {
	return refuse(ErrUnavailable, field, "the subscription was not stored: %v; retry later", err)
}

func (il *inline) add(s *inlineSub, sink sinks.Sink) {
	il.disp.Add(dispatch.Destination{Name: s.Name, Sink: sink, Policy: il.opts.Policy})
	il.mu.Lock()
	il.byName[s.Name] = s
	il.byCorr[s.CorrelationID] = append(il.byCorr[s.CorrelationID], s)
	il.mu.Unlock()
}

func (il *inline) forget(name string) {
	il.mu.Lock()
	defer il.mu.Unlock()
	s := il.byName[name]
	if s == nil {
		return
	}
	delete(il.byName, name)
	list := slices.DeleteFunc(il.byCorr[s.CorrelationID], func(x *inlineSub) bool { return x.Name == name })
	if len(list) == 0 {
		delete(il.byCorr, s.CorrelationID)
	} else {
		il.byCorr[s.CorrelationID] = list
	}
}

// StartInline restores the per-run subscriptions stored by earlier runs (starting their lanes, so deliveries
// left pending resume) and expires them as their time comes. With per-run subscriptions off, stored ones are
// ended: their pending deliveries are skipped.
func (in *Intake) StartInline(ctx context.Context) error {
	subs, err := in.store.Subscriptions(ctx)
	if err != nil {
		return err
	}
	il := in.inline
	if il == nil {
		for _, s := range subs {
			if err := endSubscription(ctx, in.store, s.Name, "inline subscriptions are off (intake.inline_subscriptions.enabled)"); err != nil {
				return err
			}
		}
		return nil
	}
	now := il.now()
	for _, s := range subs {
		if !now.Before(s.ExpiresAt) {
			if err := endSubscription(ctx, il.st, s.Name, "inline subscription expired"); err != nil {
				return err
			}
			continue
		}
		var err error
		if s.Secret != "" && il.opts.Open != nil {
			if s.Secret, err = il.opts.Open(s.Secret); err != nil {
				return fmt.Errorf("inline subscription %s: open its secret: %w", s.Name, err)
			}
		}
		topics, terr := match.CompileTopics(s.Topics)
		sink, err := il.opts.NewSink(s)
		if err == nil && terr != nil {
			err = terr
		}
		if err != nil {
			il.log.Warn("dropping a stored inline subscription that can no longer be used", "destination", s.Name, "err", err)
			if err := endSubscription(ctx, il.st, s.Name, "inline subscription unusable: "+err.Error()); err != nil {
				return err
			}
			continue
		}
		il.add(&inlineSub{Subscription: s, topics: topics, written: s.CreatedAt}, sink)
	}
	go il.sweep()
	return nil
}

func endSubscription(ctx context.Context, st store.Store, name, reason string) error {
	if _, err := st.SkipPending(ctx, name, reason); err != nil {
		return fmt.Errorf("end inline subscription %s: %w", name, err)
	}
	return st.DeleteSubscription(ctx, name)
}

// sweep removes expired subscriptions until close.
func (il *inline) sweep() {
	defer close(il.done)
	every := min(max(il.opts.TTL/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-il.stop:
			return
		case <-t.C:
		}
		il.expire(context.Background())
	}
}

// expire ends every subscription whose time is up: no new deliveries, its lane stopped, pending ones skipped.
func (il *inline) expire(ctx context.Context) {
	il.regMu.Lock()
	defer il.regMu.Unlock()
	now := il.now()
	var gone []string
	il.mu.RLock()
	for name, s := range il.byName {
		if !now.Before(s.ExpiresAt) {
			gone = append(gone, name)
		}
	}
	il.mu.RUnlock()
	for _, name := range gone {
		il.forget(name)
		if err := il.disp.Remove(ctx, name); err != nil {
			il.log.Warn("close expired inline subscription", "destination", name, "err", err)
		}
		if err := endSubscription(ctx, il.st, name, "inline subscription expired"); err != nil {
			il.log.Error("end expired inline subscription; it is ended at the next start", "destination", name, "err", err)
			continue
		}
		il.log.Info("inline subscription expired", "destination", name)
		if il.opts.OnEnded != nil {
			il.opts.OnEnded(name)
		}
	}
}

func (il *inline) close() {
	il.stopOnce.Do(func() { close(il.stop) })
}
