package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// completeRecorder is a store whose Complete only reports how many outcomes each call wrote; the completer
// calls nothing else of it. linger, when set, is offered as the store's CompleteLinger.
type completeRecorder struct {
	store.Store
	wrote  chan int
	linger time.Duration
}

func (r *completeRecorder) Complete(_ context.Context, outs []store.Outcome) error {
	r.wrote <- len(outs)
	return nil
}

type lingeringRecorder struct{ *completeRecorder }

func (r lingeringRecorder) CompleteLinger() time.Duration { return r.linger }

func newRecorder() *completeRecorder { return &completeRecorder{wrote: make(chan int, 16)} }

// plain is a completion nothing waits on: n first attempts of an unordered destination, delivered.
func plain(l *lane, n int) completion {
	outs := make([]store.Outcome, n)
	for i := range outs {
		outs[i] = store.Outcome{DeliveryID: int64(i + 1), Status: store.Delivered, Attempt: store.Attempt{N: 1}}
	}
	return completion{lane: l, outs: outs}
}

func shutdown(t *testing.T, d *Dispatcher) {
	t.Helper()
	if err := d.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func nextWrite(t *testing.T, r *completeRecorder) int {
	t.Helper()
	select {
	case n := <-r.wrote:
		return n
	case <-time.After(20 * time.Second):
		t.Fatal("no Complete")
		return 0
	}
}

func noWrite(t *testing.T, r *completeRecorder) {
	t.Helper()
	select {
	case n := <-r.wrote:
		t.Fatalf("a Complete of %d outcomes was written, want none yet", n)
	default:
	}
}

// Outcomes nothing waits on wait (here an hour, so only the rules below can end the wait) and go together with
// the first outcome something waits on; a full batch and shutdown do not wait either.
func TestCompleteLingerGathersOutcomesNobodyWaitsOn(t *testing.T) {
	t.Run("until an awaited completion", func(t *testing.T) {
		r := newRecorder()
		d := New(r, Options{Logger: quiet, CompleteLinger: time.Hour})
		defer shutdown(t, d)
		l := &lane{dest: Destination{Name: "a"}}
		for range 3 {
			d.complete(plain(l, 1))
			// Taken by the completer before the next comes: without the linger each would be written alone.
			waitFor(t, "the completer to take the outcome", func() bool { return len(d.outcomes) == 0 })
		}
		noWrite(t, r)
		done := make(chan struct{})
		d.complete(completion{lane: l, done: done}) // a Remove barrier: it carries no outcome
		if n := nextWrite(t, r); n != 3 {
			t.Fatalf("wrote %d outcomes in the first Complete, want the 3 that lingered", n)
		}
		<-done
		noWrite(t, r)
	})
	t.Run("a retry or an ordered destination's outcome does not linger", func(t *testing.T) {
		r := newRecorder()
		d := New(r, Options{Logger: quiet, CompleteLinger: time.Hour})
		defer shutdown(t, d)
		retry := plain(&lane{dest: Destination{Name: "a"}, wake: make(chan struct{}, 1)}, 1)
		retry.retry = true
		d.complete(retry)
		if n := nextWrite(t, r); n != 1 {
			t.Fatalf("wrote %d, want the retry's 1", n)
		}
		d.complete(plain(&lane{dest: Destination{Name: "o", Ordered: true}, wake: make(chan struct{}, 1)}, 2))
		if n := nextWrite(t, r); n != 2 {
			t.Fatalf("wrote %d, want the ordered destination's 2", n)
		}
	})
	t.Run("until the batch is full", func(t *testing.T) {
		r := newRecorder()
		d := New(r, Options{Logger: quiet, CompleteLinger: time.Hour})
		defer shutdown(t, d)
		l := &lane{dest: Destination{Name: "a"}}
		d.complete(plain(l, lingerBatch-1))
		noWrite(t, r)
		d.complete(plain(l, 1))
		if n := nextWrite(t, r); n != lingerBatch {
			t.Fatalf("wrote %d, want a full batch of %d", n, lingerBatch)
		}
	})
	t.Run("until shutdown", func(t *testing.T) {
		r := newRecorder()
		d := New(r, Options{Logger: quiet, CompleteLinger: time.Hour})
		d.complete(plain(&lane{dest: Destination{Name: "a"}}, 5))
		shutdown(t, d) // returns only once everything queued is written
		if n := nextWrite(t, r); n != 5 {
			t.Fatalf("wrote %d at shutdown, want 5", n)
		}
	})
	t.Run("for the store's linger", func(t *testing.T) {
		r := newRecorder()
		r.linger = 30 * time.Millisecond
		d := New(lingeringRecorder{r}, Options{Logger: quiet})
		defer shutdown(t, d)
		if d.opts.CompleteLinger != r.linger {
			t.Fatalf("CompleteLinger = %v, want the store's %v", d.opts.CompleteLinger, r.linger)
		}
		d.complete(plain(&lane{dest: Destination{Name: "a"}}, 1))
		if n := nextWrite(t, r); n != 1 { // the wait ends on its own
			t.Fatalf("wrote %d, want 1", n)
		}
		never := New(lingeringRecorder{r}, Options{Logger: quiet, CompleteLinger: -1})
		defer shutdown(t, never)
		if never.opts.CompleteLinger >= 0 {
			t.Fatalf("CompleteLinger = %v: a negative option must not take the store's", never.opts.CompleteLinger)
		}
	})
}
