package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
)

// countObserver counts outcomes per destination and outcome.
type countObserver struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *countObserver) Observe(destination, outcome string, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[destination+"/"+outcome]++
}

func (o *countObserver) get(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[key]
}

// calls records callback invocations.
type calls struct {
	mu  sync.Mutex
	got []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	c.got = append(c.got, s)
	c.mu.Unlock()
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// newOptsRig is newRig with dispatcher options (Logger and Poll filled in).
func newOptsRig(t *testing.T, opts Options, dests ...Destination) *rig {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Poll == 0 {
		opts.Poll = 50 * time.Millisecond
	}
	opts.Logger = quiet
	d := New(st, opts)
	d.Start(dests)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
		st.Close()
	})
	return &rig{t: t, st: st, disp: d}
}

// statuses returns the status of each of n published events' single delivery.
func (r *rig) statuses(prefix string, n int) map[store.Status]int {
	r.t.Helper()
	out := map[store.Status]int{}
	for i := range n {
		rec, err := r.st.Event(context.Background(), fmt.Sprintf("%s-%04d", prefix, i))
		if err != nil {
			r.t.Fatal(err)
		}
		out[rec.Deliveries[0].Status]++
	}
	return out
}

func TestAutoDisableAfterConsecutiveFailures(t *testing.T) {
	// No retries: every failed attempt ends its delivery as failed.
	sink := newFake(func(string, int) error { return sinks.Retryable(errors.New("http 503"), 0) })
	var disabled calls
	obs := &countObserver{}
	r := newOptsRig(t, Options{Observer: obs, OnDisabled: func(name, reason string) { disabled.add(name + ": " + reason) }},
		Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Minute, Concurrency: 1, AutoDisableAfter: 3}})
	r.publish("e", 10, "d")
	for i := range 3 {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Failed)
	}
	for i := 3; i < 10; i++ {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Skipped)
	}
	waitFor(t, "OnDisabled", func() bool { return len(disabled.list()) > 0 })
	if got := disabled.list(); len(got) != 1 || !strings.HasPrefix(got[0], "d: 3 consecutive deliveries failed; last error: http 503") {
		t.Fatalf("OnDisabled calls: %q", got)
	}
	sink.mu.Lock()
	tried := len(sink.attempts)
	sink.mu.Unlock()
	if tried != 3 {
		t.Fatalf("%d deliveries attempted, want 3: the lane must stop sending once disabled", tried)
	}
	if r.disp.Accepting("d") || r.disp.Enabled("d") {
		t.Fatal("an auto-disabled destination still accepts deliveries")
	}
	if n := obs.get("d/failed"); n != 3 {
		t.Fatalf("observed %d failed, want 3", n)
	}
	if n := obs.get("d/skipped"); n != 7 {
		t.Fatalf("observed %d skipped, want 7", n)
	}
}

// TestAutoDisableIgnoresRetriedAttempts: failed attempts that will be retried do not count, so an outage
// shorter than the retry schedule never disables a destination, however many attempts fail meanwhile.
func TestAutoDisableIgnoresRetriedAttempts(t *testing.T) {
	sink := newFake(func(string, int) error { return sinks.Retryable(errors.New("connection refused"), 0) })
	var disabled calls
	obs := &countObserver{}
	r := newOptsRig(t, Options{Observer: obs, OnDisabled: func(name, reason string) { disabled.add(name) }},
		Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Minute, Concurrency: 4, AutoDisableAfter: 3,
			Schedule: []time.Duration{time.Hour}}})
	r.publish("e", 20, "d")
	waitFor(t, "every first attempt", func() bool { return obs.get("d/retry") == 20 })
	if !r.disp.Enabled("d") || len(disabled.list()) != 0 {
		t.Fatalf("20 failed attempts that will be retried disabled the destination: %v", disabled.list())
	}
	for i := range 20 {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Pending)
	}
}

func TestAutoDisableStreakResetBySuccess(t *testing.T) {
	// Every third event is delivered: never three failures in a row.
	sink := newFake(func(id string, _ int) error {
		var i int
		fmt.Sscanf(id, "e-%d", &i)
		if i%3 == 2 {
			return nil
		}
		return sinks.Permanent(errors.New("http 400"))
	})
	var disabled calls
	r := newOptsRig(t, Options{OnDisabled: func(name, reason string) { disabled.add(name) }},
		Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Minute, Concurrency: 1, AutoDisableAfter: 3}})
	r.publish("e", 12, "d")
	for i := range 12 {
		want := store.Failed
		if i%3 == 2 {
			want = store.Delivered
		}
		r.waitStatus(fmt.Sprintf("e-%04d", i), want)
	}
	if !r.disp.Enabled("d") || len(disabled.list()) != 0 {
		t.Fatalf("a success between failures must reset the count: enabled %v, OnDisabled %v", r.disp.Enabled("d"), disabled.list())
	}
}

func TestGoneCallsOnDisabled(t *testing.T) {
	sink := newFake(func(string, int) error { return sinks.Gone(errors.New("http 410 Gone")) })
	var disabled calls
	r := newOptsRig(t, Options{OnDisabled: func(name, reason string) { disabled.add(name + ": " + reason) }},
		Destination{Name: "g", Sink: sink, Policy: Policy{Timeout: time.Minute, Concurrency: 1, Schedule: []time.Duration{time.Hour}}})
	r.publish("e", 3, "g")
	r.waitStatus("e-0000", store.Failed)
	r.waitStatus("e-0002", store.Skipped)
	waitFor(t, "OnDisabled", func() bool { return len(disabled.list()) > 0 })
	if got := disabled.list(); len(got) != 1 || got[0] != "g: the destination answered 410 Gone" {
		t.Fatalf("OnDisabled calls: %q", got)
	}
}

func TestOnFailedAndObserver(t *testing.T) {
	sink := newFake(func(id string, _ int) error {
		switch id {
		case "e-0000":
			return sinks.Permanent(errors.New("http 400"))
		case "e-0001":
			return sinks.Retryable(errors.New("http 503"), 0)
		}
		return nil
	})
	var failed calls
	obs := &countObserver{}
	r := newOptsRig(t, Options{Observer: obs, OnFailed: func(j store.Job, a store.Attempt) {
		failed.add(fmt.Sprintf("%s/%d/%s", j.Event.ID, a.N, a.Error))
	}}, Destination{Name: "d", Sink: sink, Policy: policy(time.Millisecond, time.Millisecond)})
	r.publish("e", 3, "d")
	r.waitStatus("e-0000", store.Failed)
	r.waitStatus("e-0001", store.Failed)
	r.waitStatus("e-0002", store.Delivered)
	waitFor(t, "OnFailed twice", func() bool { return len(failed.list()) >= 2 })
	got := failed.list()
	slices.Sort(got)
	if want := []string{"e-0000/1/http 400", "e-0001/3/http 503"}; !slices.Equal(got, want) {
		t.Fatalf("OnFailed calls %q, want %q", got, want)
	}
	for key, want := range map[string]int{"d/delivered": 1, "d/failed": 2, "d/retry": 2, "d/skipped": 0} {
		if n := obs.get(key); n != want {
			t.Errorf("observed %s %d times, want %d", key, n, want)
		}
	}
}

// TestRetryBaseRestartsSchedule: a delivery requeued by hand after its attempts ran out gets the whole
// schedule again.
func TestRetryBaseRestartsSchedule(t *testing.T) {
	sink := newFake(func(string, int) error { return sinks.Retryable(errors.New("http 503"), 0) })
	r := newOptsRig(t, Options{}, Destination{Name: "d", Sink: sink, Policy: policy(time.Millisecond, time.Millisecond)})
	r.publish("e", 1, "d")
	rec := r.waitStatus("e-0000", store.Failed)
	if n := len(rec.Deliveries[0].AttemptLog); n != 3 {
		t.Fatalf("%d attempts before the requeue, want 3", n)
	}
	dl, err := r.st.Retry(context.Background(), rec.Deliveries[0].ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if dl.RetryBase != 3 {
		t.Fatalf("RetryBase %d after the requeue, want 3", dl.RetryBase)
	}
	r.disp.Poke("d")
	waitFor(t, "the requeued delivery to fail again", func() bool {
		rec, err := r.st.Event(context.Background(), "e-0000")
		return err == nil && rec.Deliveries[0].Status == store.Failed && len(rec.Deliveries[0].AttemptLog) > 3
	})
	rec, _ = r.st.Event(context.Background(), "e-0000")
	a := rec.Deliveries[0].AttemptLog
	if len(a) != 6 {
		t.Fatalf("%d attempts in all, want 6 (3 + a full schedule of 3)", len(a))
	}
	for i, at := range a {
		if at.N != i+1 {
			t.Fatalf("attempt %d numbered %d: numbers must keep counting across the requeue", i+1, at.N)
		}
	}
}

// stuckPolicy sends one event, then waits for the rate limiter far longer than any test: everything else the
// lane takes stays in memory, untried.
func stuckPolicy() Policy {
	return Policy{Timeout: time.Minute, Concurrency: 2, RatePerSecond: 0.0001, Burst: 1}
}

// claimAll claims every pending delivery of destination that is due now and not leased.
func claimAll(t *testing.T, st store.Store, destination string) []store.Job {
	t.Helper()
	jobs, err := st.Claim(context.Background(), destination, time.Now(), time.Minute, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

func TestRemoveHandsBackWhatTheLaneHeld(t *testing.T) {
	sink := newFake(nil)
	r := newOptsRig(t, Options{}, Destination{Name: "d", Sink: sink, Policy: stuckPolicy()})
	r.publish("e", 30, "d")
	waitFor(t, "the first send", func() bool { return sink.delivered() == 1 })
	if err := r.disp.Remove(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	jobs := claimAll(t, r.st, "d")
	if len(jobs) != 29 {
		t.Fatalf("%d deliveries claimable after Remove, want 29: the rest are stranded in leases", len(jobs))
	}
	for _, j := range jobs {
		if j.Delivery.Attempts != 0 {
			t.Fatalf("a handed-back delivery recorded an attempt: %+v", j.Delivery)
		}
	}
	if st := r.statuses("e", 30); st[store.Delivered] != 1 || st[store.Pending] != 29 {
		t.Fatalf("statuses %v", st)
	}
}

func TestReplaceDeliversEverything(t *testing.T) {
	old := newFake(nil)
	r := newOptsRig(t, Options{}, Destination{Name: "d", Sink: old, Policy: stuckPolicy()})
	r.publish("e", 40, "d")
	waitFor(t, "the first send", func() bool { return old.delivered() == 1 })
	// A ticket of the old lane, used after the replacement: the delivery must reach the new lane.
	tk := r.disp.Reserve("d")
	if !tk.Reserved() {
		t.Fatal("no room in the lane")
	}
	late := event.Event{ID: "late", Topic: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}
	res, err := r.st.Append(context.Background(), []store.NewEvent{{Event: late, Destinations: []string{"d"}, Leased: []bool{true}}},
		store.AppendOptions{DedupeWindow: time.Hour, Lease: FreshLease})
	if err != nil {
		t.Fatal(err)
	}
	fresh := newFake(nil)
	if err := r.disp.Replace(context.Background(), Destination{Name: "d", Sink: fresh, Policy: policy()}); err != nil {
		t.Fatal(err)
	}
	r.disp.Enqueue(tk, res[0].Deliveries[0], late)
	r.publish("f", 10, "d")
	for i := range 40 {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Delivered)
	}
	for i := range 10 {
		r.waitStatus(fmt.Sprintf("f-%04d", i), store.Delivered)
	}
	r.waitStatus("late", store.Delivered)
	if n := old.delivered() + fresh.delivered(); n != 51 {
		t.Fatalf("%d sends for 51 deliveries", n)
	}
	if got := r.disp.Lanes(); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("lanes %v", got)
	}
}

func TestEnqueueAfterRemoveKeepsTheJob(t *testing.T) {
	sink := newFake(nil)
	r := newOptsRig(t, Options{}, Destination{Name: "d", Sink: sink, Policy: policy()})
	tk := r.disp.Reserve("d")
	if !tk.Reserved() {
		t.Fatal("no room in the lane")
	}
	ev := event.Event{ID: "x", Topic: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}
	res, err := r.st.Append(context.Background(), []store.NewEvent{{Event: ev, Destinations: []string{"d"}, Leased: []bool{true}}},
		store.AppendOptions{DedupeWindow: time.Hour, Lease: FreshLease})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.disp.Remove(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	if r.disp.Reserve("d").Reserved() {
		t.Fatal("a removed lane gave a reservation")
	}
	r.disp.Enqueue(tk, res[0].Deliveries[0], ev) // must neither block nor lose it
	jobs := claimAll(t, r.st, "d")
	if len(jobs) != 1 || jobs[0].Event.ID != "x" {
		t.Fatalf("claimable after a late Enqueue: %+v", jobs)
	}
	if sink.delivered() != 0 {
		t.Fatal("a removed lane sent")
	}
	if len(r.disp.Lanes()) != 0 {
		t.Fatalf("lanes %v after Remove", r.disp.Lanes())
	}
}

func TestAttempt(t *testing.T) {
	obs := &countObserver{}
	ok := newFake(nil)
	bad := newFake(func(string, int) error { return sinks.Retryable(errors.New("http 503"), 0) })
	r := newOptsRig(t, Options{Observer: obs},
		Destination{Name: "ok", Sink: ok, Policy: policy(time.Millisecond), Prepare: func(ev *event.Event) error {
			ev.Body = json.RawMessage(`{"prepared":true}`)
			return nil
		}},
		Destination{Name: "bad", Sink: bad, Policy: policy(time.Millisecond)})
	ev := event.Event{ID: "test-1", Topic: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}
	// Leased at birth, so the lanes' scanners leave the deliveries to Attempt.
	res, err := r.st.Append(context.Background(), []store.NewEvent{{Event: ev, Destinations: []string{"ok", "bad"},
		Leased: []bool{true, true}, Test: true}}, store.AppendOptions{DedupeWindow: time.Hour, Lease: FreshLease})
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range res[0].Deliveries {
		out, err := r.disp.Attempt(context.Background(), dl.Destination, store.Job{Delivery: dl, Event: ev})
		if err != nil {
			t.Fatal(err)
		}
		want, wantErr := store.Delivered, ""
		if dl.Destination == "bad" {
			want, wantErr = store.Failed, "http 503"
		}
		if out.Status != want || out.Attempt.N != 1 || out.Attempt.Error != wantErr || out.DeliveryID != dl.ID {
			t.Fatalf("%s: outcome %+v", dl.Destination, out)
		}
		rec, err := r.st.Delivery(context.Background(), dl.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != want || len(rec.AttemptLog) != 1 || rec.AttemptLog[0].Error != wantErr {
			t.Fatalf("%s: stored %+v", dl.Destination, rec)
		}
	}
	if ok.delivered() != 1 || obs.get("ok/delivered") != 1 || obs.get("bad/failed") != 1 || obs.get("bad/retry") != 0 {
		t.Fatalf("sends %d, observed %v", ok.delivered(), obs.n)
	}
	if _, err := r.disp.Attempt(context.Background(), "nope", store.Job{}); !errors.Is(err, ErrNoLane) {
		t.Fatalf("unknown lane: %v", err)
	}
}
