package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSigtermUnderLoad: SIGTERM while publishers post and a slow receiver holds attempts in flight. Sluice
// exits 0; once intake has refused an event for the shutdown (503) no request sent after that is acknowledged; and a restart delivers the rest. How many requests sent after /readyz fell were still
// acknowledged (durably: serve stops AMQP consumers before it closes intake) is reported.
func TestSigtermUnderLoad(t *testing.T) {
	rc := newReceiver(t)
	rc.delay = 20 * time.Millisecond // attempts are in flight when the signal comes
	rc.up(t)
	n := newNode(t, baseConfig("", "", webhookDest("sink", rc)))
	n.start()
	ld := newLoad(n.addr, "term")
	var mu sync.Mutex
	var termAt, notReadyAt, refusedAt time.Time
	var refusal int
	var afterNotReady, afterRefused atomic.Int64
	ld.onAnswer = func(sent time.Time, status int, _ http.Header) {
		mu.Lock()
		defer mu.Unlock()
		if termAt.IsZero() {
			return
		}
		switch {
		case status == http.StatusAccepted:
			if !notReadyAt.IsZero() && sent.After(notReadyAt) {
				afterNotReady.Add(1)
			}
			if !refusedAt.IsZero() && sent.After(refusedAt) {
				afterRefused.Add(1)
			}
		case status == http.StatusServiceUnavailable && refusedAt.IsZero() && sent.After(termAt):
			refusedAt, refusal = time.Now(), status
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ld.run(ctx, 16, 0) }()
	waitFor(t, "load before SIGTERM", 30*time.Second, func() bool { d, _ := rc.counts(); return d >= 300 })
	exited := make(chan error, 1)
	mu.Lock()
	termAt = time.Now()
	mu.Unlock()
	go func() { exited <- n.term() }()
	// Watch readiness fall: requests sent after that moment must not be acknowledged.
	for {
		if !n.ready() {
			mu.Lock()
			notReadyAt = time.Now()
			mu.Unlock()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := <-exited
	ackedAtExit := ld.nAcked.Load()
	deliveredAtExit, _ := rc.counts()
	if err != nil {
		t.Fatalf("sluice did not exit cleanly on SIGTERM: %v", err)
	}
	n.start()
	cancel()
	<-done
	ids := ld.ids()
	missing := awaitAll(ids, rc.has, 2*time.Minute)
	d, total := rc.counts()
	record(t, row{Case: "SIGTERM under load, restart", Acked: len(ids), Delivered: d, Lost: len(missing), Duplicates: total - d,
		Recovery: fmt.Sprintf("exit 0; %d of %d acknowledged delivered before exit, the rest after restart; %d acked after /readyz fell, 0 after the first refusal",
			deliveredAtExit, ackedAtExit, afterNotReady.Load())})
	if n := afterRefused.Load(); n > 0 {
		t.Fatalf("%d requests sent after intake refused one for the shutdown (status %d, %v after SIGTERM; not ready %v after) were acknowledged",
			n, refusal, refusedAt.Sub(termAt), notReadyAt.Sub(termAt))
	}
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged events never arrived, e.g. %s", len(missing), missing[0])
	}
	// Draining lets attempts in flight finish and records them: nothing is sent twice across a clean stop.
	if total-d > 16 {
		t.Fatalf("%d duplicates across a clean stop; at most the 16 attempts in flight may repeat", total-d)
	}
}

// TestDueTimesAcrossRestart: after a restart, a delivery whose retry fell due while sluice was down is attempted
// at once, and one whose retry is still in the future is not attempted early.
func TestDueTimesAcrossRestart(t *testing.T) {
	const later = 20 * time.Second
	rc := newReceiver(t)
	rc.failFirst = true
	rc.up(t)
	// One event to each destination, through a topic each.
	dests := `  - name: soon
    type: webhook
    topics: ["due.soon"]
    retry: {schedule: [1s], jitter: 0}
    config: {url: "http://` + rc.addr + `/hooks", signing: none}
  - name: later
    type: webhook
    topics: ["due.later"]
    retry: {schedule: [20s], jitter: 0}
    config: {url: "http://` + rc.addr + `/hooks", signing: none}
`
	n := newNode(t, baseConfig("", "", dests))
	n.start()
	publishOne(t, n.addr, "soon-1", "due.soon")
	publishOne(t, n.addr, "later-1", "due.later")
	// Both first attempts (503) recorded, so their retries are scheduled in the store.
	var laterFirst time.Time
	waitFor(t, "both first attempts recorded", 30*time.Second, func() bool {
		s, _ := attempts(t, n.addr, "soon-1")
		l, at := attempts(t, n.addr, "later-1")
		laterFirst = at
		return s == 1 && l == 1
	})
	n.kill()
	soonDue := time.Now().Add(time.Second)
	for time.Now().Before(soonDue.Add(time.Second)) {
		time.Sleep(50 * time.Millisecond) // the outage outlasts soon-1's due time
	}
	restarted := time.Now()
	n.start()
	waitFor(t, "soon-1 delivered", 30*time.Second, func() bool { return rc.has("soon-1") })
	soonAfter := rc.firstAfter(restarted).Sub(restarted)
	laterDue := laterFirst.Add(later)
	if rc.has("later-1") && time.Now().Before(laterDue) {
		t.Fatalf("later-1 was retried before its due time (%v early)", time.Until(laterDue))
	}
	if time.Now().After(laterDue) {
		t.Fatalf("soon-1, overdue at the restart, was delivered only after later-1's retry fell due (%v after restart)", soonAfter)
	}
	waitFor(t, "later-1 delivered", later+30*time.Second, func() bool { return rc.has("later-1") })
	rc.mu.Lock()
	last := rc.times[len(rc.times)-1]
	rc.mu.Unlock()
	if last.Before(laterDue) {
		t.Fatalf("later-1 arrived %v before its retry was due", laterDue.Sub(last))
	}
	d, total := rc.counts()
	record(t, row{Case: "restart across due times", Acked: 2, Delivered: d, Lost: 2 - d, Duplicates: total - d,
		Recovery: fmt.Sprintf("overdue retry sent %s after restart; future one %s after its due time", ms(soonAfter), ms(last.Sub(laterDue)))})
}

func publishOne(t *testing.T, addr, id, topic string) {
	t.Helper()
	ld := newLoad(addr, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ld.publishTopic(ctx, id, topic)
	if _, ok := ld.acked.Load(id); !ok {
		t.Fatalf("event %s was not acknowledged", id)
	}
}

// attempts returns how many attempts the event's (only) delivery has recorded, and when the first was.
func attempts(t *testing.T, addr, id string) (int, time.Time) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/events/"+id, nil)
	req.Header.Set("Authorization", "Bearer faults-key")
	resp, err := probeClient.Do(req)
	if err != nil {
		return 0, time.Time{}
	}
	defer resp.Body.Close()
	var ev struct {
		Deliveries []struct {
			Attempts []struct {
				At time.Time `json:"at"`
			} `json:"attempts"`
		} `json:"deliveries"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ev) != nil || len(ev.Deliveries) != 1 {
		return 0, time.Time{}
	}
	at := ev.Deliveries[0].Attempts
	if len(at) == 0 {
		return 0, time.Time{}
	}
	return len(at), at[0].At
}

// TestPluginCrashes: a plugin sink that exits on every crashEvery-th send is restarted by the host with backoff
// (doubling while the crashes come in a row), and every acknowledged event reaches it.
func TestPluginCrashes(t *testing.T) {
	// About 5 crashes (short) or 8 (full): the host's backoff doubles from 100ms with each crash in a row.
	events, crashEvery := pick(2000, 20000), pick(400, 2500)
	plugin := build(t, "github.com/sluicehq/sluice/test/faults/testdata/crashplugin", "sluice-crashy")
	out := filepath.Join(t.TempDir(), "received.txt")
	extra := fmt.Sprintf("plugins:\n  - {name: crashy, path: %q, sha256: %s}\n", plugin, sha256File(t, plugin))
	dests := fmt.Sprintf("  - name: crashy\n    type: crashy\n    topics: [\"*\"]\n    config: {file: %q, crash_every: %d}\n", out, crashEvery)
	n := newNode(t, baseConfig("", extra, dests))
	n.start()
	ld := newLoad(n.addr, "plug")
	start := time.Now()
	ld.run(context.Background(), 8, events)
	ids := ld.ids()
	var missing []string
	waitFor(t, "every event at the plugin", 3*time.Minute, func() bool {
		got := fileCounts(out)
		missing = missing[:0]
		for _, id := range ids {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	})
	got := fileCounts(out)
	total := 0
	for _, c := range got {
		total += c
	}
	crashes := total / crashEvery // a send carries one event or more: at most this many crashes
	record(t, row{Case: fmt.Sprintf("plugin sink exits every %dth send", crashEvery), Acked: len(ids), Delivered: len(got), Lost: len(missing),
		Duplicates: total - len(got), Recovery: fmt.Sprintf("all delivered %s after the first publish", ms(time.Since(start)))})
	// A crash loses the answers to the sends in flight in that process: at most the lane's 16.
	if dup := total - len(got); dup > 16*(crashes+1) {
		t.Fatalf("%d duplicates over about %d crashes; at most 16 sends are in flight per crash", dup, crashes)
	}
}
