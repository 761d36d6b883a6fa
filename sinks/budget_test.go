package sinks

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestBudgetNeverExceedsItsLimit: many acquirers of assorted sizes, each holding its bytes a while, never hold
// more than the limit together (by the budget's own high-water mark), and every byte comes back.
func TestBudgetNeverExceedsItsLimit(t *testing.T) {
	b := NewBudget(1000)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				n, err := b.Acquire(context.Background(), int64(1+(g*131+i*17)%400))
				if err != nil {
					t.Error(err)
					return
				}
				if used, _ := b.Used(); used > b.Limit() {
					t.Errorf("%d bytes held with a limit of %d", used, b.Limit())
				}
				b.Release(n)
			}
		}()
	}
	wg.Wait()
	if p := b.Peak(); p > b.Limit() || p == 0 {
		t.Fatalf("peak %d with a limit of %d", p, b.Limit())
	}
	if used, waiting := b.Used(); used != 0 || waiting != 0 {
		t.Fatalf("after every release: %d bytes held, %d waiting", used, waiting)
	}
}

// TestBudgetWaitsThenGoesOn: an acquirer past the limit waits until a release makes room; a cancelled wait is
// the context's error and takes nothing; a request larger than the whole budget takes all of it, alone.
func TestBudgetWaitsThenGoesOn(t *testing.T) {
	b := NewBudget(100)
	first, err := b.Acquire(context.Background(), 80)
	if err != nil || first != 80 {
		t.Fatal(first, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { _, err := b.Acquire(ctx, 30); cancelled <- err }()
	got := make(chan int64, 1)
	go func() { n, _ := b.Acquire(context.Background(), 1000); got <- n }()
	waitUntil(t, func() bool { _, w := b.Used(); return w == 2 })
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled wait: %v", err)
	}
	select {
	case n := <-got:
		t.Fatalf("took %d bytes while 80 of 100 were held", n)
	default:
	}
	b.Release(first)
	if n := <-got; n != 100 {
		t.Fatalf("an oversized request took %d, want the whole budget (100)", n)
	}
	if used, _ := b.Used(); used != 100 {
		t.Fatalf("%d bytes held, want 100", used)
	}
	b.Release(100)
	if p := b.Peak(); p != 100 {
		t.Fatalf("peak %d, want 100", p)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(time.Millisecond)
	}
}
