package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// clock is a settable store clock, so tests choose the received_at and created_at of what they append.
type clock struct{ n atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.n.Store(t.UnixNano()); return c }

func (c *clock) Now() time.Time          { return time.Unix(0, c.n.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.n.Add(int64(d)) }

func openClock(t *testing.T, dir string, c *clock) *Store {
	t.Helper()
	s, err := Open(dir, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func mustAppend(t *testing.T, s *Store, evs []store.NewEvent) []store.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), evs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return res
}

// walkEvents lists every page of f (page size f.Limit) and fails on an order or cursor violation.
func walkEvents(t *testing.T, s *Store, f store.EventFilter) []store.EventSummary {
	t.Helper()
	var all []store.EventSummary
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("pagination does not end")
		}
		page, err := s.ListEvents(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > listLimit(f.Limit) {
			t.Fatalf("page of %d, limit %d", len(page), f.Limit)
		}
		for _, e := range page {
			if len(all) > 0 && e.Seq >= all[len(all)-1].Seq {
				t.Fatalf("events not strictly newest first: seq %d after %d", e.Seq, all[len(all)-1].Seq)
			}
			all = append(all, e)
		}
		if len(page) < listLimit(f.Limit) {
			return all
		}
		f.Before = page[len(page)-1].Seq
	}
}

func walkDeliveries(t *testing.T, s *Store, f store.DeliveryFilter) []store.Delivery {
	t.Helper()
	var all []store.Delivery
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("pagination does not end")
		}
		page, err := s.ListDeliveries(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if page == nil {
			t.Fatal("ListDeliveries answered nil, want an empty list")
		}
		for _, d := range page {
			if len(all) > 0 && d.ID >= all[len(all)-1].ID {
				t.Fatalf("deliveries not strictly newest first: id %d after %d", d.ID, all[len(all)-1].ID)
			}
			all = append(all, d)
		}
		if len(page) < listLimit(f.Limit) {
			return all
		}
		f.Before = page[len(page)-1].ID
	}
}

func TestListEventsPagesAndFilters(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	topics, tenants := []string{"case.created", "case.closed", "user.added"}, []string{"acme", "", "globex", "acme"}
	type meta struct {
		topic, tenant string
		received      time.Time
	}
	want := map[string]meta{}
	// 12 batches of 100 events, one minute apart, so time bounds have something to cut.
	for b := range 12 {
		var evs []store.NewEvent
		for i := range 100 {
			n := b*100 + i
			ev := event.Event{ID: fmt.Sprintf("ev-%04d", n), Topic: topics[n%3], Tenant: tenants[n%4], Time: t0.Add(time.Duration(n) * time.Second),
				Metadata: map[string]string{"n": fmt.Sprint(n)}, Scope: map[string]string{"wf": "w1"}, CorrelationID: "run-" + fmt.Sprint(n%7),
				Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
			evs = append(evs, store.NewEvent{Event: ev, Destinations: []string{"d"}})
			want[ev.ID] = meta{ev.Topic, ev.Tenant, c.Now()}
		}
		mustAppend(t, s, evs)
		c.Advance(time.Minute)
	}

	all := walkEvents(t, s, store.EventFilter{Limit: 7})
	if len(all) != len(want) {
		t.Fatalf("walked %d events across pages, want %d", len(all), len(want))
	}
	seen := map[string]bool{}
	for _, e := range all {
		if seen[e.Event.ID] {
			t.Fatalf("event %s listed twice", e.Event.ID)
		}
		seen[e.Event.ID] = true
	}
	// The newest comes first and carries the whole event.
	e := all[0]
	if e.Event.ID != "ev-1199" || e.Event.Topic != topics[1199%3] || e.Event.Tenant != tenants[1199%4] ||
		!e.Event.Time.Equal(t0.Add(1199*time.Second)) || e.Event.Metadata["n"] != "1199" || e.Event.Scope["wf"] != "w1" ||
		e.Event.CorrelationID != "run-"+fmt.Sprint(1199%7) || string(e.Event.Data) != `{"n":1199}` || !e.ReceivedAt.Equal(want["ev-1199"].received) {
		t.Fatalf("newest summary: %+v", e)
	}

	// Limits: <= 0 means 100, more than 1001 means 1001 (the API pages 1000 and asks for one more).
	for limit, n := range map[int]int{0: 100, -3: 100, 5000: 1001, 10: 10} {
		page, err := s.ListEvents(ctx, store.EventFilter{Limit: limit})
		if err != nil || len(page) != n {
			t.Fatalf("limit %d: %d events, %v; want %d", limit, len(page), err, n)
		}
	}

	since, until := t0.Add(3*time.Minute), t0.Add(7*time.Minute)
	for name, tc := range map[string]struct {
		f    store.EventFilter
		keep func(meta) bool
	}{
		"topic":            {store.EventFilter{Topic: "case.closed"}, func(m meta) bool { return m.topic == "case.closed" }},
		"tenant":           {store.EventFilter{Tenant: "acme", TenantSet: true}, func(m meta) bool { return m.tenant == "acme" }},
		"tenant-less":      {store.EventFilter{TenantSet: true}, func(m meta) bool { return m.tenant == "" }},
		"tenant unset":     {store.EventFilter{Tenant: "acme"}, func(meta) bool { return true }},
		"since":            {store.EventFilter{Since: since}, func(m meta) bool { return !m.received.Before(since) }},
		"until":            {store.EventFilter{Until: until}, func(m meta) bool { return m.received.Before(until) }},
		"topic+tenant":     {store.EventFilter{Topic: "user.added", Tenant: "globex", TenantSet: true}, func(m meta) bool { return m.topic == "user.added" && m.tenant == "globex" }},
		"tenant+window":    {store.EventFilter{Tenant: "acme", TenantSet: true, Since: since, Until: until}, func(m meta) bool { return m.tenant == "acme" && !m.received.Before(since) && m.received.Before(until) }},
		"unknown topic":    {store.EventFilter{Topic: "nope"}, func(meta) bool { return false }},
		"unknown tenant":   {store.EventFilter{Tenant: "nope", TenantSet: true}, func(meta) bool { return false }},
		"empty window":     {store.EventFilter{Since: until, Until: since}, func(meta) bool { return false }},
		"topic+tenantless": {store.EventFilter{Topic: "case.created", TenantSet: true}, func(m meta) bool { return m.topic == "case.created" && m.tenant == "" }},
	} {
		t.Run(name, func(t *testing.T) {
			f := tc.f
			f.Limit = 33
			got := walkEvents(t, s, f)
			var wantIDs []string
			for id, m := range want {
				if tc.keep(m) {
					wantIDs = append(wantIDs, id)
				}
			}
			var gotIDs []string
			for _, e := range got {
				gotIDs = append(gotIDs, e.Event.ID)
			}
			slices.Sort(wantIDs)
			slices.Sort(gotIDs)
			if !slices.Equal(gotIDs, wantIDs) {
				t.Fatalf("got %d events, want %d", len(gotIDs), len(wantIDs))
			}
		})
	}
}

// deliveryFixture appends events to d1, d2 and d3 and moves their deliveries to every status.
func deliveryFixture(t *testing.T, s *Store, c *clock) {
	t.Helper()
	ctx := context.Background()
	for b := range 6 {
		var evs []store.NewEvent
		for i := range 50 {
			n := b*50 + i
			evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprintf("e%03d", n)), Destinations: []string{"d1", "d2", "d3"}[:1+n%3], Test: n%10 == 0})
		}
		mustAppend(t, s, evs)
		c.Advance(time.Minute)
	}
	for _, dest := range []string{"d1", "d2"} {
		jobs, err := s.Claim(ctx, dest, c.Now(), time.Minute, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var outs []store.Outcome
		for i, j := range jobs {
			switch i % 4 {
			case 0:
				outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now(), StatusCode: 204}})
			case 1:
				outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Failed, Attempt: store.Attempt{N: 1, At: c.Now(), StatusCode: 400, Error: "http 400"}})
			case 2:
				outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Pending, NextAt: c.Now().Add(time.Hour), Attempt: store.Attempt{N: 1, At: c.Now(), StatusCode: 503, Error: "http 503"}})
			}
			// case 3 stays leased
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SkipPending(ctx, "d3", "removed"); err != nil {
		t.Fatal(err)
	}
}

func TestListDeliveriesPagesAndFilters(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	deliveryFixture(t, s, c)

	all := walkDeliveries(t, s, store.DeliveryFilter{Limit: 9})
	if want := 300 + 200 + 100; len(all) != want {
		t.Fatalf("walked %d deliveries, want %d", len(all), want)
	}
	counts := map[store.Status]int{}
	tests := 0
	for _, d := range all {
		counts[d.Status]++
		if d.Test {
			tests++
		}
		if d.EventID == "" || d.Destination == "" || d.CreatedAt.IsZero() {
			t.Fatalf("incomplete delivery %+v", d)
		}
	}
	if counts[store.Delivered] == 0 || counts[store.Failed] == 0 || counts[store.Skipped] != 100 || counts[store.Pending] == 0 || tests == 0 {
		t.Fatalf("fixture statuses %v, %d tests", counts, tests)
	}
	if page, _ := s.ListDeliveries(ctx, store.DeliveryFilter{Limit: 5000}); len(page) != 600 {
		t.Fatalf("limit 5000 gave %d", len(page))
	}
	if page, _ := s.ListDeliveries(ctx, store.DeliveryFilter{}); len(page) != 100 {
		t.Fatalf("limit 0 gave %d, want 100", len(page))
	}

	since, until := t0.Add(2*time.Minute), t0.Add(4*time.Minute)
	for name, tc := range map[string]struct {
		f    store.DeliveryFilter
		keep func(store.Delivery) bool
	}{
		"one destination":     {store.DeliveryFilter{Destinations: []string{"d2"}}, func(d store.Delivery) bool { return d.Destination == "d2" }},
		"two destinations":    {store.DeliveryFilter{Destinations: []string{"d3", "d1", "d3"}}, func(d store.Delivery) bool { return d.Destination != "d2" }},
		"no destination":      {store.DeliveryFilter{Destinations: []string{}}, func(store.Delivery) bool { return false }},
		"unknown destination": {store.DeliveryFilter{Destinations: []string{"zz"}}, func(store.Delivery) bool { return false }},
		"failed":              {store.DeliveryFilter{Status: store.Failed}, func(d store.Delivery) bool { return d.Status == store.Failed }},
		"pending":             {store.DeliveryFilter{Status: store.Pending}, func(d store.Delivery) bool { return d.Status == store.Pending }},
		"skipped":             {store.DeliveryFilter{Status: store.Skipped}, func(d store.Delivery) bool { return d.Status == store.Skipped }},
		"delivered to d1,d2":  {store.DeliveryFilter{Status: store.Delivered, Destinations: []string{"d1", "d2"}}, func(d store.Delivery) bool { return d.Status == store.Delivered && d.Destination != "d3" }},
		"failed to d2":        {store.DeliveryFilter{Status: store.Failed, Destinations: []string{"d2"}}, func(d store.Delivery) bool { return d.Status == store.Failed && d.Destination == "d2" }},
		"event":               {store.DeliveryFilter{EventID: "e005"}, func(d store.Delivery) bool { return d.EventID == "e005" }},
		"event+destination":   {store.DeliveryFilter{EventID: "e005", Destinations: []string{"d3"}}, func(d store.Delivery) bool { return d.EventID == "e005" && d.Destination == "d3" }},
		"unknown event":       {store.DeliveryFilter{EventID: "nope"}, func(store.Delivery) bool { return false }},
		"window":              {store.DeliveryFilter{Since: since, Until: until}, func(d store.Delivery) bool { return !d.CreatedAt.Before(since) && d.CreatedAt.Before(until) }},
		"window to d1 failed": {store.DeliveryFilter{Since: since, Destinations: []string{"d1"}, Status: store.Failed}, func(d store.Delivery) bool {
			return !d.CreatedAt.Before(since) && d.Destination == "d1" && d.Status == store.Failed
		}},
	} {
		t.Run(name, func(t *testing.T) {
			f := tc.f
			f.Limit = 7
			got := walkDeliveries(t, s, f)
			var want []store.Delivery
			for _, d := range all {
				if tc.keep(d) {
					want = append(want, d)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("got %d deliveries, want %d", len(got), len(want))
			}
			for i := range got {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("delivery %d:\n got %+v\nwant %+v", i, got[i], want[i])
				}
			}
		})
	}
	if _, err := s.ListDeliveries(ctx, store.DeliveryFilter{Status: "bogus"}); err == nil {
		t.Fatal("an unknown status must be an error")
	}
}

func TestDeliveryRetryAndRetryBase(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	res := mustAppend(t, s, []store.NewEvent{
		{Event: newEvent("a"), Destinations: []string{"d"}, Test: true},
		{Event: newEvent("b"), Destinations: []string{"d"}, Leased: []bool{true}},
	})
	a, b := res[0].Deliveries[0].ID, res[1].Deliveries[0].ID
	if !res[0].Deliveries[0].Test {
		t.Fatal("Append does not answer Test")
	}
	// Three failed attempts, the last final.
	for n := 1; n <= 3; n++ {
		jobs, err := s.Claim(ctx, "d", c.Now(), time.Minute, 10)
		if err != nil || len(jobs) != 1 || jobs[0].Delivery.ID != a || !jobs[0].Delivery.Test {
			t.Fatalf("claim %d: %+v %v", n, jobs, err)
		}
		st := store.Pending
		if n == 3 {
			st = store.Failed
		}
		if err := s.Complete(ctx, []store.Outcome{{DeliveryID: a, Status: st, NextAt: c.Now(),
			Attempt: store.Attempt{N: n, At: c.Now(), Duration: 1500 * time.Microsecond, StatusCode: 500, Error: fmt.Sprint("http 500 #", n), Response: []byte("oops")}}}); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := s.Delivery(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != store.Failed || rec.Attempts != 3 || len(rec.AttemptLog) != 3 || rec.AttemptLog[2].N != 3 ||
		rec.AttemptLog[2].Duration != 1500*time.Microsecond || string(rec.AttemptLog[0].Response) != "oops" || !rec.Test || rec.EventID != "a" {
		t.Fatalf("delivery record %+v", rec)
	}
	if _, err := s.Delivery(ctx, 999999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown delivery: %v", err)
	}

	c.Advance(30 * time.Minute) // b's lease (an hour) still holds
	now := c.Now().Add(time.Second)
	d, err := s.Retry(ctx, a, now)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.Pending || d.RetryBase != 3 || d.Attempts != 3 || !d.NextAt.Equal(now) || d.LastError != "http 500 #3" || d.ID != a {
		t.Fatalf("retried delivery %+v", d)
	}
	jobs, err := s.Claim(ctx, "d", now, time.Minute, 10)
	if err != nil || len(jobs) != 1 || jobs[0].Delivery.RetryBase != 3 || jobs[0].Delivery.Attempts != 3 {
		t.Fatalf("claim after retry: %+v %v", jobs, err)
	}
	// Now it is leased, being attempted: a retry clashes. So does b, leased at birth.
	for _, id := range []int64{a, b} {
		if _, err := s.Retry(ctx, id, now); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("retry of leased delivery %d: %v", id, err)
		}
	}
	if _, err := s.Retry(ctx, 424242, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry of unknown delivery: %v", err)
	}
	// A pending delivery that is not leased is made due now.
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Retry(ctx, b, now); err != nil || d.Status != store.Pending || !d.NextAt.Equal(now) {
		t.Fatalf("retry of an unleased pending delivery: %+v %v", d, err)
	}
	if ev, _ := s.Event(ctx, "a"); ev.Deliveries[0].RetryBase != 3 || !ev.Deliveries[0].Test {
		t.Fatalf("Event does not surface RetryBase/Test: %+v", ev.Deliveries[0])
	}
}

func TestReplay(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	// 3000 deliveries to "r" (several batches) over six minutes, as many to "other".
	var ids []int64
	for b := range 30 {
		var evs []store.NewEvent
		for i := range 100 {
			evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprintf("r%d-%d", b, i)), Destinations: []string{"r", "other"}})
		}
		for _, r := range mustAppend(t, s, evs) {
			ids = append(ids, r.Deliveries[0].ID)
		}
		if b%5 == 4 {
			c.Advance(time.Minute)
		}
	}
	for _, dest := range []string{"r", "other"} {
		jobs, err := s.Claim(ctx, dest, c.Now(), time.Minute, 5000)
		if err != nil {
			t.Fatal(err)
		}
		var outs []store.Outcome
		for i, j := range jobs {
			st := []store.Status{store.Delivered, store.Failed, store.Pending, store.Delivered}[i%4]
			if i%4 == 3 && i%8 == 7 {
				continue // stays pending and leased
			}
			outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: st, NextAt: c.Now().Add(time.Hour),
				Attempt: store.Attempt{N: 1, At: c.Now(), Error: "e"}})
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	before := walkDeliveries(t, s, store.DeliveryFilter{Limit: 1000})
	byID := map[int64]store.Delivery{}
	want := map[store.Status]int{}
	for _, d := range before {
		byID[d.ID] = d
		if d.Destination == "r" {
			want[d.Status]++
		}
	}
	now := c.Now().Add(time.Hour)

	if n, err := s.Replay(ctx, store.ReplayFilter{Destination: "r", Statuses: []store.Status{store.Pending}}, now); err != nil || n != 0 {
		t.Fatalf("replay of pending only = %d %v, want 0", n, err)
	}
	if _, err := s.Replay(ctx, store.ReplayFilter{Destination: "r", Statuses: []store.Status{"bogus"}}, now); err == nil {
		t.Fatal("an unknown status must be an error")
	}
	n, err := s.Replay(ctx, store.ReplayFilter{Destination: "r", Statuses: []store.Status{store.Failed, store.Pending}}, now)
	if err != nil || n != want[store.Failed] {
		t.Fatalf("replay failed = %d %v, want %d", n, err, want[store.Failed])
	}
	// A time window: the first minute only.
	n, err = s.Replay(ctx, store.ReplayFilter{Destination: "r", Until: t0.Add(time.Minute)}, now)
	if err != nil {
		t.Fatal(err)
	}
	wantWindow := 0
	for _, d := range before {
		if d.Destination == "r" && d.Status == store.Delivered && d.CreatedAt.Before(t0.Add(time.Minute)) {
			wantWindow++
		}
	}
	if n != wantWindow || n == 0 {
		t.Fatalf("replay of the first minute = %d, want %d", n, wantWindow)
	}
	// Everything final (delivered, the rest of it) — more than one batch.
	n, err = s.Replay(ctx, store.ReplayFilter{Destination: "r", Since: t0}, now)
	if err != nil || n != want[store.Delivered]-wantWindow || n <= replayBatch {
		t.Fatalf("replay of the rest = %d %v, want %d (> one batch)", n, err, want[store.Delivered]-wantWindow)
	}

	after := walkDeliveries(t, s, store.DeliveryFilter{Limit: 1000})
	for _, d := range after {
		old := byID[d.ID]
		switch {
		case d.Destination != "r" || old.Status == store.Pending:
			if !reflect.DeepEqual(d, old) {
				t.Fatalf("replay touched a delivery it must not:\n was %+v\n now %+v", old, d)
			}
		default:
			if d.Status != store.Pending || !d.NextAt.Equal(now) || d.RetryBase != d.Attempts || d.Attempts != 1 || d.LastError != old.LastError {
				t.Fatalf("replayed delivery %+v (was %+v)", d, old)
			}
		}
	}
	// Replayed deliveries are claimable, with the fresh retry base.
	replayed := want[store.Failed] + want[store.Delivered]
	jobs, err := s.Claim(ctx, "r", now, time.Minute, 10000)
	if err != nil {
		t.Fatal(err)
	}
	based := 0
	for _, j := range jobs {
		if j.Delivery.RetryBase == 1 {
			based++
		}
	}
	if based != replayed {
		t.Fatalf("claimed %d deliveries with RetryBase 1, want %d (every replayed one)", based, replayed)
	}
	if n, err := s.Replay(ctx, store.ReplayFilter{Destination: "gone"}, now); err != nil || n != 0 {
		t.Fatalf("replay of an unknown destination = %d %v", n, err)
	}
}

func TestPruneKeepsPendingAndRecent(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	var old []string
	for i := range 10 {
		old = append(old, fmt.Sprint("old", i))
	}
	var evs []store.NewEvent
	for _, id := range old {
		evs = append(evs, store.NewEvent{Event: newEvent(id), Destinations: []string{"d", "e"}})
	}
	evs = append(evs, store.NewEvent{Event: newEvent("old-pending"), Destinations: []string{"d", "e"}})
	evs = append(evs, store.NewEvent{Event: newEvent("old-nodest")})
	res := mustAppend(t, s, evs)
	for _, dest := range []string{"d", "e"} {
		jobs, _ := s.Claim(ctx, dest, c.Now(), time.Minute, 100)
		var outs []store.Outcome
		for _, j := range jobs {
			if j.Event.ID == "old-pending" && dest == "e" {
				continue
			}
			outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: c.Now()}})
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	c.Advance(time.Hour)
	cutoff := c.Now()
	recent := mustAppend(t, s, []store.NewEvent{{Event: newEvent("recent"), Destinations: []string{"d"}}})
	if err := s.Complete(ctx, []store.Outcome{{DeliveryID: recent[0].Deliveries[0].ID, Status: store.Delivered, Attempt: store.Attempt{N: 1}}}); err != nil {
		t.Fatal(err)
	}

	total := 0
	for {
		n, err := s.Prune(ctx, cutoff, 4)
		if err != nil {
			t.Fatal(err)
		}
		if n > 4 {
			t.Fatalf("pruned %d, limit 4", n)
		}
		total += n
		if n < 4 {
			break
		}
	}
	if total != 11 {
		t.Fatalf("pruned %d events, want 11 (10 delivered + 1 without deliveries)", total)
	}
	for _, id := range append(old, "old-nodest") {
		if _, err := s.Event(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("event %s survived: %v", id, err)
		}
	}
	if _, err := s.Delivery(ctx, res[0].Deliveries[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delivery of a pruned event survived: %v", err)
	}
	for _, id := range []string{"old-pending", "recent"} {
		if _, err := s.Event(ctx, id); err != nil {
			t.Fatalf("event %s must be kept: %v", id, err)
		}
	}
	var attempts, deliveries int
	s.rdb.QueryRow(`SELECT count(*) FROM attempts`).Scan(&attempts)
	s.rdb.QueryRow(`SELECT count(*) FROM deliveries`).Scan(&deliveries)
	if attempts != 2 || deliveries != 3 {
		t.Fatalf("%d attempts and %d deliveries left, want 2 and 3 (old-pending's and recent's)", attempts, deliveries)
	}
	if n, err := s.Prune(ctx, cutoff, 0); err != nil || n != 0 {
		t.Fatalf("prune with nothing left = %d %v", n, err)
	}
}

func TestPendingCounts(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	got, err := s.PendingCounts(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v %v", got, err)
	}
	deliveryFixture(t, s, c)
	want := map[string]int64{}
	for _, d := range walkDeliveries(t, s, store.DeliveryFilter{Limit: 1000}) {
		if d.Status == store.Pending {
			want[d.Destination]++
		}
	}
	if got, err = s.PendingCounts(ctx); err != nil || !reflect.DeepEqual(got, want) || len(want) != 2 {
		t.Fatalf("pending counts %v %v, want %v", got, err, want)
	}
}

func TestDestinationsCRUD(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	if got, err := s.Destinations(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	a := store.DestinationRecord{ID: "dst_a", Name: "alpha", Tenant: "acme", Type: "webhook", Spec: []byte(`{"url":"x"}`),
		Retiring: []store.RetiringSecret{{Secret: "sealed:1", Until: t0.Add(time.Hour)}}, CreatedAt: t0.Add(time.Minute), UpdatedAt: t0.Add(time.Minute)}
	b := store.DestinationRecord{ID: "dst_b", Name: "beta", Type: "sqs", Spec: []byte(`{}`), CreatedAt: t0, UpdatedAt: t0}
	for _, d := range []store.DestinationRecord{a, b} {
		if err := s.PutDestination(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Destinations(ctx)
	if err != nil || !reflect.DeepEqual(got, []store.DestinationRecord{b, a}) {
		t.Fatalf("oldest first:\n got %+v\nwant %+v (%v)", got, []store.DestinationRecord{b, a}, err)
	}
	// A name taken by another id clashes; the stored one is unchanged.
	clash := b
	clash.Name = "alpha"
	err = s.PutDestination(ctx, clash)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("name clash: %v", err)
	}
	t.Logf("clash: %v", err)
	// Replace by id: rename, new spec, no retiring secrets, creation time kept when not given.
	a2 := store.DestinationRecord{ID: "dst_a", Name: "alpha-2", Tenant: "acme", Type: "webhook", Spec: []byte(`{"url":"y"}`), UpdatedAt: t0.Add(2 * time.Minute)}
	if err := s.PutDestination(ctx, a2); err != nil {
		t.Fatal(err)
	}
	a2.CreatedAt = a.CreatedAt
	// The old name is free again.
	c.Advance(time.Hour)
	c2 := store.DestinationRecord{ID: "dst_c", Name: "alpha", Type: "webhook"}
	if err := s.PutDestination(ctx, c2); err != nil {
		t.Fatalf("reusing a released name: %v", err)
	}
	c2.CreatedAt, c2.UpdatedAt = c.Now(), c.Now()
	got, _ = s.Destinations(ctx)
	if want := []store.DestinationRecord{b, a2, c2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after replace:\n got %+v\nwant %+v", got, want)
	}
	if err := s.DeleteDestination(ctx, "dst_b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDestination(ctx, "dst_b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting an unknown destination: %v", err)
	}
	got, _ = s.Destinations(ctx)
	if len(got) != 2 || got[0].ID != "dst_a" || got[1].ID != "dst_c" {
		t.Fatalf("after delete: %+v", got)
	}
	if err := s.PutDestination(ctx, store.DestinationRecord{Name: "x"}); err == nil {
		t.Fatal("a destination without id must be refused")
	}
}

func TestDestinationStates(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	dir := t.TempDir()
	s := openClock(t, dir, c)
	if got, err := s.DestinationStates(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	x := store.DestinationState{Name: "x", Enabled: false, Reason: "410 Gone", UpdatedAt: t0}
	y := store.DestinationState{Name: "y", Enabled: true}
	for _, st := range []store.DestinationState{y, x} {
		if err := s.SetDestinationState(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	y.UpdatedAt = c.Now()
	x2 := store.DestinationState{Name: "x", Enabled: true, Reason: "enabled over the API", UpdatedAt: t0.Add(time.Hour)}
	if err := s.SetDestinationState(ctx, x2); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDestinationState(ctx, "unknown"); err != nil {
		t.Fatalf("forgetting an unknown state: %v", err)
	}
	s.Close()
	s = openClock(t, dir, c)
	got, err := s.DestinationStates(ctx)
	if err != nil || !reflect.DeepEqual(got, []store.DestinationState{x2, y}) {
		t.Fatalf("states after reopen: %+v %v", got, err)
	}
	if err := s.DeleteDestinationState(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.DestinationStates(ctx); len(got) != 1 || got[0].Name != "y" {
		t.Fatalf("after delete: %+v", got)
	}
}

// oldSchemas are the deliveries tables of earlier versions: the first one, and the one before retry_base.
var oldSchemas = map[string]string{
	"v1": `CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL,
		destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
		leased INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '')`,
	"v2": `CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL,
		destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
		leased INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '',
		ordering_key TEXT NOT NULL DEFAULT '', ordering_block INTEGER NOT NULL DEFAULT 0)`,
}

func TestMigrateOldDatabase(t *testing.T) {
	for name, deliveries := range oldSchemas {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{
				`CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT '',
					time INTEGER NOT NULL, received_at INTEGER NOT NULL, correlation_id TEXT NOT NULL DEFAULT '', metadata BLOB, scope BLOB, data BLOB NOT NULL)`,
				`CREATE INDEX events_received ON events(received_at)`,
				deliveries,
				`CREATE TABLE attempts (delivery_id INTEGER NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL, duration_us INTEGER NOT NULL,
					status_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', response BLOB, PRIMARY KEY (delivery_id, n)) WITHOUT ROWID`,
				`INSERT INTO events (seq, id, topic, time, received_at, data) VALUES (1, 'old', 'case.created', 1, 1, '{}')`,
				`INSERT INTO deliveries (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, last_error)
					VALUES (1, 1, 'old', 'd', 'failed', 2, 0, 1, 1, 'http 400')`,
			} {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Close()

			s := open(t, dir)
			d, err := s.Delivery(ctx, 1)
			if err != nil || d.Status != store.Failed || d.RetryBase != 0 || d.Test || d.LastError != "http 400" {
				t.Fatalf("old delivery after upgrade: %+v %v", d, err)
			}
			if d, err := s.Retry(ctx, 1, time.Now()); err != nil || d.RetryBase != 2 {
				t.Fatalf("retry after upgrade: %+v %v", d, err)
			}
			if jobs, err := s.Claim(ctx, "d", time.Now(), time.Minute, 10); err != nil || len(jobs) != 1 || jobs[0].Delivery.RetryBase != 2 || jobs[0].Event.ID != "old" {
				t.Fatalf("claim after upgrade: %+v %v", jobs, err)
			}
			res := mustAppend(t, s, []store.NewEvent{{Event: newEvent("new"), Destinations: []string{"d"}, Test: true}})
			if list, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"d"}}); err != nil || len(list) != 2 || !list[0].Test || list[0].ID != res[0].Deliveries[0].ID {
				t.Fatalf("list after upgrade: %+v %v", list, err)
			}
			if err := s.PutDestination(ctx, store.DestinationRecord{ID: "i", Name: "n", Type: "webhook"}); err != nil {
				t.Fatalf("destinations table after upgrade: %v", err)
			}
			if err := s.SetDestinationState(ctx, store.DestinationState{Name: "n"}); err != nil {
				t.Fatalf("destination_states table after upgrade: %v", err)
			}
			s.Close()
			// Opening an up-to-date database again changes nothing.
			s = open(t, dir)
			if got, err := s.Destinations(ctx); err != nil || len(got) != 1 {
				t.Fatalf("second open: %v %v", got, err)
			}
		})
	}
}
