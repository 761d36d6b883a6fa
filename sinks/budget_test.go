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

// TestBudgetServesInOrder: once an acquirer waits, later ones queue behind it even when their bytes would fit,
// so a large attempt is not starved by small ones; waiters are served oldest first; a cancelled waiter at the
// head lets the ones behind it through.
func TestBudgetServesInOrder(t *testing.T) {
	b := NewBudget(10)
	held, err := b.Acquire(context.Background(), 8)
	if err != nil {
		t.Fatal(err)
	}
	bigCtx, cancelBig := context.WithCancel(context.Background())
	big := make(chan error, 1)
	go func() { _, err := b.Acquire(bigCtx, 10); big <- err }()
	waitUntil(t, func() bool { _, w := b.Used(); return w == 1 })
	// 2 bytes are free, but the big acquirer came first: a small one that cannot wait gets nothing.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := b.Acquire(done, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("a small acquirer went ahead of a waiting one: took %d, %v", n, err)
	}
	// Two small ones queue behind the big one: the first needs 2 bytes, the second 1.
	order := make(chan int, 2)
	for i, n := range []int64{2, 1} {
		go func() {
			if _, err := b.Acquire(context.Background(), n); err == nil {
				order <- i
			}
		}()
		waitUntil(t, func() bool { _, w := b.Used(); return w == 2+i })
	}
	select {
	case i := <-order:
		t.Fatalf("small acquirer %d went ahead of the big one", i)
	default:
	}
	// The big one gives up: the 2 free bytes go to the oldest small one, and the younger, though its byte
	// would have fit first, waits for the next release.
	cancelBig()
	if err := <-big; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled big acquirer: %v", err)
	}
	if i := <-order; i != 0 {
		t.Fatalf("served %d first, want 0", i)
	}
	if used, waiting := b.Used(); used != 10 || waiting != 1 {
		t.Fatalf("%d bytes held and %d waiting, want 10 and 1", used, waiting)
	}
	b.Release(2)
	if i := <-order; i != 1 {
		t.Fatalf("served %d second, want 1", i)
	}
	if used, waiting := b.Used(); used != 9 || waiting != 0 {
		t.Fatalf("%d bytes held and %d waiting, want 9 and 0", used, waiting)
	}
	b.Release(1)
	// A big one waits for the whole budget while a small one queues behind it: it is served first.
	go func() { _, err := b.Acquire(context.Background(), 10); big <- err }()
	waitUntil(t, func() bool { _, w := b.Used(); return w == 1 })
	order = make(chan int, 1)
	go func() {
		if _, err := b.Acquire(context.Background(), 1); err == nil {
			order <- 2
		}
	}()
	waitUntil(t, func() bool { _, w := b.Used(); return w == 2 })
	b.Release(held)
	if err := <-big; err != nil {
		t.Fatal(err)
	}
	select {
	case <-order:
		t.Fatal("a small acquirer was served while the big one holds the whole budget")
	default:
	}
	b.Release(10)
	if i := <-order; i != 2 {
		t.Fatalf("served %d", i)
	}
	b.Release(1)
	if used, waiting := b.Used(); used != 0 || waiting != 0 {
		t.Fatalf("at the end: %d bytes held, %d waiting", used, waiting)
	}
}
