package storetest

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// listEvents: ListEvents pages newest first through every event by the Before cursor, without gaps or
// repeats, applies each filter and their combinations, and caps the limit.
func (s *suite) listEvents(t *testing.T) {
	e := s.store(t)
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
			ev := event.Event{ID: fmt.Sprintf("ev-%04d", n), Topic: topics[n%3], Tenant: tenants[n%4], Time: T0.Add(time.Duration(n) * time.Second),
				Metadata: map[string]string{"n": fmt.Sprint(n)}, Scope: map[string]string{"wf": "w1"}, CorrelationID: "run-" + fmt.Sprint(n%7),
				Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
			evs = append(evs, store.NewEvent{Event: ev, Destinations: []string{"d"}})
			want[ev.ID] = meta{ev.Topic, ev.Tenant, e.clock.Now()}
		}
		e.append(evs)
		e.clock.Advance(time.Minute)
	}

	all := e.walkEvents(store.EventFilter{Limit: 7})
	if len(all) != len(want) {
		t.Fatalf("walked %d events across pages, want %d", len(all), len(want))
	}
	seen := map[string]bool{}
	for _, ev := range all {
		if seen[ev.Event.ID] {
			t.Fatalf("event %s listed twice", ev.Event.ID)
		}
		seen[ev.Event.ID] = true
	}
	// The newest comes first and carries the whole event.
	ev := all[0]
	if ev.Event.ID != "ev-1199" || ev.Event.Topic != topics[1199%3] || ev.Event.Tenant != tenants[1199%4] ||
		!ev.Event.Time.Equal(T0.Add(1199*time.Second)) || ev.Event.Metadata["n"] != "1199" || ev.Event.Scope["wf"] != "w1" ||
		ev.Event.CorrelationID != "run-"+fmt.Sprint(1199%7) || string(ev.Event.Data) != `{"n":1199}` || !ev.ReceivedAt.Equal(want["ev-1199"].received) {
		t.Fatalf("newest summary: %+v", ev)
	}
	// Insertion order is list order: ev-0000 is the oldest.
	if last := all[len(all)-1]; last.Event.ID != "ev-0000" {
		t.Fatalf("oldest listed is %s, want ev-0000", last.Event.ID)
	}

	// Limits: <= 0 means 100, more than 1001 means 1001 (the API pages 1000 and asks for one more).
	for _, tc := range []struct{ limit, n int }{{0, 100}, {-3, 100}, {5000, 1001}, {1001, 1001}, {10, 10}} {
		page, err := e.st.ListEvents(ctx, store.EventFilter{Limit: tc.limit})
		if err != nil || len(page) != tc.n {
			t.Fatalf("limit %d: %d events, %v; want %d", tc.limit, len(page), err, tc.n)
		}
	}
	// A cursor past the oldest answers an empty, non-nil page.
	if page, err := e.st.ListEvents(ctx, store.EventFilter{Before: all[len(all)-1].Seq}); err != nil || page == nil || len(page) != 0 {
		t.Fatalf("page after the oldest: %v %v, want an empty list", page, err)
	}

	since, until := T0.Add(3*time.Minute), T0.Add(7*time.Minute)
	for _, tc := range []struct {
		name string
		f    store.EventFilter
		keep func(meta) bool
	}{
		{"topic", store.EventFilter{Topic: "case.closed"}, func(m meta) bool { return m.topic == "case.closed" }},
		{"tenant", store.EventFilter{Tenant: "acme", TenantSet: true}, func(m meta) bool { return m.tenant == "acme" }},
		{"tenant-less", store.EventFilter{TenantSet: true}, func(m meta) bool { return m.tenant == "" }},
		{"tenant unset", store.EventFilter{Tenant: "acme"}, func(meta) bool { return true }},
		{"since", store.EventFilter{Since: since}, func(m meta) bool { return !m.received.Before(since) }},
		{"until", store.EventFilter{Until: until}, func(m meta) bool { return m.received.Before(until) }},
		{"topic+tenant", store.EventFilter{Topic: "user.added", Tenant: "globex", TenantSet: true}, func(m meta) bool { return m.topic == "user.added" && m.tenant == "globex" }},
		{"tenant+window", store.EventFilter{Tenant: "acme", TenantSet: true, Since: since, Until: until}, func(m meta) bool {
			return m.tenant == "acme" && !m.received.Before(since) && m.received.Before(until)
		}},
		{"unknown topic", store.EventFilter{Topic: "nope"}, func(meta) bool { return false }},
		{"unknown tenant", store.EventFilter{Tenant: "nope", TenantSet: true}, func(meta) bool { return false }},
		{"empty window", store.EventFilter{Since: until, Until: since}, func(meta) bool { return false }},
		{"topic+tenantless", store.EventFilter{Topic: "case.created", TenantSet: true}, func(m meta) bool { return m.topic == "case.created" && m.tenant == "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.Limit = 33
			got := (&env{t: t, st: e.st, clock: e.clock}).walkEvents(f)
			var wantIDs []string
			for id, m := range want {
				if tc.keep(m) {
					wantIDs = append(wantIDs, id)
				}
			}
			slices.Sort(wantIDs)
			if gotIDs := sortedIDs(got); !slices.Equal(gotIDs, wantIDs) {
				t.Fatalf("got %d events, want %d", len(gotIDs), len(wantIDs))
			}
		})
	}
}

// deliveryFixture appends 300 events to d1, d2 and d3 (600 deliveries, 10% test sends) over six minutes and
// moves their deliveries to every status: delivered, failed, pending retried, pending leased, skipped.
func deliveryFixture(e *env) {
	e.t.Helper()
	for b := range 6 {
		var evs []store.NewEvent
		for i := range 50 {
			n := b*50 + i
			evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprintf("e%03d", n)), Destinations: []string{"d1", "d2", "d3"}[:1+n%3], Test: n%10 == 0})
		}
		e.append(evs)
		e.clock.Advance(time.Minute)
	}
	now := e.clock.Now()
	for _, dest := range []string{"d1", "d2"} {
		var outs []store.Outcome
		for i, j := range e.claim(dest, now, time.Minute, 1000) {
			switch i % 4 {
			case 0:
				outs = append(outs, delivered(j.Delivery.ID, 1, now))
			case 1:
				outs = append(outs, failed(j.Delivery.ID, 1, now))
			case 2:
				outs = append(outs, retryAt(j.Delivery.ID, 1, now, now.Add(time.Hour)))
			}
			// case 3 stays leased
		}
		e.complete(outs...)
	}
	if _, err := e.st.SkipPending(ctx, "d3", "removed"); err != nil {
		e.t.Fatal(err)
	}
}

// listDeliveries: ListDeliveries pages newest first by the Before cursor without gaps or repeats, applies
// each filter (destinations, status, event, time window) and their combinations, and caps the limit.
func (s *suite) listDeliveries(t *testing.T) {
	e := s.store(t)
	deliveryFixture(e)

	all := e.walkDeliveries(store.DeliveryFilter{Limit: 9})
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
		if rec := e.delivery(d.ID); !reflect.DeepEqual(rec.Delivery, d) {
			t.Fatalf("list and Delivery disagree:\n%+v\n%+v", d, rec.Delivery)
		}
	}
	if counts[store.Delivered] == 0 || counts[store.Failed] == 0 || counts[store.Skipped] != 100 || counts[store.Pending] == 0 || tests == 0 {
		t.Fatalf("fixture statuses %v, %d tests", counts, tests)
	}
	if page, _ := e.st.ListDeliveries(ctx, store.DeliveryFilter{Limit: 5000}); len(page) != 600 {
		t.Fatalf("limit 5000 gave %d", len(page))
	}
	if page, _ := e.st.ListDeliveries(ctx, store.DeliveryFilter{}); len(page) != 100 {
		t.Fatalf("limit 0 gave %d, want 100", len(page))
	}
	if page, _ := e.st.ListDeliveries(ctx, store.DeliveryFilter{Limit: -1, Destinations: []string{"d1", "d2"}}); len(page) != 100 {
		t.Fatalf("limit -1 over two destinations gave %d, want 100", len(page))
	}

	since, until := T0.Add(2*time.Minute), T0.Add(4*time.Minute)
	for _, tc := range []struct {
		name string
		f    store.DeliveryFilter
		keep func(store.Delivery) bool
	}{
		{"one destination", store.DeliveryFilter{Destinations: []string{"d2"}}, func(d store.Delivery) bool { return d.Destination == "d2" }},
		{"two destinations", store.DeliveryFilter{Destinations: []string{"d3", "d1", "d3"}}, func(d store.Delivery) bool { return d.Destination != "d2" }},
		{"no destination", store.DeliveryFilter{Destinations: []string{}}, func(store.Delivery) bool { return false }},
		{"unknown destination", store.DeliveryFilter{Destinations: []string{"zz"}}, func(store.Delivery) bool { return false }},
		{"failed", store.DeliveryFilter{Status: store.Failed}, func(d store.Delivery) bool { return d.Status == store.Failed }},
		{"pending", store.DeliveryFilter{Status: store.Pending}, func(d store.Delivery) bool { return d.Status == store.Pending }},
		{"skipped", store.DeliveryFilter{Status: store.Skipped}, func(d store.Delivery) bool { return d.Status == store.Skipped }},
		{"delivered", store.DeliveryFilter{Status: store.Delivered}, func(d store.Delivery) bool { return d.Status == store.Delivered }},
		{"delivered to d1,d2", store.DeliveryFilter{Status: store.Delivered, Destinations: []string{"d1", "d2"}}, func(d store.Delivery) bool {
			return d.Status == store.Delivered && d.Destination != "d3"
		}},
		{"failed to d2", store.DeliveryFilter{Status: store.Failed, Destinations: []string{"d2"}}, func(d store.Delivery) bool { return d.Status == store.Failed && d.Destination == "d2" }},
		{"event", store.DeliveryFilter{EventID: "e005"}, func(d store.Delivery) bool { return d.EventID == "e005" }},
		{"event+destination", store.DeliveryFilter{EventID: "e005", Destinations: []string{"d3"}}, func(d store.Delivery) bool { return d.EventID == "e005" && d.Destination == "d3" }},
		{"event+status", store.DeliveryFilter{EventID: "e005", Status: store.Skipped}, func(d store.Delivery) bool { return d.EventID == "e005" && d.Status == store.Skipped }},
		{"unknown event", store.DeliveryFilter{EventID: "nope"}, func(store.Delivery) bool { return false }},
		{"window", store.DeliveryFilter{Since: since, Until: until}, func(d store.Delivery) bool { return !d.CreatedAt.Before(since) && d.CreatedAt.Before(until) }},
		{"window to d1 failed", store.DeliveryFilter{Since: since, Destinations: []string{"d1"}, Status: store.Failed}, func(d store.Delivery) bool {
			return !d.CreatedAt.Before(since) && d.Destination == "d1" && d.Status == store.Failed
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.Limit = 7
			got := (&env{t: t, st: e.st, clock: e.clock}).walkDeliveries(f)
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
	if _, err := e.st.ListDeliveries(ctx, store.DeliveryFilter{Status: "bogus"}); err == nil {
		t.Fatal("an unknown status must be an error")
	}
}

// pendingCounts: PendingCounts counts pending deliveries (leased or not) per destination; destinations with
// none are absent.
func (s *suite) pendingCounts(t *testing.T) {
	e := s.store(t)
	got, err := e.st.PendingCounts(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v %v", got, err)
	}
	deliveryFixture(e)
	want := map[string]int64{}
	for _, d := range e.walkDeliveries(store.DeliveryFilter{Limit: 1000}) {
		if d.Status == store.Pending {
			want[d.Destination]++
		}
	}
	if got, err = e.st.PendingCounts(ctx); err != nil || !maps.Equal(got, want) || len(want) != 2 {
		t.Fatalf("pending counts %v %v, want %v", got, err, want)
	}
}
