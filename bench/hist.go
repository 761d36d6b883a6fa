package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a fixed-size, lock-free latency histogram in the manner of HDR: values in microseconds, exact below
// 128 µs and with 128 sub-buckets per power of two above (relative error under 0.8%). Its memory does not
// depend on how long a run lasts or how many samples it records, so a 60 s run at full rate costs the harness
// the same ~30 KB per histogram as a 1 s run.
type hist struct {
	n       atomic.Int64
	buckets [histBuckets]atomic.Int64
}

const (
	histSub     = 128                        // sub-buckets per power of two
	histMaxExp  = 29                         // 128 µs · 2^29 ≈ 19 h: anything longer lands in the top bucket
	histBuckets = histSub * (histMaxExp + 1) // 3,840
)

func histIndex(us int64) int {
	if us < histSub {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 8 // us ≥ 128 has at least 8 bits; us>>e is in [128, 256)
	if e >= histMaxExp {
		return histBuckets - 1
	}
	return histSub + e*histSub + int(us>>e) - histSub
}

// histUpper is the largest value (µs) that falls into bucket i: percentiles are reported conservatively.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := (i - histSub) / histSub
	m := int64((i-histSub)%histSub + histSub)
	return (m+1)<<e - 1
}

func (h *hist) record(d time.Duration) {
	h.buckets[histIndex(d.Microseconds())].Add(1)
	h.n.Add(1)
}

// merge adds o's counts to h.
func (h *hist) merge(o *hist) {
	for i := range o.buckets {
		if c := o.buckets[i].Load(); c > 0 {
			h.buckets[i].Add(c)
			h.n.Add(c)
		}
	}
}

// percentile returns the p-quantile in milliseconds (0 with no samples).
func (h *hist) percentile(p float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := min(n-1, int64(float64(n)*p)) // the same rank the sorted-slice version used
	var cum int64
	for i := range h.buckets {
		cum += h.buckets[i].Load()
		if cum > rank {
			return float64(histUpper(i)) / 1000
		}
	}
	return float64(histUpper(histBuckets-1)) / 1000
}
