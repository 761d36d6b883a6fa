package main

import (
	"strings"
	"testing"
	"time"
)

func TestStallsGroupsSlowAcceptsByWindow(t *testing.T) {
	start := time.Date(2026, 12, 7, 13, 0, 0, 20_000_000, time.UTC)
	s := newStalls(40*time.Millisecond, start)
	s.record(start.Add(2100*time.Millisecond), 90*time.Millisecond)
	s.record(start.Add(250*time.Millisecond), 41*time.Millisecond)
	s.record(start.Add(2150*time.Millisecond), 120*time.Millisecond)
	s.record(start.Add(230*time.Millisecond), 60*time.Millisecond)
	s.record(start.Add(5*time.Second), 40*time.Millisecond) // not over the threshold
	var b strings.Builder
	s.report(&b, "single-pg")
	want := "single-pg: stall at +0.2s (13:00:00.220 UTC): 2 accepts over 40ms, the slowest 60ms\n" +
		"single-pg: stall at +2.1s (13:00:02.120 UTC): 2 accepts over 40ms, the slowest 120ms\n"
	if b.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	newStalls(40*time.Millisecond, start).report(&b, "single")
	if b.String() != "single: no accept took over 40ms\n" {
		t.Errorf("report of a run without stalls: %q", b.String())
	}
	b.Reset()
	var off *stalls
	off.record(start, time.Second)
	off.report(&b, "single")
	newStalls(0, start).report(&b, "single")
	if b.String() != "" {
		t.Errorf("report with -stalls off: %q", b.String())
	}
}
