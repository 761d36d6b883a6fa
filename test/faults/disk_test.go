package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDiskFull: the store lives on a small tmpfs; a filler file takes the rest of it under load. Intake answers
// 503 with Retry-After (never 202 for an event it could not commit, never another error) and /readyz fails;
// once the filler is removed the same process is ready and acknowledges again; a kill -9 and restart after
// that shows every acknowledged event was on disk, and all are delivered.
func TestDiskFull(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs for the store (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() }) // after the node's cleanup kills sluice

	rc := newReceiver(t)
	rc.up(t)
	n := &node{t: t, dir: t.TempDir(), addr: freeAddr(t)}
	n.withConfig(baseConfig("", "", webhookDest("sink", rc)), filepath.Join(mnt, "data"))
	n.start()

	var mu sync.Mutex
	statuses := map[int]int{}
	retryAfter := true
	ld := newLoad(n.addr, "disk")
	ld.onAnswer = func(_ time.Time, status int, h http.Header) {
		mu.Lock()
		defer mu.Unlock()
		statuses[status]++
		if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
			retryAfter = false
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ld.run(ctx, 8, 0) }()
	waitFor(t, "deliveries before the disk fills", 30*time.Second, func() bool { d, _ := rc.counts(); return d >= 500 })

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	fullAt := time.Now()
	waitFor(t, "intake to answer 503 on the full disk", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return statuses[http.StatusServiceUnavailable] > 0
	})
	waitFor(t, "/readyz to fail on the full disk", 30*time.Second, func() bool { return !n.ready() })
	notReady := time.Since(fullAt)
	// The disk stays full a while under load (publishers keep retrying): still not ready at the end of it.
	time.Sleep(pick(2*time.Second, 30*time.Second)) // the fault's length, not a wait for a signal
	if n.ready() {
		t.Fatalf("/readyz passed with the store's disk still full")
	}
	ackedWhileFull := ld.nAcked.Load()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	// The same process resumes once space returns: ready again, and new events acknowledged.
	waitFor(t, "/readyz to pass after space returned", 60*time.Second, n.ready)
	resumed := time.Since(freed)
	waitFor(t, "new events acknowledged after space returned", 60*time.Second, func() bool { return ld.nAcked.Load() >= ackedWhileFull+500 })
	// And what was acknowledged, before, during and after, is on disk: it survives a crash.
	n.kill()
	n.start()
	from := ld.nAcked.Load()
	waitFor(t, "events acknowledged after the restart", 60*time.Second, func() bool { return ld.nAcked.Load() >= from+200 })
	cancel()
	<-done
	ids := ld.ids()
	missing := awaitAll(ids, rc.has, 2*time.Minute)
	d, total := rc.counts()
	mu.Lock()
	answers := fmt.Sprint(statuses)
	mu.Unlock()
	record(t, row{Case: "disk full (tmpfs), space back, kill -9", Acked: len(ids), Delivered: d, Lost: len(missing), Duplicates: total - d,
		Recovery: fmt.Sprintf("503 + not ready %s after full; ready %s after space returned", ms(notReady), ms(resumed))})
	t.Logf("intake answers by status: %s", answers)
	mu.Lock()
	defer mu.Unlock()
	for status, c := range statuses {
		switch status {
		case http.StatusAccepted, http.StatusServiceUnavailable, 0: // 0: no answer (killed, restarting)
		default:
			t.Errorf("intake answered %d to %d requests; a full disk must answer 503 (Retry-After)", status, c)
		}
	}
	if !retryAfter {
		t.Error("a 503 came without Retry-After")
	}
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged events never arrived, e.g. %s", len(missing), missing[0])
	}
}

// fill writes path until the filesystem has no space left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Large writes first, then small ones for what is left.
	for _, size := range []int{1 << 20, 4096} {
		chunk := make([]byte, size)
		for {
			_, err := f.Write(chunk)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}
