package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// crashDirEnv, when set, makes TestCrashKeepsAcknowledgedAppends the child that appends until it is killed.
const crashDirEnv = "SLUICE_TEST_STORE_CRASH_DIR"

// TestCrashKeepsAcknowledgedAppends kills (SIGKILL) a process while it appends from several goroutines and
// completes every other event's delivery, and checks that every append it acknowledged is there when the store
// is opened again: a delivery whose completion returned is delivered, and every other is delivered or claimable
// once the leases it held are released. The child prints "ack <id>" only after Append returned, and "done
// <id>" only after Complete did. The deliveries are leased at birth, so most have no row until they complete.
func TestCrashKeepsAcknowledgedAppends(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsAcknowledgedAppends$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// However this test ends, the child does not outlive it (it also dies writing to the closed pipe).
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	const killAfter = 300
	var acked []string
	done := map[string]bool{}
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "done "); ok {
			done[id] = true
			continue
		}
		id, ok := strings.CutPrefix(sc.Text(), "ack ")
		if !ok {
			continue
		}
		acked = append(acked, id)
		if len(acked) == killAfter && !killed {
			// Kill mid-stream; the acks already written to the pipe are read below, they count too.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("the child ended on its own after %d acknowledged appends", len(acked))
	}

	if len(done) == 0 {
		t.Fatal("the child completed no delivery before the kill")
	}
	ctx := context.Background()
	s := open(t, dir)
	delivered := map[string]bool{}
	for _, id := range acked {
		rec, err := s.Event(ctx, id)
		if err != nil {
			t.Fatalf("acknowledged event %s lost in the crash: %v", id, err)
		}
		if len(rec.Deliveries) != 1 {
			t.Fatalf("acknowledged event %s has %d deliveries after the crash, want 1", id, len(rec.Deliveries))
		}
		delivered[id] = rec.Deliveries[0].Status == store.Delivered
		if done[id] && !delivered[id] {
			t.Fatalf("event %s: its completion returned before the crash, yet its delivery is %s", id, rec.Deliveries[0].Status)
		}
	}
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Claim(ctx, "d", time.Now(), time.Minute, 100000)
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[string]bool{}
	for _, j := range jobs {
		claimed[j.Event.ID] = true
	}
	for _, id := range acked {
		if !claimed[id] && !delivered[id] {
			t.Fatalf("acknowledged event %s is neither delivered nor claimable after the restart", id)
		}
		if claimed[id] && delivered[id] {
			t.Fatalf("event %s is delivered, yet claimable again", id)
		}
	}
	t.Logf("%d acknowledged appends survived the kill: %d delivered (%d acknowledged as such), %d claimable",
		len(acked), len(acked)-len(jobs), len(done), len(jobs))
}

// crashChild appends from four goroutines until the parent kills the process.
func crashChild(t *testing.T, dir string) {
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	say := func(what, id string) bool {
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Printf("%s %s\n", what, id)
		return err == nil
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("g%d-%d", g, i)
				res, err := s.Append(context.Background(), []store.NewEvent{{Event: newEvent(id), Destinations: []string{"d"}, Leased: []bool{true}}}, opts)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					return
				}
				if !say("ack", id) {
					return // the parent is gone
				}
				if i%2 == 1 {
					continue
				}
				if err := s.Complete(context.Background(), []store.Outcome{{DeliveryID: res[0].Deliveries[0].ID,
					Status: store.Delivered, Attempt: store.Attempt{N: 1, At: time.Now(), StatusCode: 200}}}); err != nil {
					fmt.Fprintln(os.Stderr, "complete:", err)
					return
				}
				if !say("done", id) {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Fatal("every appender stopped before the kill")
}
