package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The reload and replay end-to-end tests run the real binary (see e2e_test.go) on configs they rewrite while
// it runs, and watch what real webhook receivers get.

// newReloadCluster is a cluster without a config yet: each test writes its own with writeConfig, then starts.
func newReloadCluster(t *testing.T) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), addr: freeAddr(t)}
	c.cfg = filepath.Join(c.dir, "sluice.yaml")
	var err error
	// The log sits beside the config on purpose: the watcher must ignore the writes to its neighbour.
	if c.log, err = os.Create(filepath.Join(c.dir, "sluice.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(c.log.Name())
			t.Logf("sluice log (last 8 KiB):\n%s", tail(b, 8192))
		}
	})
	return c
}

// reloadConfig is a whole config for c with the given destinations (YAML list items, see webhookDest).
func (c *cluster) reloadConfig(dests ...string) string {
	return fmt.Sprintf(`server:
  listen: %s
  shutdown_timeout: 10s
auth:
  keys: [{name: admin, key: e2e-key, role: admin}]
store:
  path: %s
delivery:
  timeout: 5s
  retry:
    schedule: [100ms, 200ms, 500ms, 1s]
    jitter: 0.1
  network:
    allow_cidrs: [127.0.0.0/8]
telemetry:
  log: {level: warn}
destinations:
%s`, c.addr, filepath.Join(c.dir, "data"), strings.Join(dests, ""))
}

// webhookDest is a destination item for reloadConfig delivering to rc; extra lines are indented by four.
func webhookDest(name string, rc *receiver, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    type: webhook\n    topics: [\"case.*\"]\n", name)
	for _, e := range extra {
		fmt.Fprintf(&b, "    %s\n", e)
	}
	fmt.Fprintf(&b, "    config:\n      url: http://%s/hooks\n      secrets: [\"%s\"]\n", rc.addr, e2eSecret)
	return b.String()
}

// writeConfig replaces the config file's content in place (the way `cat > sluice.yaml` does).
func (c *cluster) writeConfig(content string) {
	c.t.Helper()
	if err := os.WriteFile(c.cfg, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// api sends a request with the admin key and decodes the JSON answer into out (when not nil).
func (c *cluster) api(method, path string, out any) int {
	c.t.Helper()
	req, _ := http.NewRequest(method, "http://"+c.addr+path, nil)
	req.Header.Set("Authorization", "Bearer e2e-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			c.t.Fatalf("%s %s: decode the answer: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// destinationNames lists the running gateway's destinations, sorted.
func (c *cluster) destinationNames() []string {
	c.t.Helper()
	var out struct {
		Data []struct {
			Name string `json:"name"`
		} `json:"data"`
	}
	if code := c.api("GET", "/v1/destinations", &out); code != http.StatusOK {
		c.t.Fatalf("GET /v1/destinations: %d", code)
	}
	var names []string
	for _, d := range out.Data {
		names = append(names, d.Name)
	}
	slices.Sort(names)
	return names
}

// waitDestinations waits until the gateway runs exactly want (sorted): the sign a reload was applied.
func (c *cluster) waitDestinations(what string, want ...string) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%s: destinations %v", what, want), func() bool {
		return slices.Equal(c.destinationNames(), want)
	})
}

// deliveryOf returns the event's delivery to destination (nil when it has none).
func (c *cluster) deliveryOf(eventID, destination string) map[string]any {
	c.t.Helper()
	ds, _ := c.getEvent(eventID)["deliveries"].([]any)
	for _, d := range ds {
		dm, _ := d.(map[string]any)
		if dest, _ := dm["destination"].(map[string]any); dest != nil && dest["name"] == destination {
			return dm
		}
	}
	return nil
}

// publishIDs publishes n events with ids prefix-00000… and returns the ids.
func (c *cluster) publishIDs(prefix string, n int) []string {
	c.t.Helper()
	var acked sync.Map
	var count atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	publishEvents(ctx, c.addr, prefix, nil, n, 4, &acked, &count)
	if count.Load() != int64(n) {
		c.t.Fatalf("published %d of %d %s events", count.Load(), n, prefix)
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return ids
}

// waitReceived waits until rc accepted every id at least times times.
func waitReceived(t *testing.T, rc *receiver, ids []string, times int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("receiver %s to accept %d events %d time(s)", rc.name, len(ids), times), func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, id := range ids {
			if rc.got[id] < times {
				return false
			}
		}
		return true
	})
}

// triedAny reports whether rc saw a request for any of ids, accepted or not.
func (rc *receiver) triedAny(ids []string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range ids {
		if rc.tries[id] > 0 {
			return true
		}
	}
	return false
}

// waitLog waits until the gateway's log matches re and returns the match.
func (c *cluster) waitLog(what string, re *regexp.Regexp) string {
	c.t.Helper()
	var m string
	waitFor(c.t, what, func() bool {
		b, _ := os.ReadFile(c.log.Name())
		m = re.FindString(string(b))
		return m != ""
	})
	return m
}

// TestReloadByFileWrite: rewriting the config adds a destination (which gets what is published after) and
// removes one (which gets nothing more, and whose pending deliveries end skipped).
func TestReloadByFileWrite(t *testing.T) {
	c := newReloadCluster(t)
	keep, doomed, added := newReceiver(t, "keep", 0), newReceiver(t, "doomed", 1<<30), newReceiver(t, "added", 0)
	keep.start(t)
	doomed.start(t)
	added.start(t)
	// doomed answers 503 forever; with an hour before the retry its deliveries sit pending when it goes. No
	// breaker, so every event gets its first attempt.
	doomedDest := webhookDest("doomed", doomed, "retry: {schedule: [1h]}", "breaker: {failures: 0}")
	c.writeConfig(c.reloadConfig(webhookDest("keep", keep), doomedDest))
	started := time.Now()
	c.start()

	pre := c.publishIDs("pre", 5)
	waitReceived(t, keep, pre, 1)
	for _, id := range pre {
		waitFor(t, "doomed's first attempt of "+id+" recorded, the delivery pending", func() bool {
			d := c.deliveryOf(id, "doomed")
			at, _ := d["attempts"].([]any)
			return d != nil && d["status"] == "pending" && len(at) == 1
		})
	}
	doomedRequests := func() int { doomed.mu.Lock(); defer doomed.mu.Unlock(); return doomed.requests }
	before := doomedRequests()

	c.writeConfig(c.reloadConfig(webhookDest("keep", keep), webhookDest("added", added)))
	c.waitDestinations("after the reload", "added", "keep")

	// The removed destination's pending deliveries are skipped, not left to retry into nothing.
	for _, id := range pre {
		waitFor(t, "doomed's delivery of "+id+" skipped", func() bool {
			return c.deliveryOf(id, "doomed")["status"] == "skipped"
		})
	}
	var skipped struct {
		Data []struct {
			EventID string `json:"event_id"`
			Status  string `json:"status"`
		} `json:"data"`
	}
	if code := c.api("GET", "/v1/deliveries?destination=doomed&status=skipped", &skipped); code != http.StatusOK {
		t.Fatalf("GET /v1/deliveries?destination=doomed&status=skipped: %d", code)
	}
	var skippedIDs []string
	for _, d := range skipped.Data {
		skippedIDs = append(skippedIDs, d.EventID)
	}
	slices.Sort(skippedIDs)
	if !slices.Equal(skippedIDs, pre) {
		t.Errorf("skipped deliveries of doomed are of events %v, want %v", skippedIDs, pre)
	}

	post := c.publishIDs("post", 5)
	waitReceived(t, keep, post, 1)
	waitReceived(t, added, post, 1)
	for _, id := range post {
		if d := c.deliveryOf(id, "doomed"); d != nil {
			t.Errorf("event %s published after doomed was removed has a delivery to it: %v", id, d)
		}
	}
	if doomed.triedAny(post) {
		t.Error("the removed destination received events published after the reload")
	}
	if n := doomedRequests(); n != before {
		t.Errorf("the removed destination got %d more requests after the reload", n-before)
	}
	if added.triedAny(pre) {
		t.Error("the added destination received events published before it existed")
	}

	// /metrics (no key) counts what happened, and a removed destination's series are gone. A receiver sees an
	// event before Sluice has recorded the outcome of sending it, so the counts are awaited, not read once.
	want := []string{
		`sluice_events_accepted_total 10`,
		`sluice_deliveries_total{destination="keep",outcome="delivered"} 10`,
		`sluice_deliveries_total{destination="added",outcome="delivered"} 5`,
		`sluice_destination_enabled{destination="added"} 1`,
		`sluice_pending_deliveries{destination="keep"} 0`,
	}
	var metrics string
	var missing []string
	last := ""
	waitFor(t, "/metrics to count every recorded delivery", func() bool {
		resp, err := http.Get("http://" + c.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics, missing = string(b), nil
		for _, w := range want {
			if !strings.Contains(metrics, w+"\n") {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 && fmt.Sprint(missing) != last {
			last = fmt.Sprint(missing)
			t.Logf("/metrics lacks %s so far", last)
		}
		return len(missing) == 0
	})
	if strings.Contains(metrics, `destination="doomed"`) {
		t.Error("/metrics still shows series of the removed destination")
	}
	// The store's group commit: the appends and outcomes above made commits, each carrying one operation or more,
	// and took the writer some time (each an fsync), never more than the process has run.
	var commits, ops, busy float64
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, "sluice_store_commits_total "); ok {
			commits, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(l, "sluice_store_operations_total "); ok {
			ops, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(l, "sluice_store_commit_seconds_total "); ok {
			busy, _ = strconv.ParseFloat(v, 64)
		}
	}
	if commits < 1 || ops < commits {
		t.Errorf("/metrics: sluice_store_commits_total %v, sluice_store_operations_total %v; want commits, and at least as many operations", commits, ops)
	}
	if ran := time.Since(started).Seconds(); busy <= 0 || busy > ran {
		t.Errorf("/metrics: sluice_store_commit_seconds_total %v; want more than 0 and at most the %.1f s the node has run", busy, ran)
	}
}

// TestReloadRefusesBadConfig: a config with an unknown key, then one with an invalid filter, are refused
// with their FILE:LINE:COL in the log; the old destinations keep delivering; a good config still applies.
func TestReloadRefusesBadConfig(t *testing.T) {
	c := newReloadCluster(t)
	keep, added := newReceiver(t, "keep", 0), newReceiver(t, "added", 0)
	keep.start(t)
	added.start(t)
	c.writeConfig(c.reloadConfig(webhookDest("keep", keep)))
	c.start()

	// Both bad configs would also add a destination: it must not appear.
	unknownKey := c.reloadConfig(webhookDest("keep", keep), webhookDest("added", added, "bogus: true"))
	lines := strings.Split(unknownKey, "\n")
	line := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "bogus:") }) + 1
	col := strings.Index(lines[line-1], "bogus") + 1
	c.writeConfig(unknownKey)
	at := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("%s:%d:%d: destinations[1].bogus: unknown key", c.cfg, line, col)))
	t.Logf("refused: %s", c.waitLog("the unknown key refused with its position", at))
	if got := c.destinationNames(); !slices.Equal(got, []string{"keep"}) {
		t.Fatalf("destinations after a refused reload: %v, want [keep]", got)
	}
	first := c.publishIDs("after-unknown-key", 3)
	waitReceived(t, keep, first, 1)

	c.writeConfig(c.reloadConfig(webhookDest("keep", keep),
		webhookDest("added", added, "filter: {data: {case: {status: {$nope: approved}}}}")))
	at = regexp.MustCompile(regexp.QuoteMeta(c.cfg) + `:\d+:\d+: destinations\[1\]\.filter[^\n]*\$nope`)
	t.Logf("refused: %s", c.waitLog("the invalid filter refused with its position", at))
	if got := c.destinationNames(); !slices.Equal(got, []string{"keep"}) {
		t.Fatalf("destinations after a refused reload: %v, want [keep]", got)
	}
	second := c.publishIDs("after-bad-filter", 3)
	waitReceived(t, keep, second, 1)
	if added.triedAny(first) || added.triedAny(second) {
		t.Error("a destination from a refused config received events")
	}

	// Refusals do not stop the watcher: the fixed config applies.
	c.writeConfig(c.reloadConfig(webhookDest("keep", keep), webhookDest("added", added)))
	c.waitDestinations("after fixing the config", "added", "keep")
	third := c.publishIDs("after-fix", 3)
	waitReceived(t, keep, third, 1)
	waitReceived(t, added, third, 1)
}

// TestReloadByRenameAndSIGHUP: a config replaced by a rename is reloaded, and so is one changed behind the
// watcher's back when SIGHUP asks.
func TestReloadByRenameAndSIGHUP(t *testing.T) {
	c := newReloadCluster(t)
	keep, second, third := newReceiver(t, "keep", 0), newReceiver(t, "second", 0), newReceiver(t, "third", 0)
	keep.start(t)
	second.start(t)
	third.start(t)
	c.writeConfig(c.reloadConfig(webhookDest("keep", keep)))
	c.start()

	// Rename-replace, as editors and `mv` do: the file's inode changes.
	tmp := c.cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(c.reloadConfig(webhookDest("keep", keep), webhookDest("second", second))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.cfg); err != nil {
		t.Fatal(err)
	}
	c.waitDestinations("after the rename", "keep", "second")
	ids := c.publishIDs("renamed", 3)
	waitReceived(t, keep, ids, 1)
	waitReceived(t, second, ids, 1)

	// SIGHUP after a write. The write goes through a hard link in another directory: the same file, but
	// (on Linux) no event reaches the watcher of the config's directory, so the reload is SIGHUP's doing.
	// Were the write seen anyway, the test would still hold.
	otherDir := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Mkdir(otherDir, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(otherDir, "sluice.yaml")
	if err := os.Link(c.cfg, link); err != nil {
		t.Skipf("cannot hard-link the config (%v); SIGHUP is covered by the unit tests", err)
	}
	f, err := os.OpenFile(link, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(c.reloadConfig(webhookDest("keep", keep), webhookDest("third", third))); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c.waitDestinations("after SIGHUP", "keep", "third")
	ids = c.publishIDs("hup", 3)
	waitReceived(t, keep, ids, 1)
	waitReceived(t, third, ids, 1)
	if second.triedAny(ids) {
		t.Error("the destination SIGHUP's reload removed still received events")
	}

	// SIGHUP reloads; it does not stop the gateway. SIGTERM still drains and exits 0.
	if err := c.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("sluice did not exit cleanly on SIGTERM after reloads: %v", err)
	}
}

// TestReplayThroughTheGateway runs `sluice replay` against the running gateway: delivered events go out again.
func TestReplayThroughTheGateway(t *testing.T) {
	c := newReloadCluster(t)
	keep, other := newReceiver(t, "keep", 0), newReceiver(t, "other", 0)
	keep.start(t)
	other.start(t)
	c.writeConfig(c.reloadConfig(webhookDest("keep", keep), webhookDest("other", other)))
	c.start()
	ids := c.publishIDs("replayed", 4)
	waitReceived(t, keep, ids, 1)
	waitReceived(t, other, ids, 1)
	for _, id := range ids {
		waitFor(t, "delivery of "+id+" recorded as delivered", func() bool {
			return c.deliveryOf(id, "keep")["status"] == "delivered"
		})
	}

	replay := func(args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(sluiceBinary(t), append([]string{"replay", "--server", "http://" + c.addr, "--key", "e2e-key"}, args...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}

	// Nothing failed, so a replay of failed deliveries requeues none.
	if code, out, errOut := replay("--destination", "keep", "--status", "failed"); code != 0 || out != "requeued 0 deliveries of keep\n" {
		t.Fatalf("replay --status failed: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut := replay("--destination", "keep", "--since", "1h")
	if code != 0 || out != fmt.Sprintf("requeued %d deliveries of keep\n", len(ids)) {
		t.Fatalf("replay: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	waitReceived(t, keep, ids, 2)
	_, total, bad := other.count()
	if total != len(ids) || bad != 0 {
		t.Errorf("the other destination got %d deliveries (%d with bad signatures), want %d: replay is per destination", total, bad, len(ids))
	}

	// An API error: the server's message, exit 1.
	code, out, errOut = replay("--destination", "nope")
	if code != 1 || out != "" || !strings.Contains(errOut, "no destination") {
		t.Fatalf("replay of an unknown destination: exit %d, stdout %q, stderr %q; want exit 1 and the server's message", code, out, errOut)
	}
	// A usage error: exit 2, naming the flag, nothing sent.
	if code, _, errOut := replay("--since", "2h"); code != 2 || !strings.Contains(errOut, "--destination is required") {
		t.Fatalf("replay without --destination: exit %d, stderr %q", code, errOut)
	}
}

// TestReloadKeysAndTopics: a reload swaps the API keys (a removed key answers 401 at once, a new one works)
// and the topic catalog.
func TestReloadKeysAndTopics(t *testing.T) {
	c := newReloadCluster(t)
	rc := newReceiver(t, "rc", 0)
	rc.start(t)
	base := c.reloadConfig(webhookDest("rc", rc))
	withKeys := func(reader, topic string) string {
		s := strings.Replace(base, "keys: [{name: admin, key: e2e-key, role: admin}]",
			fmt.Sprintf("keys: [{name: admin, key: e2e-key, role: admin}, {name: reader, key: %s, role: reader}]", reader), 1)
		return s + fmt.Sprintf("topics:\n  - {name: %s, description: reloaded, example: {case: {id: c-1}}}\n", topic)
	}
	status := func(key, path string) int {
		req, _ := http.NewRequest("GET", "http://"+c.addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	topics := func() string {
		var out struct {
			Data []struct {
				Name string `json:"name"`
			} `json:"data"`
		}
		c.api("GET", "/v1/topics", &out)
		var names []string
		for _, d := range out.Data {
			names = append(names, d.Name)
		}
		return strings.Join(names, ",")
	}
	c.writeConfig(withKeys("old-reader-key", "case.opened"))
	c.start()
	if got := status("old-reader-key", "/v1/destinations"); got != http.StatusOK {
		t.Fatalf("old key before the reload: %d", got)
	}
	c.writeConfig(withKeys("new-reader-key", "case.closed"))
	waitFor(t, "the new key to work", func() bool { return status("new-reader-key", "/v1/destinations") == http.StatusOK })
	if got := status("old-reader-key", "/v1/destinations"); got != http.StatusUnauthorized {
		t.Fatalf("removed key after the reload: %d, want 401", got)
	}
	if got := topics(); got != "case.closed" {
		t.Fatalf("topic catalog after the reload: %q", got)
	}
}
