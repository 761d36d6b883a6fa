package intake

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/match"
	"github.com/sluicehq/sluice/core/store"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Intake publishes events: match, append durably, hand to lanes.
type Intake struct {
	store   store.Store
	disp    *dispatch.Dispatcher
	router  atomic.Pointer[match.Router]
	catalog atomic.Pointer[catalog]
	subs    Subscriptions // nil: per-run subscriptions are refused
	opts    Options
	closed  atomic.Bool
	// flights counts the publishes between routing and the end of their append, by generation: Settle starts a
	// new generation and waits for the older ones, so it waits for the publishes that routed with a table since
	// replaced without holding up those that start meanwhile (a write lock would: every publish behind it
	// would wait for a commit, whenever a destination or a per-run subscription ends).
	flightMu sync.Mutex
	flight   *flight
	draining []*flight // older generations with publishes still in flight
}

// flight is one generation of publishes.
type flight struct {
	n    int
	done chan struct{} // set when Settle retires the generation with publishes in flight; closed by the last
}

// Options tune intake.
type Options struct {
	DedupeWindow time.Duration
	MaxBodyBytes int64
	// MaxBatch is the most events one batch request may carry.
	MaxBatch int
	Now      func() time.Time
	// Topics is the topic catalog GET /v1/topics shows. With ValidateTopics, an event whose topic is not in
	// it is refused (ErrUnknownTopic), and one whose data fails the topic's schema too (ErrSchemaMismatch).
	Topics         []config.Topic
	ValidateTopics bool
	// Subscriptions takes the per-run subscriptions events carry (core/destinations); nil refuses them.
	Subscriptions Subscriptions
	Logger        *slog.Logger
	// OnAccepted, when set, is called after each successful append with the number of events it stored
	// (duplicates and refused events excluded), for metrics.
	OnAccepted func(n int)
}

// ErrClosed is returned once the server is shutting down.
var ErrClosed = errors.New("intake is closed: the server is shutting down")

// New returns an intake over st and disp routing with r (nil routes nowhere until SetRouter).
func New(st store.Store, disp *dispatch.Dispatcher, r *match.Router, opts Options) *Intake {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if r == nil {
		r = match.NewRouter(nil)
	}
	in := &Intake{store: st, disp: disp, opts: opts, subs: opts.Subscriptions, flight: &flight{}}
	in.router.Store(r)
	in.SetCatalog(opts.Topics, opts.ValidateTopics)
	return in
}

// SetRouter swaps the routing table (config reload).
func (in *Intake) SetRouter(r *match.Router) { in.router.Store(r) }

// Settle returns once every Publish that was routing when it was called has stored its rows. After a routing
// table without a destination is set, Settle and then ending the destination's pending deliveries leaves
// none behind: no publish still holding the old table can add one later.
func (in *Intake) Settle() {
	in.flightMu.Lock()
	if old := in.flight; old.n > 0 {
		old.done = make(chan struct{})
		in.draining = append(in.draining, old)
	}
	in.flight = &flight{}
	wait := make([]chan struct{}, 0, len(in.draining))
	for _, f := range in.draining {
		wait = append(wait, f.done)
	}
	in.flightMu.Unlock()
	for _, ch := range wait {
		<-ch
	}
}

// enter counts a publish into the current generation; leave counts it out.
func (in *Intake) enter() *flight {
	in.flightMu.Lock()
	f := in.flight
	f.n++
	in.flightMu.Unlock()
	return f
}

func (in *Intake) leave(f *flight) {
	in.flightMu.Lock()
	f.n--
	if f.n == 0 && f.done != nil {
		close(f.done)
		in.draining = slices.DeleteFunc(in.draining, func(d *flight) bool { return d == f })
	}
	in.flightMu.Unlock()
}

// Close refuses further publishes.
func (in *Intake) Close() { in.closed.Store(true) }

// Admit checks a decoded event against the topic catalog and registers the per-run subscriptions it carries.
// Every transport calls it between decoding and Publish; prefix names the event inside a batch ("events[3].").
func (in *Intake) Admit(ctx context.Context, it *Item, prefix string) error {
	if err := in.catalog.Load().check(&it.Event, prefix); err != nil {
		return err
	}
	if len(it.Subscriptions) == 0 {
		return nil
	}
	if in.subs == nil {
		return SubscriptionsOff(prefix)
	}
	return in.subs.Register(ctx, &it.Event, it.Subscriptions, prefix)
}

// Result answers one published event.
type Result struct {
	ID         string `json:"id"`
	Duplicate  bool   `json:"duplicate"`
	Deliveries int    `json:"deliveries"`
	Err        error  `json:"-"`
}

// tracerName names intake's spans; the provider is the global one core/telemetry installs when tracing is on.
const tracerName = "github.com/sluicehq/sluice"

// offProvider is the global tracer provider before anything installs one (tracing off): while it is the
// global one, Publish starts no commit span, which would record nothing and cost allocations per publish.
var offProvider = otel.GetTracerProvider()

// noSpan records nothing.
var noSpan = trace.SpanFromContext(context.Background())

// Publish makes events durable with their delivery rows and returns once they are. Events must already be
// decoded and admitted (DecodeEvent, Admit); operator events skip both. A nil error means every Result
// without Err is durable.
func (in *Intake) Publish(ctx context.Context, evs []event.Event) ([]Result, error) {
	if in.closed.Load() {
		return nil, ErrClosed
	}
	defer in.leave(in.enter())
	r := in.router.Load()
	batch := make([]store.NewEvent, len(evs))
	// tickets holds, per event and destination, the lane place reserved for a delivery leased at birth. The
	// ticket, not the name, goes to Enqueue: the destination's lane may be replaced before the append returns.
	tickets := make([][]dispatch.Ticket, len(evs))
	for i := range evs {
		ev := &evs[i]
		if ev.ID == "" {
			ev.ID = event.NewID()
		}
		if ev.Time.IsZero() {
			ev.Time = in.opts.Now().UTC()
		}
		matches := r.Route(&match.Event{ID: ev.ID, Topic: ev.Topic, Tenant: ev.Tenant, CorrelationID: ev.CorrelationID,
			Metadata: ev.Metadata, Scope: ev.Scope, Doc: ev.Doc})
		if in.subs != nil && ev.CorrelationID != "" {
			for _, name := range in.subs.Match(ev) {
				matches = append(matches, match.Match{Name: name})
			}
		}
		for j := range matches {
			// A lane that disabled itself a moment ago: the event is kept as skipped, for a replay. A destination
			// whose lane a change has not started yet gets its delivery all the same: the lane claims it from the
			// store when it starts (and were the destination removed instead, Settle and the removal's skips end
			// it), so a publish in the gap between a new routing table and its lanes loses nothing.
			if !matches[j].Disabled && in.disp.Disabled(matches[j].Name) {
				matches[j].Disabled = true
			}
		}
		dests := make([]string, len(matches))
		leased := make([]bool, len(matches))
		tickets[i] = make([]dispatch.Ticket, len(matches))
		var keys, skipped []string
		var block []bool
		for j, m := range matches {
			dests[j] = m.Name
			if m.Disabled || m.Err != nil {
				// Kept as skipped, so a replay after the destination is enabled again sends it. A filter over its
				// budget skips the delivery with the reason (the event's fault).
				if skipped == nil {
					skipped = make([]string, len(matches))
				}
				skipped[j] = "destination disabled"
				if m.Err != nil {
					skipped[j] = m.Err.Error()
				}
				continue
			}
			if m.Key != "" {
				if keys == nil {
					keys, block = make([]string, len(matches)), make([]bool, len(matches))
				}
				keys[j], block[j] = m.Key, m.Block
				// Ordered deliveries always go through the store, which releases them one key at a time.
				continue
			}
			tickets[i][j] = in.disp.Reserve(m.Name)
			leased[j] = tickets[i][j].Reserved()
		}
		batch[i] = store.NewEvent{Event: *ev, Destinations: dests, Leased: leased, OrderingKeys: keys, OrderingBlock: block, Skipped: skipped}
	}
	release := func(i int) {
		for _, t := range tickets[i] {
			in.disp.Release(t)
		}
	}
	// Once queued for commit, the outcome must be waited for even if the caller gives up: deliveries leased at
	// birth would otherwise wait for the lease to run out.
	span := noSpan
	if otel.GetTracerProvider() != offProvider {
		ctx, span = otel.Tracer(tracerName).Start(ctx, "sluice.store.commit",
			trace.WithAttributes(attribute.Int("sluice.events", len(batch))))
	}
	res, err := in.store.Append(context.WithoutCancel(ctx), batch,
		store.AppendOptions{DedupeWindow: in.opts.DedupeWindow, Lease: dispatch.FreshLease})
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil {
		for i := range batch {
			release(i)
		}
		return nil, err
	}
	out := make([]Result, len(res))
	accepted := 0
	for i, ar := range res {
		ne := batch[i]
		out[i] = Result{ID: ar.ID, Duplicate: ar.Duplicate, Deliveries: len(ar.Deliveries), Err: ar.Err}
		if ar.Duplicate || ar.Err != nil {
			release(i)
			continue
		}
		accepted++
		for j, dl := range ar.Deliveries {
			switch {
			case tickets[i][j].Reserved():
				in.disp.Enqueue(tickets[i][j], dl, ne.Event)
			case j < len(ne.OrderingKeys) && ne.OrderingKeys[j] != "":
				in.disp.Poke(dl.Destination)
			}
		}
	}
	if accepted > 0 && in.opts.OnAccepted != nil {
		in.opts.OnAccepted(accepted)
	}
	return out, nil
}
