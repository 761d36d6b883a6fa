package embedded

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// BenchmarkLifecycle runs what the store does for each event on the hot path: an append with its deliveries
// leased at birth, then their completions (delivered on the first attempt), from concurrent callers so commits
// are shared as under load. fanoutN completes each event's deliveries in one call; batchedN completes those of
// ten events in one call, as the dispatcher's completer does under load. cpu-µs/delivery is the process's CPU
// time (user+system) per delivery.
func BenchmarkLifecycle(b *testing.B) {
	for _, c := range []struct {
		name            string
		fanout, perCall int
	}{{"fanout1", 1, 1}, {"fanout10", 10, 1}, {"batched10", 10, 10}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			dests := make([]string, c.fanout)
			leased := make([]bool, c.fanout)
			for i := range dests {
				dests[i], leased[i] = fmt.Sprintf("dst_%02d", i), true
			}
			var seq atomic.Int64
			start, wrote := cpuTime(), writtenBytes()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var outs []store.Outcome
				for pb.Next() {
					id := fmt.Sprint("b", seq.Add(1))
					res, err := s.Append(ctx, []store.NewEvent{{Event: newEvent(id), Destinations: dests, Leased: leased}}, opts)
					if err != nil {
						b.Fatal(err)
					}
					for _, d := range res[0].Deliveries {
						outs = append(outs, store.Outcome{DeliveryID: d.ID, Status: store.Delivered, Attempt: store.Attempt{
							N: 1, At: time.Now(), Duration: time.Millisecond, StatusCode: 200}})
					}
					if len(outs) < c.fanout*c.perCall {
						continue
					}
					if err := s.Complete(ctx, outs); err != nil {
						b.Fatal(err)
					}
					outs = outs[:0]
				}
				if len(outs) > 0 {
					if err := s.Complete(ctx, outs); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-start)/float64(time.Microsecond)/float64(b.N*c.fanout), "cpu-µs/delivery")
			b.ReportMetric(float64(writtenBytes()-wrote)/float64(b.N*c.fanout), "written-B/delivery")
			commits, ops := s.Stats()
			b.ReportMetric(float64(ops)/float64(max(commits, 1)), "ops/commit")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writtenBytes is how many bytes the process has written (wchar of /proc/self/io); 0 where unknown.
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
