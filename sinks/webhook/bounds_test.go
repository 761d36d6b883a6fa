package webhook

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

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
