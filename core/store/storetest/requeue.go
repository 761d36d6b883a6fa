package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// retry: Retry requeues one delivery, due at now, with RetryBase set to its attempts so far; a delivery being
// attempted (pending and leased) answers ErrConflict, an unknown one ErrNotFound.
func (s *suite) retry(t *testing.T) {
	e := s.store(t)
	res := e.append([]store.NewEvent{
		{Event: newEvent("a"), Destinations: []string{"d"}, Test: true},
		{Event: newEvent("b"), Destinations: []string{"d"}, Leased: []bool{true}},
	})
	a, b := res[0].Deliveries[0].ID, res[1].Deliveries[0].ID
	// Three failed attempts, the last final.
	for n := 1; n <= 3; n++ {
		jobs := e.claim("d", e.clock.Now(), time.Minute, 10)
		if len(jobs) != 1 || jobs[0].Delivery.ID != a || !jobs[0].Delivery.Test {
			t.Fatalf("claim %d: %+v", n, jobs)
		}
		st := store.Pending
		if n == 3 {
			st = store.Failed
		}
		e.complete(store.Outcome{DeliveryID: a, Status: st, NextAt: e.clock.Now(),
			Attempt: store.Attempt{N: n, At: e.clock.Now(), Duration: 1500 * time.Microsecond, StatusCode: 500, Error: fmt.Sprint("http 500 #", n), Response: []byte("oops")}})
	}
	rec := e.delivery(a)
	if rec.Status != store.Failed || rec.Attempts != 3 || len(rec.AttemptLog) != 3 || rec.AttemptLog[2].N != 3 ||
		rec.AttemptLog[2].Duration != 1500*time.Microsecond || string(rec.AttemptLog[0].Response) != "oops" || !rec.Test || rec.EventID != "a" {
		t.Fatalf("delivery record %+v", rec)
	}
	if _, err := e.st.Delivery(ctx, 999999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown delivery: %v, want ErrNotFound", err)
	}

	e.clock.Advance(30 * time.Minute) // b's lease (an hour) still holds
	now := e.clock.Now().Add(time.Second)
	d, err := e.st.Retry(ctx, a, now)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != store.Pending || d.RetryBase != 3 || d.Attempts != 3 || !d.NextAt.Equal(now) || d.LastError != "http 500 #3" || d.ID != a ||
		!d.UpdatedAt.Equal(e.clock.Now()) {
		t.Fatalf("retried delivery %+v", d)
	}
	if got := e.delivery(a); !reflect.DeepEqual(got.Delivery, d) || len(got.AttemptLog) != 3 {
		t.Fatalf("Retry answered %+v, Delivery reads %+v", d, got)
	}
	jobs := e.claim("d", now, time.Minute, 10)
	if len(jobs) != 1 || jobs[0].Delivery.RetryBase != 3 || jobs[0].Delivery.Attempts != 3 {
		t.Fatalf("claim after retry: %+v", jobs)
	}
	// Now it is leased, being attempted: a retry clashes. So does b, leased at birth.
	for _, id := range []int64{a, b} {
		if _, err := e.st.Retry(ctx, id, now); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("retry of leased delivery %d: %v, want ErrConflict", id, err)
		}
	}
	if _, err := e.st.Retry(ctx, 424242, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retry of unknown delivery: %v, want ErrNotFound", err)
	}
	// A pending delivery that is not leased is made due now.
	if err := e.st.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if d, err := e.st.Retry(ctx, b, now); err != nil || d.Status != store.Pending || !d.NextAt.Equal(now) || d.RetryBase != 0 {
		t.Fatalf("retry of an unleased pending delivery: %+v %v", d, err)
	}
	if ev := e.event("a"); ev.Deliveries[0].RetryBase != 3 || !ev.Deliveries[0].Test {
		t.Fatalf("Event does not surface RetryBase/Test: %+v", ev.Deliveries[0])
	}
	// A delivered delivery can be sent again too.
	e.complete(delivered(a, 4, now))
	if d, err := e.st.Retry(ctx, a, now.Add(time.Minute)); err != nil || d.Status != store.Pending || d.RetryBase != 4 {
		t.Fatalf("retry of a delivered delivery: %+v %v", d, err)
	}
}

// replay: Replay requeues the final deliveries of one destination that its filter selects (statuses, time
// window), each due at now with RetryBase = attempts; pending ones, leased or not, and other destinations
// are never touched.
func (s *suite) replay(t *testing.T) {
	e := s.store(t)
	// ReplayDeliveries deliveries to "r" over six minutes, as many to "other".
	const per = 100
	for b := range ReplayDeliveries / per {
		var evs []store.NewEvent
		for i := range per {
			evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprintf("r%d-%d", b, i)), Destinations: []string{"r", "other"}})
		}
		e.append(evs)
		if b%5 == 4 {
			e.clock.Advance(time.Minute)
		}
	}
	now := e.clock.Now()
	for _, dest := range []string{"r", "other"} {
		var outs []store.Outcome
		for i, j := range e.claim(dest, now, time.Minute, 5000) {
			st := []store.Status{store.Delivered, store.Failed, store.Pending, store.Delivered}[i%4]
			if i%4 == 3 && i%8 == 7 {
				continue // stays pending and leased
			}
			outs = append(outs, store.Outcome{DeliveryID: j.Delivery.ID, Status: st, NextAt: now.Add(time.Hour),
				Attempt: store.Attempt{N: 1, At: now, Error: "e"}})
		}
		e.complete(outs...)
	}
	before := e.walkDeliveries(store.DeliveryFilter{Limit: 1000})
	byID := map[int64]store.Delivery{}
	want := map[store.Status]int{}
	for _, d := range before {
		byID[d.ID] = d
		if d.Destination == "r" {
			want[d.Status]++
		}
	}
	e.clock.Advance(time.Second)
	at := now.Add(time.Hour)

	if n, err := e.st.Replay(ctx, store.ReplayFilter{Destination: "r", Statuses: []store.Status{store.Pending}}, at); err != nil || n != 0 {
		t.Fatalf("replay of pending only = %d %v, want 0", n, err)
	}
	if _, err := e.st.Replay(ctx, store.ReplayFilter{Destination: "r", Statuses: []store.Status{"bogus"}}, at); err == nil {
		t.Fatal("an unknown status must be an error")
	}
	n, err := e.st.Replay(ctx, store.ReplayFilter{Destination: "r", Statuses: []store.Status{store.Failed, store.Pending}}, at)
	if err != nil || n != want[store.Failed] {
		t.Fatalf("replay failed = %d %v, want %d", n, err, want[store.Failed])
	}
	// A time window: the first minute only.
	n, err = e.st.Replay(ctx, store.ReplayFilter{Destination: "r", Until: T0.Add(time.Minute)}, at)
	if err != nil {
		t.Fatal(err)
	}
	wantWindow := 0
	for _, d := range before {
		if d.Destination == "r" && d.Status == store.Delivered && d.CreatedAt.Before(T0.Add(time.Minute)) {
			wantWindow++
		}
	}
	if n != wantWindow || n == 0 {
		t.Fatalf("replay of the first minute = %d, want %d", n, wantWindow)
	}
	// Everything final (delivered, the rest of it): over 500 in one call, more than one of the small
	// transactions a driver replays in.
	n, err = e.st.Replay(ctx, store.ReplayFilter{Destination: "r", Since: T0}, at)
	if err != nil || n != want[store.Delivered]-wantWindow || n <= 500 {
		t.Fatalf("replay of the rest = %d %v, want %d (over 500)", n, err, want[store.Delivered]-wantWindow)
	}

	after := e.walkDeliveries(store.DeliveryFilter{Limit: 1000})
	for _, d := range after {
		old := byID[d.ID]
		switch {
		case d.Destination != "r" || old.Status == store.Pending:
			if !reflect.DeepEqual(d, old) {
				t.Fatalf("replay touched a delivery it must not:\n was %+v\n now %+v", old, d)
			}
		default:
			if d.Status != store.Pending || !d.NextAt.Equal(at) || d.RetryBase != d.Attempts || d.Attempts != 1 || d.LastError != old.LastError ||
				!d.UpdatedAt.Equal(e.clock.Now()) {
				t.Fatalf("replayed delivery %+v (was %+v)", d, old)
			}
		}
	}
	// Replayed deliveries are claimable, with the fresh retry base.
	replayed := want[store.Failed] + want[store.Delivered]
	based := 0
	for _, j := range e.claim("r", at, time.Minute, 10000) {
		if j.Delivery.RetryBase == 1 {
			based++
		}
	}
	if based != replayed {
		t.Fatalf("claimed %d deliveries with RetryBase 1, want %d (every replayed one)", based, replayed)
	}
	if n, err := e.st.Replay(ctx, store.ReplayFilter{Destination: "gone"}, at); err != nil || n != 0 {
		t.Fatalf("replay of an unknown destination = %d %v", n, err)
	}
	// Skipped deliveries are final too.
	if _, err := e.st.SkipPending(ctx, "other", "disabled"); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.Replay(ctx, store.ReplayFilter{Destination: "other", Statuses: []store.Status{store.Skipped}}, at); err != nil || n != want[store.Pending] {
		t.Fatalf("replay of skipped = %d %v, want %d", n, err, want[store.Pending])
	}
}

// prune: Prune deletes, oldest first and at most limit at a time, events received before cutoff whose
// deliveries are all final (or that have none), with their deliveries and attempts; an event with a pending
// delivery, or received since cutoff, is kept.
func (s *suite) prune(t *testing.T) {
	e := s.store(t)
	var old []string
	for i := range 10 {
		old = append(old, fmt.Sprint("old", i))
	}
	evs := to([]string{"d", "e"}, old...)
	evs = append(evs, to([]string{"d", "e"}, "old-pending")...)
	evs = append(evs, to([]string{"d"}, "old-retry")...)
	evs = append(evs, to(nil, "old-nodest")...)
	res := e.append(evs)
	now := e.clock.Now()
	for _, dest := range []string{"d", "e"} {
		var outs []store.Outcome
		for _, j := range e.claim(dest, now, time.Minute, 100) {
			switch {
			case j.Event.ID == "old-pending" && dest == "e":
			case j.Event.ID == "old-retry":
				outs = append(outs, retryAt(j.Delivery.ID, 1, now, now.Add(24*time.Hour)))
			default:
				outs = append(outs, delivered(j.Delivery.ID, 1, now))
			}
		}
		e.complete(outs...)
	}
	e.clock.Advance(time.Hour)
	cutoff := e.clock.Now()
	recent := e.append(to([]string{"d"}, "recent"))
	e.complete(delivered(recent[0].Deliveries[0].ID, 1, cutoff))

	total := 0
	for {
		n, err := e.st.Prune(ctx, cutoff, 4)
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
		if _, err := e.st.Event(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("event %s survived: %v", id, err)
		}
	}
	for _, d := range res[0].Deliveries {
		if _, err := e.st.Delivery(ctx, d.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delivery of a pruned event survived: %v", err)
		}
	}
	for _, id := range []string{"old-pending", "old-retry", "recent"} {
		if _, err := e.st.Event(ctx, id); err != nil {
			t.Fatalf("event %s must be kept: %v", id, err)
		}
	}
	left := e.walkDeliveries(store.DeliveryFilter{})
	if len(left) != 4 {
		t.Fatalf("%d deliveries left, want 4 (old-pending's two, old-retry's and recent's)", len(left))
	}
	if n, err := e.st.Prune(ctx, cutoff, 0); err != nil || n != 0 {
		t.Fatalf("prune with nothing left = %d %v", n, err)
	}
	if page, err := e.st.ListEvents(ctx, store.EventFilter{}); err != nil || len(page) != 3 {
		t.Fatalf("ListEvents after prune: %d events %v, want 3", len(page), err)
	}

	// Once final, the kept old events go too; a new event never shows a pruned one's attempts, whatever id
	// its delivery gets.
	var outs []store.Outcome
	for _, d := range left {
		if d.Status == store.Pending {
			outs = append(outs, delivered(d.ID, 2, cutoff))
		}
	}
	e.complete(outs...)
	e.clock.Advance(time.Hour)
	if n, err := e.st.Prune(ctx, e.clock.Now(), 0); err != nil || n != 3 {
		t.Fatalf("prune of everything = %d %v, want 3", n, err)
	}
	fresh := e.append(to([]string{"d", "e", "f", "g"}, "fresh"))
	for _, d := range fresh[0].Deliveries {
		if rec := e.delivery(d.ID); len(rec.AttemptLog) != 0 || rec.Attempts != 0 {
			t.Fatalf("a new delivery shows attempts: %+v", rec)
		}
	}
}
