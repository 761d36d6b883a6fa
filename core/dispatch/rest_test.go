package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/embedded"
)

// restRig is a dispatcher whose lanes rest after a short idle time, telling rested of each rest.
func restRig(t *testing.T, now func() time.Time) (*rig, chan string) {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rested := make(chan string, 100000)
	d := New(st, Options{Poll: 50 * time.Millisecond, Logger: quiet, IdleAfter: 20 * time.Millisecond, Now: now,
		OnIdle: func(name string) { rested <- name }})
	r := &rig{t: t, st: st, disp: d}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
		st.Close()
	})
	return r, rested
}

// waitRested waits until each of names has rested once.
func waitRested(t *testing.T, rested <-chan string, names ...string) {
	t.Helper()
	left := map[string]int{}
	for _, n := range names {
		left[n]++
	}
	timeout := time.After(60 * time.Second)
	for len(left) > 0 {
		select {
		case n := <-rested:
			if left[n]--; left[n] <= 0 {
				delete(left, n)
			}
		case <-timeout:
			t.Fatalf("%d lanes never rested", len(left))
		}
	}
}

func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestIdleLanesCostNoGoroutines: thousands of lanes (per-run subscriptions) that each delivered an event and
// then had nothing to do keep no goroutines, and each costs about a kilobyte of heap.
func TestIdleLanesCostNoGoroutines(t *testing.T) {
	if testing.Short() {
		t.Skip("registers thousands of lanes")
	}
	r, rested := restRig(t, nil)
	n := 2000 / raceScale
	sink := newFake(nil)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("inline-%04d", i)
	}
	// The runtime keeps the descriptors of ended goroutines for reuse, never freeing them: start and end as
	// many as the lanes will run at once first, so that cache is not counted against resting lanes.
	warm := make(chan struct{})
	var ended sync.WaitGroup
	for range n * 17 {
		ended.Add(1)
		go func() { <-warm; ended.Done() }()
	}
	close(warm)
	ended.Wait()
	goroutines, heap := runtime.NumGoroutine(), heapNow()
	for _, name := range names {
		r.disp.Add(Destination{Name: name, Sink: sink, Policy: Policy{Timeout: time.Second, Concurrency: 16}})
	}
	// Every lane wakes for the event (16 workers and a scanner each), delivers it, and rests again.
	r.publish("e", 1, names...)
	waitFor(t, "every event delivered", func() bool { return sink.delivered() == n })
	waitRested(t, rested, names...)
	// The last goroutine of each crew reports its rest as it ends: a few may still be returning.
	if g := runtime.NumGoroutine(); g > goroutines+50 {
		t.Fatalf("%d idle lanes keep %d goroutines (%d before them)", n, g-goroutines, goroutines)
	}
	per := (int64(heapNow()) - int64(heap)) / int64(n)
	t.Logf("heap per idle lane: %d bytes (including the store's growth for %d events)", per, n)
	// The race detector's bookkeeping and the smaller count (fixed costs weigh more) make the figure
	// meaningless under -race; it is checked in every other build.
	if per > 2048 && raceScale == 1 {
		t.Fatalf("an idle lane costs %d bytes of heap; the budget is 2 KB", per)
	}
	if got := r.disp.idle.resting(); got != n {
		t.Fatalf("%d lanes rest, want %d", got, n)
	}
}

// TestRestingLaneWakes: a lane at rest wakes for a new event, for a retry that falls due (the dispatcher's
// idle watch, not a goroutine of its own), and for work written to the store behind its back (the store says
// which resting lanes have due work).
func TestRestingLaneWakes(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	r, rested := restRig(t, now)
	sink := newFake(func(id string, n int) error {
		if id == "retry-0000" && n == 1 {
			return errors.New("connection reset")
		}
		return nil
	})
	r.disp.Add(Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Second, Concurrency: 2, Schedule: []time.Duration{time.Hour}}})

	r.publish("new", 1, "d")
	r.waitStatus("new-0000", store.Delivered)
	waitRested(t, rested, "d")

	// The first attempt fails; its retry is due in an hour. The lane rests meanwhile.
	r.publish("retry", 1, "d")
	waitFor(t, "the failed first attempt", func() bool {
		rec, err := r.st.Event(context.Background(), "retry-0000")
		return err == nil && rec.Deliveries[0].Attempts == 1
	})
	waitFor(t, "the lane resting until its retry is due", func() bool { return !r.disp.restingUntil("d").IsZero() })
	if rec, _ := r.st.Event(context.Background(), "retry-0000"); rec.Deliveries[0].Status != store.Pending {
		t.Fatalf("the retry ran before it was due: %+v", rec.Deliveries[0])
	}
	skew.Add(int64(time.Hour))
	r.waitStatus("retry-0000", store.Delivered)
	waitRested(t, rested, "d")

	// Written to the store without a word to the dispatcher (as another node would).
	ev := event.Event{ID: "behind", Topic: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}
	if _, err := r.st.Append(context.Background(), []store.NewEvent{{Event: ev, Destinations: []string{"d"}}},
		store.AppendOptions{DedupeWindow: time.Hour}); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("behind", store.Delivered)
}

// restingUntil is when the idle watch wakes a resting lane for its next due delivery (zero: not resting, or
// nothing due).
func (d *Dispatcher) restingUntil(name string) time.Time {
	d.mu.RLock()
	l := d.lanes[name]
	d.mu.RUnlock()
	d.idle.mu.Lock()
	defer d.idle.mu.Unlock()
	return d.idle.lanes[l]
}

// TestNewLaneLearnsWhenItsWorkFallsDue: a lane that starts resting while its destination has work due later (a
// retry written before a restart) is woken when that falls due, not at the first look after: the idle watch
// learns the time from the store.
func TestNewLaneLearnsWhenItsWorkFallsDue(t *testing.T) {
	var skew atomic.Int64
	skew.Store(int64(-time.Hour)) // the dispatcher's clock an hour behind the store's: what the store wrote is due in an hour
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	r, _ := restRig(t, now)
	ev := event.Event{ID: "later", Topic: "t", Time: time.Now(), Data: json.RawMessage(`{}`)}
	if _, err := r.st.Append(context.Background(), []store.NewEvent{{Event: ev, Destinations: []string{"d"}}},
		store.AppendOptions{DedupeWindow: time.Hour}); err != nil {
		t.Fatal(err)
	}
	due, ok, err := r.st.NextDue(context.Background(), "d")
	if err != nil || !ok {
		t.Fatalf("NextDue = %v, %v", ok, err)
	}
	sink := newFake(nil)
	r.disp.Add(Destination{Name: "d", Sink: sink, Policy: Policy{Timeout: time.Second, Concurrency: 1}})
	waitFor(t, "the new lane resting until its work is due", func() bool { return r.disp.restingUntil("d").Equal(due) })
	if rec, _ := r.st.Event(context.Background(), "later"); rec.Deliveries[0].Status != store.Pending || rec.Deliveries[0].Attempts != 0 {
		t.Fatalf("attempted before it was due: %+v", rec.Deliveries[0])
	}
	skew.Store(0)
	r.waitStatus("later", store.Delivered)
}
