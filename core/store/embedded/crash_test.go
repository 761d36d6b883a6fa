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
// checks that every append it acknowledged is there when the store is opened again, and claimable once the
// leases it held are released. The child prints "ack <id>" only after Append returned.
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
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
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

	ctx := context.Background()
	s := open(t, dir)
	for _, id := range acked {
		if _, err := s.Event(ctx, id); err != nil {
			t.Fatalf("acknowledged event %s lost in the crash: %v", id, err)
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
		if !claimed[id] {
			t.Fatalf("acknowledged event %s is not claimable after the restart", id)
		}
	}
	t.Logf("%d acknowledged appends (%d events stored) survived the kill", len(acked), len(jobs))
}

// crashChild appends from four goroutines until the parent kills the process.
func crashChild(t *testing.T, dir string) {
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("g%d-%d", g, i)
				_, err := s.Append(context.Background(), []store.NewEvent{{Event: newEvent(id), Destinations: []string{"d"}, Leased: []bool{true}}}, opts)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					return
				}
				mu.Lock()
				_, err = fmt.Printf("ack %s\n", id)
				mu.Unlock()
				if err != nil {
					return // the parent is gone
				}
			}
		}()
	}
	wg.Wait()
	t.Fatal("every appender stopped before the kill")
}
