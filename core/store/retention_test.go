package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// fakePruner is a Store whose only working method is Prune: it holds a number of old events and hands them
// out batch by batch, recording each call.
type fakePruner struct {
	Store // nil: any other method panics, proving RunRetention calls only Prune

	mu      sync.Mutex
	left    int
	cutoffs []time.Time
	limits  []int
	fail    error
	calls   chan struct{}
}

func (f *fakePruner) Prune(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	f.mu.Lock()
	defer func() {
		f.mu.Unlock()
		select {
		case f.calls <- struct{}{}:
		default:
		}
	}()
	f.cutoffs, f.limits = append(f.cutoffs, cutoff), append(f.limits, limit)
	if f.fail != nil {
		return 0, f.fail
	}
	n := min(limit, f.left)
	f.left -= n
	return n, nil
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestRunRetentionZeroReturnsAtOnce(t *testing.T) {
	f := &fakePruner{left: 10}
	RunRetention(context.Background(), f, 0, RetentionOptions{Logger: quiet}) // returning at all is the test
	if len(f.limits) != 0 {
		t.Fatalf("retention 0 pruned: %v", f.limits)
	}
}

func TestRunRetentionBatchesUntilShort(t *testing.T) {
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	f := &fakePruner{left: 1234, calls: make(chan struct{}, 100)}
	var got []int
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetention(ctx, f, 24*time.Hour, RetentionOptions{Every: time.Hour, Batch: 500, Pause: time.Microsecond,
			Logger: quiet, Now: func() time.Time { return now }, OnPruned: func(n int) { got = append(got, n) }})
	}()
	// 500, 500, 234 (short: the round ends). The next round is an hour away.
	for range 3 {
		<-f.calls
	}
	cancel()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.limits) != 3 || f.left != 0 {
		t.Fatalf("%d Prune calls (%v), %d left; want 3 and 0", len(f.limits), f.limits, f.left)
	}
	for i, c := range f.cutoffs {
		if !c.Equal(now.Add(-24*time.Hour)) || f.limits[i] != 500 {
			t.Fatalf("call %d: cutoff %v limit %d", i, c, f.limits[i])
		}
	}
	if len(got) != 3 || got[0] != 500 || got[2] != 234 {
		t.Fatalf("OnPruned got %v", got)
	}
}

func TestRunRetentionRoundsAndErrors(t *testing.T) {
	f := &fakePruner{fail: errors.New("disk on fire"), calls: make(chan struct{}, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		RunRetention(ctx, f, time.Hour, RetentionOptions{Every: time.Millisecond, Logger: quiet})
	}()
	// A failing round ends; the next round tries again.
	for range 3 {
		<-f.calls
	}
	cancel()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limits[0] != 500 {
		t.Fatalf("default batch = %d, want 500", f.limits[0])
	}
}
