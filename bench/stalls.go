package main

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// stallWindow is the span stalls groups slow accepts by, in scheduled send time.
const stallWindow = 100 * time.Millisecond

// stalls collects, for -stalls, the windows of scheduled send time (counted from start) in which an accept took
// longer than above:
// where a run's accept tail comes from (a node's first second, a vacuum, a checkpoint), to be read beside the
// server's own logs. In a rate-capped run a stall shows in every window it delayed, since latency counts from
// the scheduled send.
type stalls struct {
	above time.Duration
	start time.Time
	mu    sync.Mutex
	win   map[int64]stall // by the window's number, from start
}

type stall struct {
	n     int
	worst time.Duration
}

func newStalls(above time.Duration, start time.Time) *stalls {
	return &stalls{above: above, start: start, win: map[int64]stall{}}
}

// record notes an accept sent (or scheduled) at sent that took took. A nil stalls, or a threshold of 0, keeps
// nothing.
func (s *stalls) record(sent time.Time, took time.Duration) {
	if s == nil || s.above <= 0 || took <= s.above {
		return
	}
	k := int64(max(sent.Sub(s.start), 0) / stallWindow)
	s.mu.Lock()
	w := s.win[k]
	w.n++
	w.worst = max(w.worst, took)
	s.win[k] = w
	s.mu.Unlock()
}

// report writes a line per window, in time order, with its offset from start and its UTC clock time.
func (s *stalls) report(w io.Writer, name string) {
	if s == nil || s.above <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.win) == 0 {
		fmt.Fprintf(w, "%s: no accept took over %v\n", name, s.above)
		return
	}
	keys := make([]int64, 0, len(s.win))
	for k := range s.win {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		off := time.Duration(k) * stallWindow
		st := s.win[k]
		fmt.Fprintf(w, "%s: stall at +%.1fs (%s UTC): %d accepts over %v, the slowest %v\n", name,
			off.Seconds(), s.start.Add(off).UTC().Format("15:04:05.000"), st.n, s.above, st.worst.Round(time.Millisecond))
	}
}
