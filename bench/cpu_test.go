package main

import (
	"testing"
	"time"
)

// The machine's counters parse into a reading whose idle part is within the whole, and a share over a span
// is a percentage.
func TestIdleShare(t *testing.T) {
	m := readIdle()
	if m.all == 0 || m.idle > m.all {
		t.Fatalf("reading of /proc/stat: %+v", m)
	}
	// The counters tick every 10 ms of each CPU's time, idle or not.
	for deadline := time.Now().Add(10 * time.Second); readIdle().all <= m.all; {
		if time.Now().After(deadline) {
			t.Fatalf("the counters did not move in 10 s: %+v", m)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p := m.since(); p < 0 || p > 100 {
		t.Fatalf("idle share %v%%", p)
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
