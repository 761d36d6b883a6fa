package intake

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
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
