package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// A receiver's headers are read up to 64 KiB; a larger answer fails the attempt instead of growing memory.
func TestResponseHeadersBounded(t *testing.T) {
	big := strings.Repeat("x", 80<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", big)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	_, err := sendOne(t, newSink(t, srv.URL, nil, sinks.Env{}), testEvent())
	if err == nil || !strings.Contains(err.Error(), "exceeded") {
		t.Fatalf("an 80 KiB header was accepted: %v", err)
	}
	small := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", big[:32<<10])
		w.WriteHeader(http.StatusOK)
	}))
	defer small.Close()
	if _, err := sendOne(t, newSink(t, small.URL, nil, sinks.Env{}), testEvent()); err != nil {
		t.Fatalf("a 32 KiB header was refused: %v", err)
	}
}

// Attempts past the in-flight byte budget wait for it, without reaching the receiver, and go on when an
// earlier attempt's answer has been read.
func TestInFlightBudget(t *testing.T) {
	var arrived atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	s := newSink(t, srv.URL, nil, sinks.Env{})
	body, err := s.body(&[]event.Event{testEvent()}[0])
	if err != nil {
		t.Fatal(err)
	}
	// Room for one attempt, not two.
	s.budget = sinks.NewBudget(int64(len(body)) + excerptBytes + 10)
	first := make(chan error, 1)
	go func() { _, err := sendOne(t, s, testEvent()); first <- err }()
	waitFor(t, func() bool { return arrived.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { second <- s.Send(ctx, []event.Event{testEvent()}) }()
	waitFor(t, func() bool { _, waiting := s.budget.Used(); return waiting == 1 })
	if n := arrived.Load(); n != 1 {
		t.Fatalf("%d requests reached the receiver with room for one", n)
	}
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled wait = %v, want context.Canceled (not a failed delivery)", err)
	}
	third := make(chan error, 1)
	go func() { _, err := sendOne(t, s, testEvent()); third <- err }()
	waitFor(t, func() bool { _, waiting := s.budget.Used(); return waiting == 1 })
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-third; err != nil || arrived.Load() != 2 {
		t.Fatalf("the waiting attempt after release: %v (arrived %d)", err, arrived.Load())
	}
	if used, _ := s.budget.Used(); used != 0 {
		t.Fatalf("%d bytes still held after every attempt ended", used)
	}
}
