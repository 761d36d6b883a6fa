package intake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
)

const oneDestination = `auth: {keys: [{name: a, key: k, role: admin}]}
destinations:
  - {name: all, type: webhook, topics: ["*"], config: {url: "https://example.com/a", signing: none}}
`

// TestPublishWhileLaneIsReplaced publishes while the destination's lane is replaced again and again: a
// delivery reserved in a lane that stops before it is enqueued must still be delivered, and OnAccepted counts
// the stored events, duplicates excluded.
func TestPublishWhileLaneIsReplaced(t *testing.T) {
	var accepted atomic.Int64
	f := newFixture(t, t.TempDir(), oneDestination, func(o *Options) {
		o.OnAccepted = func(n int) { accepted.Add(int64(n)) }
	})
	var mu sync.Mutex
	var sinksUsed []*recSink
	replace := func() {
		s := &recSink{}
		mu.Lock()
		sinksUsed = append(sinksUsed, s)
		mu.Unlock()
		if err := f.disp.Replace(context.Background(), dispatch.Destination{Name: "all", Sink: s,
			Policy: dispatch.Policy{Timeout: time.Second, Concurrency: 2}}); err != nil {
			t.Error(err)
		}
	}
	replace()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				replace()
			}
		}
	}()
	const n = 200
	for i := range n {
		ev := event.Event{ID: fmt.Sprintf("p-%04d", i), Topic: "t", Data: json.RawMessage(`{}`)}
		if _, err := f.in.Publish(context.Background(), []event.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	// A duplicate is not counted.
	if _, err := f.in.Publish(context.Background(), []event.Event{{ID: "p-0000", Topic: "t", Data: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if got := accepted.Load(); got != n {
		t.Fatalf("OnAccepted counted %d events, want %d", got, n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < n; {
		rec, err := f.st.Event(context.Background(), fmt.Sprintf("p-%04d", i))
		if err == nil && len(rec.Deliveries) == 1 && rec.Deliveries[0].Status == store.Delivered {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("event p-%04d was not delivered: %+v", i, rec)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]bool{}
	for _, s := range sinksUsed {
		for _, id := range s.ids() {
			seen[id] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("sinks saw %d distinct events, want %d", len(seen), n)
	}
}

// TestPublishBeforeTheLaneStarts: a routing table names a destination whose lane a change has not started yet
// (a reload sets the table, then starts lanes). An event published in that gap gets its delivery all the same,
// and the lane delivers it once it starts.
func TestPublishBeforeTheLaneStarts(t *testing.T) {
	const twoDestinations = oneDestination + `  - {name: late, type: webhook, topics: ["*"], config: {url: "https://example.com/b", signing: none}}
`
	f := newFixture(t, t.TempDir(), twoDestinations, nil)
	// The fixture started a lane for every destination; take "late" away again, as if its lane were not
	// started yet.
	if err := f.disp.Remove(context.Background(), "late"); err != nil {
		t.Fatal(err)
	}
	ev := event.Event{ID: "gap-1", Topic: "t", Data: json.RawMessage(`{}`)}
	if _, err := f.in.Publish(context.Background(), []event.Event{ev}); err != nil {
		t.Fatal(err)
	}
	rec, err := f.st.Event(context.Background(), "gap-1")
	if err != nil {
		t.Fatal(err)
	}
	var late *store.DeliveryRecord
	for i := range rec.Deliveries {
		if rec.Deliveries[i].Destination == "late" {
			late = &rec.Deliveries[i]
		}
	}
	if late == nil || late.Status != store.Pending {
		t.Fatalf("the event has no pending delivery to the destination whose lane had not started: %+v", rec.Deliveries)
	}
	s := &recSink{}
	f.disp.Add(dispatch.Destination{Name: "late", Sink: s, Policy: dispatch.Policy{Timeout: time.Second, Concurrency: 1}})
	waitUntil(t, "the late lane delivers the event", func() bool { return len(s.ids()) == 1 && s.ids()[0] == "gap-1" })
}

// TestPublishToALaneThatDisabledItself: a lane that disabled itself (410 Gone, auto-disable) before the routing
// table says so keeps the event as a skipped delivery, for a replay once it is enabled again.
func TestPublishToALaneThatDisabledItself(t *testing.T) {
	f := newFixture(t, t.TempDir(), oneDestination, nil)
	if err := f.disp.Replace(context.Background(), dispatch.Destination{Name: "all", Sink: goneSink{},
		Policy: dispatch.Policy{Timeout: time.Second, Concurrency: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.in.Publish(context.Background(), []event.Event{{ID: "gone-1", Topic: "t", Data: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the lane to disable itself on 410 Gone", func() bool { return f.disp.Disabled("all") })
	if _, err := f.in.Publish(context.Background(), []event.Event{{ID: "off-1", Topic: "t", Data: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	rec, err := f.st.Event(context.Background(), "off-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Deliveries) != 1 || rec.Deliveries[0].Status != store.Skipped {
		t.Fatalf("deliveries %+v, want one skipped", rec.Deliveries)
	}
}

// goneSink answers every send as a receiver that is gone for good (HTTP 410).
type goneSink struct{}

func (goneSink) Send(context.Context, []event.Event) error { return sinks.Gone(errors.New("410 Gone")) }
func (goneSink) Close(context.Context) error               { return nil }
