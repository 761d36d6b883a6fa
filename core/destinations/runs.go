package destinations

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/intake"
	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/plugins/sdk/schema"
	"github.com/sluicehq/sluice/sinks"
)

// RunPrefix starts the destination name of every per-run subscription.
const RunPrefix = "inline-"

// runs is the per-run source of destinations (DESIGN §4): webhook destinations an event registers for its
// correlation id, kept in the store, expiring ttl after the last event that carried them. Intake hands them
// over through intake.Subscriptions; their lanes are built by the same Lanes as every other destination's,
// with the delivery defaults as policy.
type runs struct {
	m *Manager

	regMu sync.Mutex // one registration or expiry at a time: each writes the store, then changes lanes
	mu    sync.RWMutex
	on    bool
	ttl   time.Duration
	max   int
	// maxActive caps the live subscriptions of all tenants together and of each tenant alone.
	maxActive int
	pol       dispatch.Policy
	// byName and byCorr index the live subscriptions.
	byName map[string]*runSub
	byCorr map[string][]*runSub

	stopOnce sync.Once
	stop     chan struct{}
}

type runSub struct {
	store.Subscription
	topics match.Topics
	// written is when the expiry was last made durable; refreshes within a minute are not written again.
	written time.Time
}

var _ intake.Subscriptions = (*runs)(nil)

func newRuns(m *Manager) *runs {
	return &runs{m: m, byName: map[string]*runSub{}, byCorr: map[string][]*runSub{}, stop: make(chan struct{})}
}

// subscriptionName derives a subscription's destination name from what identifies it, so the same
// subscription sent again with each event of a run is one destination.
func subscriptionName(corr, tenant, url string, topics []string) string {
	t := slices.Clone(topics)
	slices.Sort(t)
	h := sha256.Sum256([]byte(corr + "\x00" + tenant + "\x00" + url + "\x00" + strings.Join(t, "\x00")))
	return RunPrefix + hex.EncodeToString(h[:8])
}

// Match returns the subscriptions ev reaches: same correlation id and tenant, a matching topic, not expired.
func (r *runs) Match(ev *event.Event) []string {
	now := r.m.opts.Now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, s := range r.byCorr[ev.CorrelationID] {
		if s.Tenant == ev.Tenant && now.Before(s.ExpiresAt) && s.topics.Match(ev.Topic) {
			out = append(out, s.Name)
		}
	}
	return out
}

// Register makes an event's subscriptions durable and starts their lanes before the event is published, so
// the event itself reaches them. A subscription already known is refreshed: its expiry moves to now+ttl.
func (r *runs) Register(ctx context.Context, ev *event.Event, reqs []intake.SubscriptionRequest, prefix string) error {
	var ops []*laneOp
	defer func() { r.m.q.run(ctx, ops) }()
	r.regMu.Lock()
	defer r.regMu.Unlock()
	r.mu.RLock()
	// Correlation ids are per tenant: another tenant's subscriptions under the same id neither count here
	// nor show in the refusal.
	on, have := r.on, 0
	for _, s := range r.byCorr[ev.CorrelationID] {
		if s.Tenant == ev.Tenant {
			have++
		}
	}
	active, tenantActive := len(r.byName), 0
	for _, s := range r.byName {
		if s.Tenant == ev.Tenant {
			tenantActive++
		}
	}
	r.mu.RUnlock()
	if !on {
		return intake.SubscriptionsOff(prefix)
	}
	now := r.m.opts.Now()
	for i, req := range reqs {
		p := fmt.Sprintf("%ssubscriptions[%d]", prefix, i)
		sub := store.Subscription{
			Name: subscriptionName(ev.CorrelationID, ev.Tenant, req.URL, req.Topics), CorrelationID: ev.CorrelationID,
			Tenant: ev.Tenant, URL: req.URL, Topics: req.Topics, Secret: req.Secret, CreatedAt: now, ExpiresAt: now.Add(r.ttl),
		}
		r.mu.RLock()
		old := r.byName[sub.Name]
		r.mu.RUnlock()
		if old != nil && old.Secret == sub.Secret {
			if now.Sub(old.written) < time.Minute {
				continue
			}
			sub.CreatedAt = old.CreatedAt
			if err := r.put(ctx, sub); err != nil {
				return notStored(p, err)
			}
			r.mu.Lock()
			old.ExpiresAt, old.written = sub.ExpiresAt, now
			r.mu.Unlock()
			continue
		}
		if old == nil {
			// One tenant may hold at most half of the cap, so it cannot take every slot from the others.
			if active >= r.maxActive || (ev.Tenant != "" && tenantActive >= max(r.maxActive/2, 1)) {
				return &intake.Error{Kind: intake.ErrBusy, Field: p,
					Msg: "too many live inline subscriptions (intake.inline_subscriptions.max_active); retry once some expire"}
			}
			active++
			tenantActive++
			if have >= r.max {
				return &intake.Error{Kind: intake.ErrLimit, Field: p,
					Msg: fmt.Sprintf("correlation id %q already has %d subscriptions, the most intake.inline_subscriptions.max_per_correlation allows", ev.CorrelationID, have)}
			}
			have++
		}
		sink, err := r.m.opts.Lanes.SubscriptionSink(context.WithoutCancel(ctx), sub, r.pol)
		if err != nil {
			return &intake.Error{Kind: intake.ErrInvalid, Field: p, Msg: "cannot deliver to this subscription: " + err.Error()}
		}
		topics, _ := match.CompileTopics(sub.Topics) // intake compiled them already
		if err := r.put(ctx, sub); err != nil {
			ops = append(ops, &laneOp{name: sub.Name, discard: sink})
			return notStored(p, err)
		}
		dd := r.destination(sub, sink)
		// A new secret replaces the lane with one whose sink signs with it.
		ops = append(ops, r.m.q.decide(&laneOp{name: sub.Name, start: &dd, replace: old != nil}))
		r.index(&runSub{Subscription: sub, topics: topics, written: now})
		r.m.log.Info("inline subscription registered", "destination", sub.Name, "correlation_id", sub.CorrelationID,
			"topics", sub.Topics, "expires_at", sub.ExpiresAt)
	}
	return nil
}

func notStored(field string, err error) error {
	return &intake.Error{Kind: intake.ErrUnavailable, Field: field,
		Msg: "the subscription was not stored: " + err.Error() + "; retry later"}
}

// put stores a subscription with its secret sealed when store.encryption_key is set.
func (r *runs) put(ctx context.Context, sub store.Subscription) error {
	if box := r.m.opts.Box; sub.Secret != "" && box.HasKey() {
		sealed, err := box.Seal(sub.Secret)
		if err != nil {
			return err
		}
		sub.Secret = sealed
	}
	// A URL with userinfo or query values carries secrets too (the one walker's rule, schema.MaskURL).
	if box := r.m.opts.Box; box.HasKey() && schema.MaskURL(sub.URL) != sub.URL {
		sealed, err := box.Seal(sub.URL)
		if err != nil {
			return err
		}
		sub.URL = sealed
	}
	return r.m.opts.Store.PutSubscription(ctx, sub)
}

// index adds (or, for a replaced one, swaps in) a live subscription.
func (r *runs) index(s *runSub) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unindex(s.Name)
	r.byName[s.Name] = s
	r.byCorr[s.CorrelationID] = append(r.byCorr[s.CorrelationID], s)
}

// unindex drops a subscription from the indexes. Callers hold r.mu.
func (r *runs) unindex(name string) {
	s := r.byName[name]
	if s == nil {
		return
	}
	delete(r.byName, name)
	list := slices.DeleteFunc(r.byCorr[s.CorrelationID], func(x *runSub) bool { return x.Name == name })
	if len(list) == 0 {
		delete(r.byCorr, s.CorrelationID)
	} else {
		r.byCorr[s.CorrelationID] = list
	}
}

// start restores the per-run subscriptions stored by earlier runs (starting their lanes, so deliveries left
// pending resume) and expires them as their time comes. With per-run subscriptions off, stored ones are
// ended: their pending deliveries are skipped.
func (r *runs) start(ctx context.Context, cfg *config.Config) error {
	c := cfg.Intake.InlineSubscriptions
	r.mu.Lock()
	r.on, r.ttl, r.max, r.maxActive = c.Enabled, c.TTL.D(), c.MaxPerCorrelation, c.MaxActive
	if r.maxActive <= 0 {
		r.maxActive = 10000
	}
	if r.ttl <= 0 {
		r.ttl = 24 * time.Hour
	}
	if r.max <= 0 {
		r.max = 10
	}
	r.pol = PolicyFor(cfg, &config.Destination{})
	r.mu.Unlock()
	subs, err := r.m.opts.Store.Subscriptions(ctx)
	if err != nil {
		return fmt.Errorf("restore inline subscriptions: %w", err)
	}
	if !c.Enabled {
		for _, s := range subs {
			if err := r.end(ctx, s.Name, "inline subscriptions are off (intake.inline_subscriptions.enabled)"); err != nil {
				return err
			}
		}
		return nil
	}
	now := r.m.opts.Now()
	for _, s := range subs {
		if !now.Before(s.ExpiresAt) {
			if err := r.end(ctx, s.Name, "inline subscription expired"); err != nil {
				return err
			}
			continue
		}
		if err := r.open(&s); err != nil {
			return err
		}
		sink, topics, err := r.build(ctx, s)
		if err != nil {
			r.m.log.Warn("dropping a stored inline subscription that can no longer be used", "destination", s.Name, "err", err)
			if err := r.end(ctx, s.Name, "inline subscription unusable: "+err.Error()); err != nil {
				return err
			}
			continue
		}
		// Nothing else runs yet: the lane starts at once.
		// Built to know it can run here; its lane builds it again when it has something to send.
		_ = sink.Close(ctx)
		r.m.opts.Dispatcher.Add(r.destination(s, nil))
		r.index(&runSub{Subscription: s, topics: topics, written: s.CreatedAt})
	}
	go r.sweep()
	return nil
}

// destination is the lane of a subscription (opened), with its webhook sink if just built (nil: built at the
// first send). The sink is let go
// of each time the lane goes to rest, and built again at its next send: an idle subscription keeps no HTTP
// transport, connection, or goroutine of one (DESIGN §9: they cost no goroutines while idle).
func (r *runs) destination(sub store.Subscription, sink sinks.Sink) dispatch.Destination {
	ls := &restingSink{r: r, sub: sub, cur: sink}
	return dispatch.Destination{Name: sub.Name, Sink: ls, Policy: r.pol, OnRest: ls.rest}
}

// restingSink is a subscription's sink, built while its lane works and dropped while it rests.
type restingSink struct {
	r   *runs
	sub store.Subscription
	mu  sync.Mutex
	cur sinks.Sink // nil while resting
}

func (s *restingSink) Send(ctx context.Context, batch []event.Event) error {
	s.mu.Lock()
	cur := s.cur
	if cur == nil {
		var err error
		// It was built at registration: it can fail now only if the network policy changed since.
		if cur, err = s.r.m.opts.Lanes.SubscriptionSink(context.WithoutCancel(ctx), s.sub, s.r.pol); err != nil {
			s.mu.Unlock()
			return sinks.Permanent(fmt.Errorf("cannot deliver to this subscription: %w", err))
		}
		s.cur = cur
	}
	s.mu.Unlock()
	return cur.Send(ctx, batch)
}

// rest drops the sink (closing it only drops idle connections: a send still running finishes on its own).
func (s *restingSink) rest() {
	s.mu.Lock()
	cur := s.cur
	s.cur = nil
	s.mu.Unlock()
	if cur != nil {
		_ = cur.Close(context.Background())
	}
}

func (s *restingSink) Close(ctx context.Context) error {
	s.mu.Lock()
	cur := s.cur
	s.cur = nil
	s.mu.Unlock()
	if cur != nil {
		return cur.Close(ctx)
	}
	return nil
}

// open unseals a stored subscription's secret and URL.
func (r *runs) open(s *store.Subscription) error {
	if s.Secret != "" && seal.IsSealed(s.Secret) {
		pt, _, err := r.m.opts.Box.Open(s.Secret)
		if err != nil {
			return fmt.Errorf("inline subscription %s: open its secret: %w", s.Name, err)
		}
		s.Secret = pt
	}
	if seal.IsSealed(s.URL) {
		pt, _, err := r.m.opts.Box.Open(s.URL)
		if err != nil {
			return fmt.Errorf("inline subscription %s: open its url: %w", s.Name, err)
		}
		s.URL = pt
	}
	return nil
}

// build makes the sink and compiles the topics of a stored (opened) subscription.
func (r *runs) build(ctx context.Context, s store.Subscription) (sinks.Sink, match.Topics, error) {
	topics, terr := match.CompileTopics(s.Topics)
	sink, err := r.m.opts.Lanes.SubscriptionSink(ctx, s, r.pol)
	if err == nil && terr != nil {
		_ = sink.Close(ctx)
		err = terr
	}
	return sink, topics, err
}

// sync brings the live subscriptions in line with the store, where other nodes register, refresh, expire and
// end them (a store.Watcher's change): a new one is indexed and its lane started, a refreshed one takes the
// later expiry, one registered again with a new secret (a new CreatedAt) gets a new lane, and one gone from
// the store is dropped and its lane stopped (the node that ended it skipped its pending deliveries).
func (r *runs) sync(ctx context.Context) error {
	var ops []*laneOp
	defer func() { r.m.q.run(ctx, ops) }()
	r.regMu.Lock()
	defer r.regMu.Unlock()
	r.mu.RLock()
	on := r.on
	r.mu.RUnlock()
	if !on {
		return nil // off, or not started
	}
	// Read under regMu: a registration on this node is either in what is read or after it.
	subs, err := r.m.opts.Store.Subscriptions(ctx)
	if err != nil {
		return fmt.Errorf("read inline subscriptions: %w", err)
	}
	now := r.m.opts.Now()
	stored := make(map[string]bool, len(subs))
	for _, s := range subs {
		stored[s.Name] = true
		r.mu.Lock()
		old := r.byName[s.Name]
		if old != nil && old.CreatedAt.Equal(s.CreatedAt) {
			if s.ExpiresAt.After(old.ExpiresAt) {
				old.ExpiresAt = s.ExpiresAt
			}
			r.mu.Unlock()
			continue
		}
		r.mu.Unlock()
		if !now.Before(s.ExpiresAt) {
			continue // the maintenance leader ends it
		}
		if err := r.open(&s); err != nil {
			r.m.log.Warn("inline subscription registered by another node cannot run here", "destination", s.Name, "err", err)
			continue
		}
		sink, topics, err := r.build(ctx, s)
		if err != nil {
			r.m.log.Warn("inline subscription registered by another node cannot run here", "destination", s.Name, "err", err)
			continue
		}
		_ = sink.Close(ctx) // built to know it can run here; its lane builds it again to send
		dd := r.destination(s, nil)
		ops = append(ops, r.m.q.decide(&laneOp{name: s.Name, start: &dd, replace: old != nil}))
		r.index(&runSub{Subscription: s, topics: topics, written: now})
	}
	r.mu.Lock()
	for name := range r.byName {
		if !stored[name] {
			r.unindex(name)
			ops = append(ops, r.m.q.decide(&laneOp{name: name, stop: true}))
		}
	}
	r.mu.Unlock()
	return nil
}

// end ends a subscription in the store: its pending deliveries are skipped, its row deleted.
func (r *runs) end(ctx context.Context, name, reason string) error {
	// A publish that matched the subscription before it was unindexed may still be appending its row.
	if r.m.pub != nil {
		r.m.pub.Settle()
	}
	if _, err := r.m.opts.Store.SkipPending(ctx, name, reason); err != nil {
		return fmt.Errorf("end inline subscription %s: %w", name, err)
	}
	return r.m.opts.Store.DeleteSubscription(ctx, name)
}

// sweep expires subscriptions until close.
func (r *runs) sweep() {
	every := min(max(r.ttl/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.expire(context.Background())
	}
}

// expire ends every subscription whose time is up: no new deliveries, its lane stopped, pending ones skipped.
// The lanes stop after the locks are released: stopping waits for attempts in flight. On a store several
// nodes share, only the maintenance leader ends them in the store (skips, deletes); the other nodes drop them
// from their registry and stop their lanes.
func (r *runs) expire(ctx context.Context) {
	var ops []*laneOp
	lead := true
	if l, ok := r.m.opts.Store.(store.Leader); ok {
		lead = l.Leading()
	}
	r.regMu.Lock()
	now := r.m.opts.Now()
	r.mu.Lock()
	for name, s := range r.byName {
		if !now.Before(s.ExpiresAt) {
			r.unindex(name)
			op := &laneOp{name: name, stop: true}
			if lead {
				op.then = func(ctx context.Context) { r.ended(ctx, name) }
			}
			ops = append(ops, r.m.q.decide(op))
		}
	}
	r.mu.Unlock()
	r.regMu.Unlock()
	r.m.q.run(ctx, ops)
	if _, shared := r.m.opts.Store.(store.Leader); shared && lead {
		r.expireStored(ctx, now)
	}
}

// expireStored ends, on the maintenance leader, expired subscriptions this node never ran (registered
// elsewhere and expired before this node learned of them, or unusable here).
func (r *runs) expireStored(ctx context.Context, now time.Time) {
	subs, err := r.m.opts.Store.Subscriptions(ctx)
	if err != nil {
		r.m.log.Warn("read inline subscriptions to expire; trying again at the next sweep", "err", err)
		return
	}
	for _, s := range subs {
		if !now.Before(s.ExpiresAt) {
			r.ended(ctx, s.Name)
		}
	}
}

// ended ends an expired subscription in the store once its lane has stopped, unless an event registered it
// again meanwhile (its row and pending deliveries then belong to the new lane).
func (r *runs) ended(ctx context.Context, name string) {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	r.mu.RLock()
	back := r.byName[name] != nil
	r.mu.RUnlock()
	if back {
		return
	}
	if err := r.end(ctx, name, "inline subscription expired"); err != nil {
		r.m.log.Error("end expired inline subscription; it is ended at the next start", "destination", name, "err", err)
		return
	}
	r.m.log.Info("inline subscription expired", "destination", name)
	if r.m.opts.OnRemoved != nil {
		r.m.opts.OnRemoved(name)
	}
}

func (r *runs) close() { r.stopOnce.Do(func() { close(r.stop) }) }
