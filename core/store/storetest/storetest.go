package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// Case names, as subtests and as keys of Features.Reasons.
const (
	CaseAppend          = "Append"
	CaseDedupe          = "Dedupe"
	CaseTenantIDs       = "TenantIDs"
	CaseBornSkipped     = "BornSkipped"
	CaseDurable         = "Durable"
	CaseClaim           = "Claim"
	CaseLease           = "Lease"
	CaseComplete        = "Complete"
	CaseReleaseLeases   = "ReleaseLeases"
	CaseNextDue         = "NextDue"
	CaseDue             = "Due"
	CaseSkipPending     = "SkipPending"
	CaseOrdering        = "Ordering"
	CaseListEvents      = "ListEvents"
	CaseListDeliveries  = "ListDeliveries"
	CaseRetry           = "Retry"
	CaseReplay          = "Replay"
	CasePrune           = "Prune"
	CasePendingCounts   = "PendingCounts"
	CaseDestinations    = "Destinations"
	CaseStates          = "DestinationStates"
	CaseSubscriptions   = "Subscriptions"
	CaseConcurrent      = "Concurrent"
	CaseConcurrentDedup = "ConcurrentDedupe"
	CasePingClose       = "PingClose"
)

// ReplayDeliveries is how many deliveries to one destination the Replay case requeues in one call: enough
// that a driver which replays in batches (as the contract asks) crosses several.
const ReplayDeliveries = 3000

// Features says what the driver under test can do; the cases for abilities it lacks are skipped.
type Features struct {
	// NoReopen: the driver keeps nothing across Close (an in-memory store); the Durable case is skipped.
	NoReopen bool
	// Short shrinks the big fixtures (Concurrent, Replay still crosses batches) for slow drivers or -race.
	Short bool
	// Reasons explains, by case name (CaseDurable, …), why a driver lacks a feature; t.Skip shows it.
	Reasons map[string]string
}

// Target is one fresh store, and the way to open its data again.
type Target struct {
	// Store is a fresh, empty store that nothing else uses. The suite closes it.
	Store store.Store
	// Reopen opens the data of Store again after the suite closed it, as a restart does, with the same clock.
	// The suite closes what it returns. Nil (or Features.NoReopen) skips the Durable case.
	Reopen func(t *testing.T) store.Store
}

// Open opens a fresh store for one case. now is the store's clock: the driver takes every time it stamps
// (received_at, created_at, updated_at, the due time of a new delivery) from it, never from time.Now, so the
// suite moves time without sleeping. Open removes what it made with t.Cleanup.
type Open func(t *testing.T, now func() time.Time) Target

// Run runs every case against stores that open builds.
func Run(t *testing.T, f Features, open Open) {
	t.Helper()
	if open == nil {
		t.Fatal("storetest: open is required")
	}
	s := &suite{f: f, open: open}
	for _, c := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{CaseAppend, s.appendRead},
		{CaseDedupe, s.dedupe},
		{CaseTenantIDs, s.tenantIDs},
		{CaseBornSkipped, s.bornSkipped},
		{CaseDurable, s.durable},
		{CaseClaim, s.claim},
		{CaseLease, s.lease},
		{CaseComplete, s.complete},
		{CaseReleaseLeases, s.releaseLeases},
		{CaseNextDue, s.nextDue},
		{CaseDue, s.due},
		{CaseSkipPending, s.skipPending},
		{CaseOrdering, s.ordering},
		{CaseListEvents, s.listEvents},
		{CaseListDeliveries, s.listDeliveries},
		{CaseRetry, s.retry},
		{CaseReplay, s.replay},
		{CasePrune, s.prune},
		{CasePendingCounts, s.pendingCounts},
		{CaseDestinations, s.destinations},
		{CaseStates, s.states},
		{CaseSubscriptions, s.subscriptions},
		{CaseConcurrent, s.concurrent},
		{CaseConcurrentDedup, s.concurrentDedupe},
		{CasePingClose, s.pingClose},
	} {
		t.Run(c.name, c.run)
	}
}

type suite struct {
	f    Features
	open Open
}

func (s *suite) skip(t *testing.T, name, lack string) {
	t.Helper()
	if why := s.f.Reasons[name]; why != "" {
		t.Skipf("the driver lacks this: %s", why)
	}
	t.Skipf("the driver lacks this: %s", lack)
}

// T0 is where every case's clock starts: whole seconds, so drivers that keep microseconds compare equal.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Clock is the settable store clock the suite hands to Open. Its times are UTC and never finer than a
// microsecond, so a driver that stores microseconds (PostgreSQL) returns them unchanged.
type Clock struct{ n atomic.Int64 }

// NewClock returns a clock reading at.
func NewClock(at time.Time) *Clock { c := &Clock{}; c.n.Store(at.UnixNano()); return c }

// Now reads the clock.
func (c *Clock) Now() time.Time { return time.Unix(0, c.n.Load()).UTC() }

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) { c.n.Add(int64(d)) }

// env is one case's store, its clock and the way to restart it.
type env struct {
	t      *testing.T
	st     store.Store
	clock  *Clock
	reopen func(t *testing.T) store.Store
}

// store opens a fresh store on a clock at T0 and closes it at the end of the test.
func (s *suite) store(t *testing.T) *env {
	t.Helper()
	c := NewClock(T0)
	tg := s.open(t, c.Now)
	if tg.Store == nil {
		t.Fatal("storetest: Open returned a Target without Store")
	}
	e := &env{t: t, st: tg.Store, clock: c, reopen: tg.Reopen}
	t.Cleanup(func() { _ = e.st.Close() })
	return e
}

// restart closes the store and opens its data again.
func (e *env) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.st = e.reopen(e.t)
	if e.st == nil {
		e.t.Fatal("storetest: Reopen returned nil")
	}
}

var ctx = context.Background()

// opts is the AppendOptions of most cases: an hour's dedupe window and lease.
var opts = store.AppendOptions{DedupeWindow: time.Hour, Lease: time.Hour}

// newEvent returns an event with every field set.
func newEvent(id string) event.Event {
	return event.Event{ID: id, Topic: "case.created", Time: T0.Add(-time.Minute), Tenant: "acme", CorrelationID: "run-1",
		Metadata: map[string]string{"m": "1"}, Scope: map[string]string{"wf": "w1"}, Data: json.RawMessage(`{"case":{"id":"c-1"}}`)}
}

// to returns NewEvents for ids, each to dests.
func to(dests []string, ids ...string) []store.NewEvent {
	evs := make([]store.NewEvent, len(ids))
	for i, id := range ids {
		evs[i] = store.NewEvent{Event: newEvent(id), Destinations: dests}
	}
	return evs
}

func (e *env) append(evs []store.NewEvent) []store.AppendResult {
	e.t.Helper()
	return e.appendOpts(evs, opts)
}

func (e *env) appendOpts(evs []store.NewEvent, o store.AppendOptions) []store.AppendResult {
	e.t.Helper()
	res, err := e.st.Append(ctx, evs, o)
	if err != nil {
		e.t.Fatalf("Append: %v", err)
	}
	if len(res) != len(evs) {
		e.t.Fatalf("Append answered %d results for %d events", len(res), len(evs))
	}
	for i, r := range res {
		if r.Err != nil {
			e.t.Fatalf("Append event %s: %v", evs[i].Event.ID, r.Err)
		}
		if r.ID != evs[i].Event.ID {
			e.t.Fatalf("result %d answers id %q, want %q", i, r.ID, evs[i].Event.ID)
		}
	}
	return res
}

func (e *env) claim(dest string, now time.Time, lease time.Duration, limit int) []store.Job {
	e.t.Helper()
	jobs, err := e.st.Claim(ctx, dest, now, lease, limit)
	if err != nil {
		e.t.Fatalf("Claim %s: %v", dest, err)
	}
	return jobs
}

func (e *env) complete(outs ...store.Outcome) {
	e.t.Helper()
	if err := e.st.Complete(ctx, outs); err != nil {
		e.t.Fatalf("Complete: %v", err)
	}
}

func (e *env) delivery(id int64) *store.DeliveryRecord {
	e.t.Helper()
	d, err := e.st.Delivery(ctx, id)
	if err != nil {
		e.t.Fatalf("Delivery %d: %v", id, err)
	}
	return d
}

func (e *env) event(id string) *store.EventRecord {
	e.t.Helper()
	rec, err := e.st.Event(ctx, id)
	if err != nil {
		e.t.Fatalf("Event %s: %v", id, err)
	}
	return rec
}

// ids returns the delivery ids of jobs, in their order.
func ids(jobs []store.Job) []int64 {
	out := make([]int64, len(jobs))
	for i, j := range jobs {
		out[i] = j.Delivery.ID
	}
	return out
}

// eventIDs returns the event ids of jobs, in their order.
func eventIDs(jobs []store.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.Event.ID
	}
	return out
}

func delivered(id int64, n int, at time.Time) store.Outcome {
	return store.Outcome{DeliveryID: id, Status: store.Delivered, Attempt: store.Attempt{N: n, At: at, StatusCode: 204}}
}

func failed(id int64, n int, at time.Time) store.Outcome {
	return store.Outcome{DeliveryID: id, Status: store.Failed, Attempt: store.Attempt{N: n, At: at, StatusCode: 400, Error: "http 400"}}
}

func retryAt(id int64, n int, at, next time.Time) store.Outcome {
	return store.Outcome{DeliveryID: id, Status: store.Pending, NextAt: next,
		Attempt: store.Attempt{N: n, At: at, StatusCode: 503, Error: "http 503"}}
}

// listLimit is the contract's page size for a requested limit: <= 0 means 100, more than 1001 means 1001.
func listLimit(n int) int {
	if n <= 0 {
		return 100
	}
	return min(n, 1001)
}

// walkEvents lists every page of f (page size f.Limit) and fails on an order or cursor violation.
func (e *env) walkEvents(f store.EventFilter) []store.EventSummary {
	e.t.Helper()
	var all []store.EventSummary
	for pages := 0; ; pages++ {
		if pages > 10000 {
			e.t.Fatal("pagination does not end")
		}
		page, err := e.st.ListEvents(ctx, f)
		if err != nil {
			e.t.Fatalf("ListEvents %+v: %v", f, err)
		}
		if page == nil {
			e.t.Fatal("ListEvents answered nil, want an empty list")
		}
		if len(page) > listLimit(f.Limit) {
			e.t.Fatalf("page of %d, limit %d", len(page), f.Limit)
		}
		for _, ev := range page {
			if len(all) > 0 && ev.Seq >= all[len(all)-1].Seq {
				e.t.Fatalf("events not strictly newest first: seq %d after %d", ev.Seq, all[len(all)-1].Seq)
			}
			all = append(all, ev)
		}
		if len(page) < listLimit(f.Limit) {
			return all
		}
		f.Before = page[len(page)-1].Seq
	}
}

// walkDeliveries lists every page of f (page size f.Limit) and fails on an order or cursor violation.
func (e *env) walkDeliveries(f store.DeliveryFilter) []store.Delivery {
	e.t.Helper()
	var all []store.Delivery
	for pages := 0; ; pages++ {
		if pages > 10000 {
			e.t.Fatal("pagination does not end")
		}
		page, err := e.st.ListDeliveries(ctx, f)
		if err != nil {
			e.t.Fatalf("ListDeliveries %+v: %v", f, err)
		}
		if page == nil {
			e.t.Fatal("ListDeliveries answered nil, want an empty list")
		}
		if len(page) > listLimit(f.Limit) {
			e.t.Fatalf("page of %d, limit %d", len(page), f.Limit)
		}
		for _, d := range page {
			if len(all) > 0 && d.ID >= all[len(all)-1].ID {
				e.t.Fatalf("deliveries not strictly newest first: id %d after %d", d.ID, all[len(all)-1].ID)
			}
			all = append(all, d)
		}
		if len(page) < listLimit(f.Limit) {
			return all
		}
		f.Before = page[len(page)-1].ID
	}
}

// sameTime fails unless got and want are the same instant.
func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

// sortedIDs returns the event ids of summaries, sorted.
func sortedIDs(evs []store.EventSummary) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Event.ID
	}
	slices.Sort(out)
	return out
}

func seqID(prefix string, n int) string { return fmt.Sprintf("%s%04d", prefix, n) }
