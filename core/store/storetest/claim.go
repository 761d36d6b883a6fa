package storetest

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// claim: Claim leases up to limit due, unleased deliveries of one destination, choosing the oldest due first,
// with their events; a delivery not yet due, leased, or of another destination is left alone.
func (s *suite) claim(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	var evs []store.NewEvent
	for i := range 5 {
		evs = append(evs, store.NewEvent{Event: newEvent(seqID("e", i)), Destinations: []string{"d", "other"}, Leased: []bool{i == 0, false}})
	}
	e.append(evs)
	if jobs := e.claim("nobody", now, time.Minute, 10); len(jobs) != 0 {
		t.Fatalf("claimed %d deliveries of a destination nothing was sent to", len(jobs))
	}
	if jobs := e.claim("d", now.Add(-time.Microsecond), time.Minute, 10); len(jobs) != 0 {
		t.Fatalf("claimed %v before they were due", eventIDs(jobs))
	}
	jobs := e.claim("d", now, time.Minute, 10)
	if got := eventIDs(jobs); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"e0001", "e0002", "e0003", "e0004"}) {
		t.Fatalf("claimed %v, want e0001..e0004 (e0000 is leased at birth)", got)
	}
	for _, j := range jobs {
		sameEvent(t, j.Event, newEvent(j.Event.ID))
		d := j.Delivery
		if d.Destination != "d" || d.EventID != j.Event.ID || d.Status != store.Pending || d.Attempts != 0 {
			t.Fatalf("claimed delivery %+v", d)
		}
		// A job's NextAt is its lease's end.
		sameTime(t, "claimed NextAt", d.NextAt, now.Add(time.Minute))
	}
	if more := e.claim("d", now, time.Minute, 10); len(more) != 0 {
		t.Fatalf("claimed %v already-leased deliveries", eventIDs(more))
	}
	if got := e.claim("other", now, time.Minute, 2); len(got) != 2 {
		t.Fatalf("limit 2 claimed %d of the other destination's 5", len(got))
	}

	// Oldest due first: three deliveries due a second apart, claimed one at a time.
	t1 := now.Add(time.Hour)
	e.clock.Advance(time.Hour)
	for _, id := range []string{"x0", "x1", "x2"} {
		e.append(to([]string{"x"}, id))
		e.clock.Advance(time.Second)
	}
	var order []string
	for range 3 {
		j := e.claim("x", t1.Add(10*time.Second), time.Minute, 1)
		if len(j) != 1 {
			t.Fatalf("limit 1 claimed %d", len(j))
		}
		order = append(order, j[0].Event.ID)
	}
	if !slices.Equal(order, []string{"x0", "x1", "x2"}) {
		t.Fatalf("claim order %v, want oldest due first", order)
	}
	// Retried later, they come back in the order of their new due times, each only once it is due.
	ids := map[string]int64{}
	for _, r := range e.walkDeliveries(store.DeliveryFilter{Destinations: []string{"x"}}) {
		ids[r.EventID] = r.ID
	}
	at := t1.Add(10 * time.Second)
	e.complete(retryAt(ids["x0"], 1, at, at.Add(3*time.Minute)), retryAt(ids["x1"], 1, at, at.Add(time.Minute)),
		retryAt(ids["x2"], 1, at, at.Add(2*time.Minute)))
	if j := e.claim("x", at.Add(time.Minute-time.Microsecond), time.Minute, 10); len(j) != 0 {
		t.Fatalf("claimed %v before their retry was due", eventIDs(j))
	}
	order = order[:0]
	for range 3 {
		j := e.claim("x", at.Add(3*time.Minute), time.Minute, 1)
		if len(j) != 1 {
			t.Fatalf("limit 1 claimed %d", len(j))
		}
		order = append(order, j[0].Event.ID)
	}
	if !slices.Equal(order, []string{"x1", "x2", "x0"}) {
		t.Fatalf("claim order %v, want x1 x2 x0 (by due time)", order)
	}
}

// lease: a claim's lease ends at now+lease; from then on the delivery is claimable again. Complete does not
// check leases: the first outcome that ends the delivery wins, a later one is ignored.
func (s *suite) lease(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	id := e.append(to([]string{"d"}, "x"))[0].Deliveries[0].ID
	if j := e.claim("d", now, time.Minute, 10); len(j) != 1 {
		t.Fatalf("first claim: %d jobs", len(j))
	}
	if j := e.claim("d", now.Add(time.Minute-time.Microsecond), time.Minute, 10); len(j) != 0 {
		t.Fatal("claimed again before the lease ended")
	}
	second := e.claim("d", now.Add(time.Minute), time.Minute, 10)
	if len(second) != 1 || second[0].Delivery.ID != id {
		t.Fatalf("claim once the lease ended: %v, want the delivery again", ids(second))
	}
	// The first worker, whose lease ran out, answers first: its outcome stands.
	e.clock.Advance(time.Minute)
	e.complete(delivered(id, 1, now))
	e.complete(failed(id, 1, now.Add(time.Minute)))
	d := e.delivery(id)
	if d.Status != store.Delivered || d.Attempts != 1 || len(d.AttemptLog) != 1 || d.AttemptLog[0].StatusCode != 204 {
		t.Fatalf("after two completions: %+v, want the first (delivered) only", d)
	}
	if j := e.claim("d", now.Add(time.Hour), time.Minute, 10); len(j) != 0 {
		t.Fatalf("claimed a delivered delivery: %v", ids(j))
	}
}

// complete: an outcome records its attempt and moves the delivery to delivered, failed, or pending again at
// NextAt; an outcome without an attempt (N == 0) records none; a delivery no longer pending, or unknown, is
// left as it is.
func (s *suite) complete(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	res := e.append(to([]string{"d"}, "ok", "retry", "fail", "skip"))
	id := func(i int) int64 { return res[i].Deliveries[0].ID }
	if len(e.claim("d", now, time.Minute, 10)) != 4 {
		t.Fatal("claim: want 4 jobs")
	}
	e.clock.Advance(time.Second)
	done := e.clock.Now()
	next := now.Add(30 * time.Second)
	e.complete() // nothing to do is no error
	e.complete(
		store.Outcome{DeliveryID: id(0), Status: store.Delivered, Attempt: store.Attempt{N: 1, At: now, Duration: 1500 * time.Microsecond, StatusCode: 204}},
		store.Outcome{DeliveryID: id(1), Status: store.Pending, NextAt: next,
			Attempt: store.Attempt{N: 1, At: now, Duration: time.Second, StatusCode: 503, Error: "http 503", Response: []byte("busy")}},
		store.Outcome{DeliveryID: id(2), Status: store.Failed, Attempt: store.Attempt{N: 1, At: now, StatusCode: 400, Error: "http 400", Response: []byte("bad")}},
		store.Outcome{DeliveryID: id(3), Status: store.Skipped, Attempt: store.Attempt{Error: "filtered out"}},
		store.Outcome{DeliveryID: 987654321, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: now}}, // unknown: ignored
	)
	for i, want := range []struct {
		status   store.Status
		attempts int
		lastErr  string
		log      []store.Attempt
	}{
		{store.Delivered, 1, "", []store.Attempt{{DeliveryID: id(0), N: 1, At: now, Duration: 1500 * time.Microsecond, StatusCode: 204}}},
		{store.Pending, 1, "http 503", []store.Attempt{{DeliveryID: id(1), N: 1, At: now, Duration: time.Second, StatusCode: 503, Error: "http 503", Response: []byte("busy")}}},
		{store.Failed, 1, "http 400", []store.Attempt{{DeliveryID: id(2), N: 1, At: now, StatusCode: 400, Error: "http 400", Response: []byte("bad")}}},
		{store.Skipped, 0, "filtered out", nil},
	} {
		d := e.delivery(id(i))
		if d.Status != want.status || d.Attempts != want.attempts || d.LastError != want.lastErr {
			t.Fatalf("delivery %s: %+v, want status %s, %d attempts, last error %q", res[i].ID, d.Delivery, want.status, want.attempts, want.lastErr)
		}
		sameTime(t, "UpdatedAt", d.UpdatedAt, done)
		if !reflect.DeepEqual(d.AttemptLog, want.log) {
			t.Fatalf("attempt log of %s:\n got %+v\nwant %+v", res[i].ID, d.AttemptLog, want.log)
		}
		if ev := e.event(res[i].ID); !reflect.DeepEqual(ev.Deliveries[0], *d) {
			t.Fatalf("Event and Delivery disagree:\n%+v\n%+v", ev.Deliveries[0], *d)
		}
	}
	sameTime(t, "NextAt of a retry", e.delivery(id(1)).NextAt, next)

	// The retry comes back when due, with its attempts so far; its second attempt is appended to the log.
	j := e.claim("d", next, time.Minute, 10)
	if len(j) != 1 || j[0].Delivery.ID != id(1) || j[0].Delivery.Attempts != 1 || j[0].Delivery.LastError != "http 503" {
		t.Fatalf("claim of the retry: %+v", j)
	}
	e.complete(delivered(id(1), 2, next))
	d := e.delivery(id(1))
	if d.Status != store.Delivered || d.Attempts != 2 || d.LastError != "" || len(d.AttemptLog) != 2 || d.AttemptLog[0].N != 1 || d.AttemptLog[1].N != 2 {
		t.Fatalf("after the second attempt: %+v", d)
	}

	// Final deliveries are left as they are.
	before := map[int64]*store.DeliveryRecord{}
	for i := range 4 {
		before[id(i)] = e.delivery(id(i))
	}
	e.clock.Advance(time.Second)
	var outs []store.Outcome
	for i := range 4 {
		outs = append(outs, retryAt(id(i), 3, now, now))
	}
	e.complete(outs...)
	for i := range 4 {
		if got := e.delivery(id(i)); !reflect.DeepEqual(got, before[id(i)]) {
			t.Fatalf("a final delivery was changed:\n was %+v\n now %+v", before[id(i)], got)
		}
	}
	if _, err := e.st.Delivery(ctx, 987654321); err == nil {
		t.Fatal("an outcome of an unknown delivery made one")
	}
}

// releaseLeases: every leased pending delivery (claimed, or leased at birth) becomes due at the store's now;
// deliveries without a lease are untouched.
func (s *suite) releaseLeases(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	res := e.append([]store.NewEvent{
		{Event: newEvent("born"), Destinations: []string{"d"}, Leased: []bool{true}},
		{Event: newEvent("claimed"), Destinations: []string{"d"}},
		{Event: newEvent("later"), Destinations: []string{"d"}},
		{Event: newEvent("done"), Destinations: []string{"d"}},
	})
	if got := e.claim("d", now, time.Hour, 10); len(got) != 3 {
		t.Fatalf("claimed %d, want 3", len(got))
	}
	later := now.Add(2 * time.Hour)
	e.complete(retryAt(res[2].Deliveries[0].ID, 1, now, later), delivered(res[3].Deliveries[0].ID, 1, now))
	doneBefore := e.delivery(res[3].Deliveries[0].ID)

	e.clock.Advance(time.Minute)
	if err := e.st.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		sameTime(t, "NextAt after ReleaseLeases", e.delivery(res[i].Deliveries[0].ID).NextAt, e.clock.Now())
	}
	sameTime(t, "NextAt of an unleased retry", e.delivery(res[2].Deliveries[0].ID).NextAt, later)
	if got := e.delivery(res[3].Deliveries[0].ID); !reflect.DeepEqual(got, doneBefore) {
		t.Fatalf("ReleaseLeases changed a delivered delivery: %+v", got)
	}
	if got := eventIDs(e.claim("d", e.clock.Now(), time.Hour, 10)); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"born", "claimed"}) {
		t.Fatalf("after ReleaseLeases claimed %v, want born and claimed", got)
	}
	if err := e.st.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.st.ReleaseLeases(ctx); err != nil { // nothing leased: no error
		t.Fatal(err)
	}
}

// nextDue: the due time of the earliest unleased pending delivery; leased deliveries are left out, even once
// their lease has ended (the next Claim finds those).
func (s *suite) nextDue(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	check := func(dest string, want time.Time, wantOK bool) {
		t.Helper()
		got, ok, err := e.st.NextDue(ctx, dest)
		if err != nil || ok != wantOK || (ok && !got.Equal(want)) {
			t.Fatalf("NextDue(%s) = %v %v %v, want %v %v", dest, got, ok, err, want, wantOK)
		}
	}
	check("d", time.Time{}, false)
	res := e.append([]store.NewEvent{
		{Event: newEvent("born"), Destinations: []string{"d"}, Leased: []bool{true}},
	})
	check("d", time.Time{}, false)
	e.clock.Advance(time.Second)
	res = append(res, e.append(to([]string{"d"}, "a"))...)
	check("d", now.Add(time.Second), true)
	check("other", time.Time{}, false)
	e.clock.Advance(time.Second)
	res = append(res, e.append(to([]string{"d"}, "b"))...)
	check("d", now.Add(time.Second), true)

	if j := e.claim("d", now.Add(time.Hour), time.Minute, 1); len(j) != 1 || j[0].Event.ID != "a" {
		t.Fatalf("claim: %v", eventIDs(j))
	}
	check("d", now.Add(2*time.Second), true)
	e.claim("d", now.Add(time.Hour), time.Minute, 1)
	check("d", time.Time{}, false) // every pending delivery is leased, some leases long over
	e.complete(retryAt(res[1].Deliveries[0].ID, 1, now, now.Add(5*time.Minute)))
	check("d", now.Add(5*time.Minute), true)
	e.complete(delivered(res[1].Deliveries[0].ID, 2, now))
	check("d", time.Time{}, false)
}

// skipPending: every pending delivery of the destination, leased or not, ends skipped with the reason;
// final ones and other destinations are untouched; a late outcome for a skipped delivery is ignored.
func (s *suite) skipPending(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	res := e.append([]store.NewEvent{
		{Event: newEvent("born"), Destinations: []string{"d", "keep"}, Leased: []bool{true, false}},
		{Event: newEvent("claimed"), Destinations: []string{"d", "keep"}},
		{Event: newEvent("retry"), Destinations: []string{"d", "keep"}},
		{Event: newEvent("done"), Destinations: []string{"d", "keep"}},
	})
	e.clock.Advance(time.Second)
	res = append(res, e.append(to([]string{"d", "keep"}, "due"))...)
	d := func(i int) int64 { return res[i].Deliveries[0].ID }
	if got := e.claim("d", now, time.Hour, 10); len(got) != 3 {
		t.Fatalf("claimed %v, want claimed, retry and done", eventIDs(got))
	}
	// born and claimed are leased (being attempted), retry waits for its time, due is due.
	e.complete(retryAt(d(2), 1, now, now.Add(time.Hour)), delivered(d(3), 1, now))
	doneBefore := e.delivery(d(3))

	e.clock.Advance(time.Second)
	n, err := e.st.SkipPending(ctx, "d", "destination removed")
	if err != nil || n != 4 {
		t.Fatalf("SkipPending = %d %v, want 4", n, err)
	}
	for _, i := range []int{0, 1, 2, 4} {
		got := e.delivery(d(i))
		if got.Status != store.Skipped || got.LastError != "destination removed" || !got.UpdatedAt.Equal(e.clock.Now()) {
			t.Fatalf("skipped delivery %+v", got.Delivery)
		}
	}
	if got := e.delivery(d(3)); !reflect.DeepEqual(got, doneBefore) {
		t.Fatalf("SkipPending changed a delivered delivery: %+v", got)
	}
	// A worker that held a lease answers late: ignored.
	e.complete(delivered(d(1), 1, now))
	if got := e.delivery(d(1)); got.Status != store.Skipped || len(got.AttemptLog) != 0 {
		t.Fatalf("a late outcome changed a skipped delivery: %+v", got)
	}
	if got := e.claim("d", now.Add(2*time.Hour), time.Hour, 10); len(got) != 0 {
		t.Fatalf("claimed skipped deliveries: %v", eventIDs(got))
	}
	if got := e.claim("keep", now.Add(time.Second), time.Hour, 10); len(got) != 5 {
		t.Fatalf("the other destination has %d claimable deliveries, want 5", len(got))
	}
	if n, err := e.st.SkipPending(ctx, "d", "again"); err != nil || n != 0 {
		t.Fatalf("second SkipPending = %d %v, want 0", n, err)
	}
}

// ordering: a delivery with an ordering key is not claimed while an earlier delivery of the same destination
// and key is pending (due or not, leased or not), nor, when the later one has OrderingBlock, while an
// earlier one has failed. Other keys, unordered deliveries and other destinations are independent.
func (s *suite) ordering(t *testing.T) {
	e := s.store(t)
	now := e.clock.Now()
	type spec struct {
		id, key string
		block   bool
	}
	byEvent := map[string]int64{}
	add := func(dest string, specs ...spec) {
		t.Helper()
		for _, sp := range specs {
			r := e.append([]store.NewEvent{{Event: newEvent(sp.id), Destinations: []string{dest},
				OrderingKeys: []string{sp.key}, OrderingBlock: []bool{sp.block}}})
			byEvent[sp.id] = r[0].Deliveries[0].ID
		}
	}
	claimSet := func(dest string, at time.Time, want ...string) []store.Job {
		t.Helper()
		jobs := e.claim(dest, at, 24*time.Hour, 100) // leases outlast the case: nothing comes back by expiry
		got := slices.Sorted(slices.Values(eventIDs(jobs)))
		if slices.Sort(want); !slices.Equal(got, want) {
			t.Fatalf("claimed %v from %s, want %v", got, dest, want)
		}
		return jobs
	}

	add("o", spec{"k1-a", "k1", false}, spec{"k1-b", "k1", false}, spec{"k2-a", "k2", false}, spec{"none", "", false},
		spec{"k1-c", "k1", false}, spec{"none-2", "", false})
	add("p", spec{"p-k1", "k1", false})
	jobs := claimSet("o", now, "k1-a", "k2-a", "none", "none-2")
	for _, j := range jobs {
		if want := map[string]string{"k1-a": "k1", "k2-a": "k2"}[j.Event.ID]; j.Event.OrderingKey != want || j.Delivery.OrderingKey != want {
			t.Fatalf("job %s carries ordering key %q/%q, want %q", j.Event.ID, j.Event.OrderingKey, j.Delivery.OrderingKey, want)
		}
	}
	claimSet("p", now, "p-k1") // the same key at another destination is independent
	claimSet("o", now)         // k1-a is leased (in flight): it still holds k1-b back

	e.complete(delivered(byEvent["k1-a"], 1, now))
	claimSet("o", now, "k1-b")
	e.complete(failed(byEvent["k1-b"], 1, now)) // k1-c has no OrderingBlock: a failure does not hold it
	claimSet("o", now, "k1-c")

	// An earlier delivery waiting for its retry holds the key, though it is not due.
	add("o", spec{"r-a", "r", false}, spec{"r-b", "r", false})
	claimSet("o", now, "r-a")
	e.complete(retryAt(byEvent["r-a"], 1, now, now.Add(time.Hour)))
	claimSet("o", now)
	claimSet("o", now.Add(time.Hour), "r-a")
	e.complete(delivered(byEvent["r-a"], 2, now))
	claimSet("o", now.Add(time.Hour), "r-b")

	// OrderingBlock: a failed earlier delivery holds the later one until it is retried and delivered.
	h := now.Add(time.Hour)
	add("o", spec{"b-a", "b", true}, spec{"b-b", "b", true})
	claimSet("o", h, "b-a")
	e.complete(failed(byEvent["b-a"], 1, now))
	claimSet("o", h) // held by the failed b-a
	if _, err := e.st.Retry(ctx, byEvent["b-a"], h); err != nil {
		t.Fatal(err)
	}
	claimSet("o", h, "b-a") // pending again, b-a goes first
	e.complete(delivered(byEvent["b-a"], 2, now))
	claimSet("o", h, "b-b")
	// The flag that counts is the later delivery's own.
	add("o", spec{"m-a", "m", true}, spec{"m-b", "m", false})
	claimSet("o", h, "m-a")
	e.complete(failed(byEvent["m-a"], 1, now))
	claimSet("o", h, "m-b")

	// A skipped earlier delivery holds nothing, blocking or not.
	add("o", spec{"s-a", "s", true}, spec{"s-b", "s", true})
	claimSet("o", h, "s-a")
	e.complete(store.Outcome{DeliveryID: byEvent["s-a"], Status: store.Skipped})
	claimSet("o", h, "s-b")

	counts, err := e.st.PendingCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Pending at o: k2-a, none, none-2, k1-c, r-b, b-b, m-b and s-b, all leased; at p: p-k1.
	if want := map[string]int64{"o": 8, "p": 1}; !maps.Equal(counts, want) {
		t.Fatalf("pending counts %v, want %v", counts, want)
	}
}

// due: a store.DueFinder names, of the destinations asked about, those with a delivery Claim could take now:
// due and unleased, or leased with the lease over; not one due later, nor one already final.
func (s *suite) due(t *testing.T) {
	e := s.store(t)
	f, ok := e.st.(store.DueFinder)
	if !ok {
		t.Skip("the store is not a store.DueFinder")
	}
	now := e.clock.Now()
	check := func(at time.Time, want []string, asked ...string) {
		t.Helper()
		got, err := f.Due(ctx, asked, at)
		slices.Sort(got)
		if err != nil || got == nil || !slices.Equal(got, want) {
			t.Fatalf("Due(%v, +%v) = %v %v, want %v", asked, at.Sub(now), got, err, want)
		}
	}
	all := []string{"leased", "free", "later", "none"}
	check(now, []string{}, all...)
	check(now, []string{})
	res := e.append([]store.NewEvent{
		{Event: newEvent("born"), Destinations: []string{"leased"}, Leased: []bool{true}},
		{Event: newEvent("a"), Destinations: []string{"free", "later"}},
	})
	e.complete(retryAt(res[1].Deliveries[1].ID, 1, now, now.Add(time.Minute)))
	check(now, []string{"free"}, all...)
	check(now, []string{}, "leased", "later")
	check(now.Add(time.Minute), []string{"free", "later"}, all...)
	check(now.Add(2*time.Hour), []string{"free", "later", "leased"}, all...) // the hour's lease is over
	e.complete(delivered(res[1].Deliveries[0].ID, 1, now))
	check(now, []string{}, all...)
}
