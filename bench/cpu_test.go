package main

import (
	"encoding/json"
	"testing"
	"time"
)

// The machine's counters parse into a reading whose idle and steal parts are within the whole, and the
// shares over a span are percentages that together fit in it.
func TestIdleShare(t *testing.T) {
	m := readIdle()
	if m.all == 0 || m.idle > m.all || m.steal > m.all {
		t.Fatalf("reading of /proc/stat: %+v", m)
	}
	// The counters tick every 10 ms of each CPU's time, idle or not.
	for deadline := time.Now().Add(10 * time.Second); readIdle().all <= m.all; {
		if time.Now().After(deadline) {
			t.Fatalf("the counters did not move in 10 s: %+v", m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if idle, steal := m.since(); idle < 0 || steal < 0 || idle+steal > 100 {
		t.Fatalf("idle share %v%%, steal share %v%%", idle, steal)
	}
}

// The harness's CPU grows with its work, and per event is µs over the events.
func TestSelfCPU(t *testing.T) {
	c0 := selfCPU()
	// Spin until 30 ms of CPU are counted (however busy the machine), or fail after 10 s.
	for deadline := time.Now().Add(10 * time.Second); selfCPU()-c0 < 30*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("10 s of spinning counted as %v of CPU", selfCPU()-c0)
		}
	}
	if got := perEvent(3*time.Millisecond, 1000); got != 3 {
		t.Fatalf("3 ms over 1000 events: %v µs each, want 3", got)
	}
	if got := perEvent(time.Second, 0); got != 0 {
		t.Fatalf("no events: %v", got)
	}
}

// The padding grows an event's data to about the size asked for, and stays JSON.
func TestPadding(t *testing.T) {
	if padding(0) != "" || padding(100) != "" {
		t.Fatal("padding for small sizes")
	}
	for _, n := range []int{1024, 4096} {
		data := `{"sent_ns":1,"case":{"id":"c-1","status":"approved"}` + padding(n) + `}`
		if !json.Valid([]byte(data)) {
			t.Fatalf("padded data is not JSON: %s", data)
		}
		if len(data) < n-100 || len(data) > n+10 {
			t.Fatalf("data of %d bytes for %d asked", len(data), n)
		}
	}
}
