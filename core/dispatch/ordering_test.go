package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

// orderSink fails a random share of attempts and records, per key, the order in which events were delivered.
type orderSink struct {
	mu     sync.Mutex
	byKey  map[string][]int
	fail   float64
	perm   map[string]bool // event ids that fail permanently
	inKey  map[string]bool // keys with a Send in flight
	overlp int
}

func (o *orderSink) Send(ctx context.Context, batch []event.Event) error {
	errs := make([]error, len(batch))
	failed := false
	o.mu.Lock()
	for _, ev := range batch {
		if o.inKey[ev.OrderingKey] {
			o.overlp++
		}
		o.inKey[ev.OrderingKey] = true
	}
	o.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, ev := range batch {
		delete(o.inKey, ev.OrderingKey)
		switch {
		case o.perm[ev.ID]:
			errs[i], failed = sinks.Permanent(errors.New("rejected")), true
		case rand.Float64() < o.fail:
			errs[i], failed = sinks.Retryable(errors.New("flaky"), 0), true
		default:
			var d struct{ N int }
			_ = json.Unmarshal(ev.Data, &d)
			o.byKey[ev.OrderingKey] = append(o.byKey[ev.OrderingKey], d.N)
		}
	}
	if failed {
		return &sinks.BatchError{Errs: errs}
	}
	return nil
}

func (o *orderSink) Close(context.Context) error { return nil }

func (o *orderSink) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, l := range o.byKey {
		n += len(l)
	}
	return n
}

func appendOrdered(t *testing.T, r *rig, keys, per int, block bool) {
	t.Helper()
	for n := range per {
		var batch []store.NewEvent
		for k := range keys {
			key := fmt.Sprintf("case-%02d", k)
			batch = append(batch, store.NewEvent{
				Event:        event.Event{ID: fmt.Sprintf("%s-%04d", key, n), Topic: "t", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))},
				Destinations: []string{"d"}, OrderingKeys: []string{key}, OrderingBlock: []bool{block},
			})
		}
		if _, err := r.st.Append(context.Background(), batch, store.AppendOptions{DedupeWindow: time.Hour}); err != nil {
			t.Fatal(err)
		}
		r.disp.Poke("d")
	}
}

// TestPerKeyOrderUnderRandomFailures: 50 keys × 200 events, a quarter of attempts failing at random: every
// key's events arrive strictly in publish order, never two of one key at once, and none is lost.
func TestPerKeyOrderUnderRandomFailures(t *testing.T) {
	sink := &orderSink{byKey: map[string][]int{}, fail: 0.25, inKey: map[string]bool{}}
	schedule := make([]time.Duration, 50)
	for i := range schedule {
		schedule[i] = time.Millisecond
	}
	r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Ordered: true,
		Policy: Policy{Timeout: time.Second, Concurrency: 16, Schedule: schedule}})
	keys, per := 50, 200/raceScale
	appendOrdered(t, r, keys, per, false)
	deadline := time.Now().Add(3 * time.Minute)
	for sink.count() < keys*per {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d", sink.count(), keys*per)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.overlp > 0 {
		t.Fatalf("%d sends overlapped another of the same key", sink.overlp)
	}
	for key, got := range sink.byKey {
		for i, n := range got {
			if n != i {
				t.Fatalf("key %s: delivery %d was event %d; order broken: %v", key, i, n, got[:min(len(got), i+3)])
			}
		}
	}
}

// TestOrderingOnFailure: after an event finally fails, skip lets the later events of its key proceed; block
// holds them.
func TestOrderingOnFailure(t *testing.T) {
	for _, block := range []bool{false, true} {
		t.Run(fmt.Sprint("block=", block), func(t *testing.T) {
			sink := &orderSink{byKey: map[string][]int{}, inKey: map[string]bool{}, perm: map[string]bool{"case-00-0001": true}}
			r := newRig(t, t.TempDir(), Destination{Name: "d", Sink: sink, Ordered: true,
				Policy: Policy{Timeout: time.Second, Concurrency: 4}})
			appendOrdered(t, r, 2, 4, block)
			r.waitStatus("case-00-0001", store.Failed)
			waitFor(t, "the other key to finish", func() bool {
				sink.mu.Lock()
				defer sink.mu.Unlock()
				return len(sink.byKey["case-01"]) == 4
			})
			if block {
				time.Sleep(100 * time.Millisecond)
				rec, _ := r.st.Event(context.Background(), "case-00-0002")
				if rec.Deliveries[0].Status != store.Pending {
					t.Fatalf("with block, a later event must wait after a failure: %s", rec.Deliveries[0].Status)
				}
				return
			}
			r.waitStatus("case-00-0003", store.Delivered)
			sink.mu.Lock()
			defer sink.mu.Unlock()
			if fmt.Sprint(sink.byKey["case-00"]) != "[0 2 3]" {
				t.Fatalf("with skip: delivered %v, want [0 2 3]", sink.byKey["case-00"])
			}
		})
	}
}
