package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
	"github.com/sluicehq/sluice/sinks"
)

var quiet = slog.New(slog.DiscardHandler)

// fakeSink answers each event with the errors in script (by attempt number), then nil.
type fakeSink struct {
	mu       sync.Mutex
	attempts map[string]int
	got      []string
	script   func(id string, attempt int) error
	block    chan struct{} // if set, Send waits for it (or ctx)
	entered  chan struct{} // if set, Send signals it on entry
}

func newFake(script func(string, int) error) *fakeSink {
	return &fakeSink{attempts: map[string]int{}, script: script}
}

func (f *fakeSink) Send(ctx context.Context, batch []event.Event) error {
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := batch[0].ID
	f.attempts[id]++
	if f.script != nil {
		if err := f.script(id, f.attempts[id]); err != nil {
			return err
		}
	}
	f.got = append(f.got, id)
	sinks.Note(ctx, 204, nil)
	return nil
}

func (f *fakeSink) Close(context.Context) error { return nil }

func (f *fakeSink) delivered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

type rig struct {
	t    *testing.T
	st   *embedded.Store
	disp *Dispatcher
}

func newRig(t *testing.T, dir string, dests ...Destination) *rig {
	t.Helper()
	st, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ReleaseLeases(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := New(st, Options{Poll: 50 * time.Millisecond, Logger: quiet})
	d.Start(dests)
	r := &rig{t: t, st: st, disp: d}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
		st.Close()
	})
	return r
}

// publish appends n events for dests, handing reserved deliveries to lanes as intake does.
func (r *rig) publish(prefix string, n int, dests ...string) {
	r.t.Helper()
	var batch []store.NewEvent
	var tickets [][]Ticket
	for i := range n {
		ev := event.Event{ID: fmt.Sprintf("%s-%04d", prefix, i), Topic: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}
		leased := make([]bool, len(dests))
		tickets = append(tickets, make([]Ticket, len(dests)))
		for j, d := range dests {
			tickets[i][j] = r.disp.Reserve(d)
			leased[j] = tickets[i][j].Reserved()
		}
		batch = append(batch, store.NewEvent{Event: ev, Destinations: dests, Leased: leased})
	}
	res, err := r.st.Append(context.Background(), batch, store.AppendOptions{DedupeWindow: time.Hour, Lease: FreshLease})
	if err != nil {
		r.t.Fatal(err)
	}
	for i, ar := range res {
		for j, dl := range ar.Deliveries {
			r.disp.Enqueue(tickets[i][j], dl, batch[i].Event)
		}
	}
}

func (r *rig) waitStatus(id string, want store.Status) *store.EventRecord {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := r.st.Event(context.Background(), id)
		if err == nil && len(rec.Deliveries) > 0 {
			all := true
			for _, d := range rec.Deliveries {
				all = all && d.Status == want
			}
			if all {
				return rec
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("event %s did not reach %s: %+v", id, want, rec)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func policy(schedule ...time.Duration) Policy {
	return Policy{Timeout: 2 * time.Second, Concurrency: 4, Schedule: schedule}
}

func TestRetriesThenDelivers(t *testing.T) {
	sink := newFake(func(id string, n int) error {
		if n <= 2 {
			return errors.New("connection reset")
		}
		return nil
	})
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Policy: policy(10*time.Millisecond, 20*time.Millisecond, time.Hour)})
	r.publish("e", 3, "d")
	for i := range 3 {
		rec := r.waitStatus(fmt.Sprintf("e-%04d", i), store.Delivered)
		a := rec.Deliveries[0].AttemptLog
		if len(a) != 3 || a[0].Error != "connection reset" || a[2].Error != "" || a[2].StatusCode != 204 {
			t.Fatalf("attempt log %+v", a)
		}
	}
}

func TestExhaustedAndPermanentFail(t *testing.T) {
	sink := newFake(func(id string, n int) error {
		if id == "e-0000" {
			return sinks.Permanent(errors.New("http 400 Bad Request"))
		}
		return sinks.Retryable(errors.New("http 503"), 0)
	})
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Policy: policy(5*time.Millisecond, 5*time.Millisecond)})
	r.publish("e", 2, "d")
	if a := r.waitStatus("e-0000", store.Failed).Deliveries[0].AttemptLog; len(a) != 1 {
		t.Fatalf("a permanent error must not be retried: %d attempts", len(a))
	}
	if a := r.waitStatus("e-0001", store.Failed).Deliveries[0].AttemptLog; len(a) != 3 {
		t.Fatalf("schedule of 2 retries: got %d attempts, want 3", len(a))
	}
}

// TestLaneIsolation proves a destination that hangs does not delay another: the healthy one receives every
// event while the hung one is still holding its first attempts.
func TestLaneIsolation(t *testing.T) {
	hung := newFake(nil)
	hung.block = make(chan struct{})
	healthy := newFake(nil)
	r := newRig(t, t.TempDir(),
		Destination{Name: "hung", Sink: hung, Policy: Policy{Timeout: time.Minute, Concurrency: 2, Schedule: []time.Duration{time.Millisecond}}},
		Destination{Name: "healthy", Sink: healthy, Policy: policy()})
	r.publish("e", 500, "hung", "healthy")
	waitFor(t, "healthy destination to receive all 500", func() bool { return healthy.delivered() == 500 })
	if n := hung.delivered(); n != 0 {
		t.Fatalf("hung destination delivered %d while blocked", n)
	}
	close(hung.block)
	waitFor(t, "hung destination to catch up", func() bool { return hung.delivered() == 500 })
}

// TestOverflowWaitsInStore fills a lane's in-memory queue; the rest is found by the scanner.
func TestOverflowWaitsInStore(t *testing.T) {
	sink := newFake(nil)
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := New(st, Options{FreshQueue: 8, Poll: 20 * time.Millisecond, Logger: quiet})
	d.Start([]Destination{{Name: "d", Sink: sink, Policy: policy()}})
	defer d.Shutdown(context.Background())
	r := &rig{t: t, st: st, disp: d}
	r.publish("e", 300, "d")
	waitFor(t, "all 300 delivered", func() bool { return sink.delivered() == 300 })
}

func TestGoneDisablesAndSkips(t *testing.T) {
	sink := newFake(func(string, int) error { return sinks.Gone(errors.New("http 410 Gone")) })
	sink.block = make(chan struct{})
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Minute, Concurrency: 1, Schedule: []time.Duration{time.Millisecond}}})
	r.publish("e", 5, "d")
	close(sink.block)
	r.waitStatus("e-0000", store.Failed)
	for i := 1; i < 5; i++ {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Skipped)
	}
	if r.disp.Accepting("d") {
		t.Fatal("a destination that answered 410 still accepts deliveries")
	}
}

// TestResumeAfterCrash leaves deliveries leased (as a killed process would) and checks a new dispatcher on
// the same store delivers them.
func TestResumeAfterCrash(t *testing.T) {
	dir := t.TempDir()
	st, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var batch []store.NewEvent
	for i := range 20 {
		batch = append(batch, store.NewEvent{Event: event.Event{ID: fmt.Sprint("c", i), Topic: "t", Data: json.RawMessage(`1`)},
			Destinations: []string{"d"}, Leased: []bool{i%2 == 0}})
	}
	if _, err := st.Append(context.Background(), batch, store.AppendOptions{DedupeWindow: time.Hour, Lease: FreshLease}); err != nil {
		t.Fatal(err)
	}
	st.Close() // "crash": nothing was sent

	sink := newFake(nil)
	newRig(t, dir, Destination{Name: "d", Sink: sink, Policy: policy()})
	waitFor(t, "all 20 delivered after restart", func() bool { return sink.delivered() == 20 })
}

func TestPolicyDelay(t *testing.T) {
	p := Policy{Schedule: []time.Duration{5 * time.Second, time.Minute, time.Hour}}
	cases := []struct {
		n          int
		retryAfter time.Duration
		want       time.Duration
		ok         bool
	}{
		{1, 0, 5 * time.Second, true},
		{2, 0, time.Minute, true},
		{3, 0, time.Hour, true},
		{4, 0, 0, false},
		{1, 30 * time.Second, 30 * time.Second, true},          // honoured
		{1, 24 * time.Hour, 5*time.Second + time.Minute, true}, // clamped to the next two steps
		{1, time.Second, 5 * time.Second, true},                // never earlier than the schedule
		{3, 5 * time.Hour, 2 * time.Hour, true},                // last step: at most twice it
	}
	for _, c := range cases {
		got, ok := p.delay(c.n, c.retryAfter)
		if got != c.want || ok != c.ok {
			t.Errorf("delay(%d, %v) = %v %v, want %v %v", c.n, c.retryAfter, got, ok, c.want, c.ok)
		}
	}
	p.Jitter = 0.2
	for range 1000 {
		d, _ := p.delay(2, 0)
		if d < 48*time.Second || d > 72*time.Second {
			t.Fatalf("jittered delay %v outside ±20%% of 1m", d)
		}
	}
}

// batchSink takes up to 10 events per Send and fails the first attempt of every third event in a batch.
type batchSink struct {
	mu      sync.Mutex
	sizes   []int
	got     map[string]int
	tried   map[string]int
	linger  time.Duration
	maxSize int
}

func (b *batchSink) Limits() sinks.Limits {
	return sinks.Limits{MaxBatch: 10, MaxEventBytes: 64, Linger: b.linger}
}

func (b *batchSink) Send(ctx context.Context, batch []event.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, len(batch))
	errs := make([]error, len(batch))
	failed := false
	for i, ev := range batch {
		if len(ev.Data) > 64 {
			panic("the dispatcher sent an oversized event")
		}
		b.tried[ev.ID]++
		if i%3 == 2 && b.tried[ev.ID] == 1 {
			errs[i], failed = sinks.Retryable(errors.New("not confirmed"), 0), true
			continue
		}
		b.got[ev.ID]++
	}
	if failed {
		return &sinks.BatchError{Errs: errs}
	}
	return nil
}

func (b *batchSink) Close(context.Context) error { return nil }

func TestBatchingRetriesOnlyFailedEntries(t *testing.T) {
	sink := &batchSink{got: map[string]int{}, tried: map[string]int{}, linger: 50 * time.Millisecond}
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Policy: policy(5*time.Millisecond, 5*time.Millisecond)})
	r.publish("e", 200, "d")
	// One oversized event fails permanently without reaching the sink.
	big := event.Event{ID: "big", Topic: "t", Data: json.RawMessage(`"` + strings.Repeat("x", 100) + `"`)}
	res, err := r.st.Append(context.Background(), []store.NewEvent{{Event: big, Destinations: []string{"d"}}}, store.AppendOptions{DedupeWindow: time.Hour})
	if err != nil || len(res[0].Deliveries) != 1 {
		t.Fatal(err)
	}
	for i := range 200 {
		r.waitStatus(fmt.Sprintf("e-%04d", i), store.Delivered)
	}
	if a := r.waitStatus("big", store.Failed).Deliveries[0].AttemptLog; len(a) != 1 || !strings.Contains(a[0].Error, "at most 64") {
		t.Fatalf("oversized: %+v", a)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	biggest, dup := 0, 0
	for _, n := range sink.sizes {
		biggest = max(biggest, n)
	}
	for _, n := range sink.got {
		dup += n - 1
	}
	if biggest < 2 || biggest > 10 {
		t.Fatalf("largest batch %d, want 2..10", biggest)
	}
	if len(sink.got) != 200 || dup != 0 {
		t.Fatalf("%d events delivered with %d duplicates: a partial failure must resend only the failed entries", len(sink.got), dup)
	}
}

// TestShutdownDrains: an attempt in flight when shutdown begins is allowed to finish and its outcome is
// recorded; one that outlasts the drain deadline is cut short and stays pending for the next start.
func TestShutdownDrains(t *testing.T) {
	for _, c := range []struct {
		name    string
		release bool
		want    store.Status
	}{{"finishes", true, store.Delivered}, {"cut short", false, store.Pending}} {
		t.Run(c.name, func(t *testing.T) {
			st, err := embedded.Open(t.TempDir(), embedded.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			sink := newFake(nil)
			sink.block, sink.entered = make(chan struct{}), make(chan struct{}, 1)
			d := New(st, Options{Logger: quiet})
			d.Start([]Destination{{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Minute, Concurrency: 1}}})
			r := &rig{t: t, st: st, disp: d}
			r.publish("e", 1, "d")
			<-sink.entered
			// The drain deadline: short where the attempt never ends (it must pass), and far off where the
			// attempt is let go while Shutdown waits (recording its outcome must not race a clock on a busy
			// machine).
			drain := 300 * time.Millisecond
			if c.release {
				drain = time.Minute
				time.AfterFunc(50*time.Millisecond, func() { close(sink.block) })
			}
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			err = d.Shutdown(ctx)
			if c.release && err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if !c.release && err == nil {
				t.Fatal("shutdown must report that the drain deadline passed")
			}
			rec, err := st.Event(context.Background(), "e-0000")
			if err != nil {
				t.Fatal(err)
			}
			if got := rec.Deliveries[0].Status; got != c.want {
				t.Fatalf("delivery is %s, want %s", got, c.want)
			}
			if !c.release && len(rec.Deliveries[0].AttemptLog) != 0 {
				t.Fatal("a cut-short attempt must not be recorded as a failure")
			}
		})
	}
}

func TestPrepareAndDynamicLanes(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	sink := newFake(nil)
	r := newRig(t, t.TempDir())
	r.disp.Add(Destination{Name: "d", Sink: recordBodies{sink, &mu, &bodies}, Policy: policy(), Prepare: func(ev *event.Event) error {
		if ev.ID == "e-0001" {
			return errors.New("transform: data.case is missing")
		}
		ev.Body = json.RawMessage(`{"shaped":"` + ev.ID + `"}`)
		return nil
	}})
	r.publish("e", 2, "d")
	r.waitStatus("e-0000", store.Delivered)
	if a := r.waitStatus("e-0001", store.Failed).Deliveries[0].AttemptLog; len(a) != 1 || !strings.Contains(a[0].Error, "data.case is missing") {
		t.Fatalf("a prepare error must fail the delivery with its reason: %+v", a)
	}
	mu.Lock()
	if len(bodies) != 1 || bodies[0] != `{"shaped":"e-0000"}` {
		t.Fatalf("sink saw bodies %v", bodies)
	}
	mu.Unlock()
	if err := r.disp.Remove(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	if r.disp.Accepting("d") {
		t.Fatal("a removed lane still accepts")
	}
}

type recordBodies struct {
	*fakeSink
	mu     *sync.Mutex
	bodies *[]string
}

func (r recordBodies) Send(ctx context.Context, batch []event.Event) error {
	r.mu.Lock()
	for _, ev := range batch {
		b, _ := ev.Envelope()
		*r.bodies = append(*r.bodies, string(b))
	}
	r.mu.Unlock()
	return r.fakeSink.Send(ctx, batch)
}
