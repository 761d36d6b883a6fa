package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// privatePG is a PostgreSQL cluster of one test's own, so the test can stop and restart it without touching
// the machine's shared server that other tests use.
type privatePG struct {
	t        *testing.T
	bin, dir string
	port     string
}

// startPrivatePG initdbs and starts a cluster in a temp dir on a free port, run as the postgres user; it is
// stopped and removed when the test ends. The test is skipped, saying why, where that cannot be done.
func startPrivatePG(t *testing.T) *privatePG {
	t.Helper()
	if os.Getenv("SLUICE_TEST_PG_DSN") == "" {
		t.Skip("SLUICE_TEST_PG_DSN is not set (source .ci/services/postgres.sh to run the PostgreSQL tests)")
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Skip("no /usr/lib/postgresql/*/bin/initdb: a private cluster (for restarting PostgreSQL mid-load) needs Debian's postgresql")
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("a private cluster runs as the postgres user, which needs root and that user")
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	dir, err := os.MkdirTemp("", "sluice-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	pg := &privatePG{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: dir, port: strings.TrimPrefix(freeAddr(t), "127.0.0.1:")}
	t.Cleanup(func() {
		_ = pg.ctl("stop", "-m", "immediate")
		os.RemoveAll(dir)
	})
	if out, err := pg.run("initdb", "-D", pg.data(), "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	pg.start()
	return pg
}

func (pg *privatePG) data() string { return filepath.Join(pg.dir, "data") }

func (pg *privatePG) run(bin string, args ...string) ([]byte, error) {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(pg.bin, bin)}, args...)...)
	return cmd.CombinedOutput()
}

func (pg *privatePG) ctl(args ...string) error {
	out, err := pg.run("pg_ctl", append([]string{"-D", pg.data(), "-w", "-l", filepath.Join(pg.dir, "log")}, args...)...)
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %v\n%s", args[0], err, out)
	}
	return nil
}

func (pg *privatePG) start() {
	pg.t.Helper()
	opts := fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c fsync=off", pg.port, pg.dir)
	if err := pg.ctl("start", "-o", opts); err != nil {
		pg.t.Fatal(err)
	}
}

func (pg *privatePG) stop() {
	pg.t.Helper()
	if err := pg.ctl("stop", "-m", "fast"); err != nil {
		pg.t.Fatal(err)
	}
}

func (pg *privatePG) dsn() string {
	return "postgres://postgres@127.0.0.1:" + pg.port + "/postgres?sslmode=disable"
}

// TestPostgresRestartMidLoad: two nodes on a private PostgreSQL; it stops mid-load (both nodes' /readyz fail and
// publishers get 503s) and comes back; every acknowledged event is delivered.
func TestPostgresRestartMidLoad(t *testing.T) {
	pg := startPrivatePG(t)
	rc := newReceiver(t, "receiver", 0)
	rc.start(t)
	nodes := startNodesOn(t, pg.dsn(), 2, pgWebhookDest("receiver", rc, ""))
	var acked sync.Map
	var n atomic.Int64
	const total = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishSpread(context.Background(), nodes, "rs", total, 16, &acked, &n)
	}()
	waitFor(t, "1000 acknowledged events", func() bool { return n.Load() >= 1000 })
	pg.stop()
	t.Logf("stopped PostgreSQL after %d acknowledged events", n.Load())
	for _, nd := range nodes {
		waitFor(t, nd.name+"'s /readyz to fail", func() bool {
			resp, err := http.Get("http://" + nd.addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusServiceUnavailable
		})
	}
	downAt := n.Load()
	// While it is down an event is refused, never acknowledged without a commit.
	req, _ := http.NewRequest("POST", "http://"+nodes[0].addr+"/v1/events",
		strings.NewReader(`{"id": "while-down", "topic": "case.status_updated", "data": {}}`))
	req.Header.Set("Authorization", "Bearer e2e-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("publish while PostgreSQL is down: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	t.Logf("%d events were acknowledged between both nodes failing /readyz and the restart", n.Load()-downAt)
	pg.start()
	<-done
	if n.Load() != total {
		t.Fatalf("acknowledged %d of %d", n.Load(), total)
	}
	var ids []string
	acked.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
	for _, id := range ids {
		waitFor(t, "acknowledged event "+id, func() bool { return rc.has(id) })
	}
	d, all, bad := rc.count()
	t.Logf("receiver: %d distinct events, %d deliveries (%d duplicates), %d bad signatures", d, all, all-d, bad)
}
