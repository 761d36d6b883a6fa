package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// rowCount is how many rows deliveries holds, read on the pool without settling what is deferred.
func rowCount(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM deliveries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// openFile opens the store file in dir read-only, as another process would once the store is closed; the
// handle is closed when the test ends.
func openFile(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// mixedEvent has one delivery of each kind: leased (deferred), leased but ordered, not leased, and skipped.
func mixedEvent(id string) store.NewEvent {
	return store.NewEvent{Event: newEvent(id), Destinations: []string{"now", "ordered", "later", "off"},
		Leased: []bool{true, true, false, false}, OrderingKeys: []string{"", "k", "", ""}, Skipped: []string{"", "", "", "disabled"}}
}

func delivered(id int64) store.Outcome {
	return store.Outcome{DeliveryID: id, Status: store.Delivered,
		Attempt: store.Attempt{N: 1, At: t0, Duration: 3 * time.Millisecond, StatusCode: 200, Response: []byte("ok")}}
}

// TestDeferredDeliveryIsWrittenOnce: a leased, unordered delivery gets no row at Append and one row, in its
// final state, when it completes; the others get theirs at Append as before. Meanwhile it counts as pending.
func TestDeferredDeliveryIsWrittenOnce(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1")})
	if n := rowCount(t, s); n != 3 {
		t.Fatalf("%d delivery rows after Append, want 3 (all but the leased, unordered one)", n)
	}
	counts, err := s.PendingCounts(ctx)
	if err != nil || counts["now"] != 1 || counts["ordered"] != 1 || counts["later"] != 1 || counts["off"] != 0 {
		t.Fatalf("PendingCounts = %v, %v; want now, ordered and later 1 each", counts, err)
	}
	c.Advance(time.Second)
	id := res[0].Deliveries[0].ID
	if err := s.Complete(ctx, []store.Outcome{delivered(id)}); err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, s); n != 4 {
		t.Fatalf("%d delivery rows after Complete, want 4", n)
	}
	if counts, err := s.PendingCounts(ctx); err != nil || counts["now"] != 0 {
		t.Fatalf("PendingCounts = %v, %v; want now 0", counts, err)
	}
	rec, err := s.Delivery(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	d := rec.Delivery
	if d.Status != store.Delivered || d.Attempts != 1 || d.Destination != "now" || d.EventID != "e-1" ||
		!d.CreatedAt.Equal(t0) || !d.UpdatedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("delivery after Complete = %+v", d)
	}
	if len(rec.AttemptLog) != 1 || rec.AttemptLog[0].StatusCode != 200 || string(rec.AttemptLog[0].Response) != "ok" {
		t.Fatalf("attempt log = %+v, want the one attempt", rec.AttemptLog)
	}
	// Completed again (a late duplicate outcome): nothing changes, no second row.
	if err := s.Complete(ctx, []store.Outcome{delivered(id)}); err != nil || rowCount(t, s) != 4 {
		t.Fatalf("second Complete: %v, %d rows", err, rowCount(t, s))
	}
}

// TestDeferredRescheduledWithoutAttempt: a deferred delivery rescheduled without an attempt (its destination's
// breaker is open) gets one row, the same as a delivery whose row Append wrote ends up with after the same
// outcome, and is claimed again when due.
func TestDeferredRescheduledWithoutAttempt(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1")})
	deferredID, writtenID := res[0].Deliveries[0].ID, res[0].Deliveries[2].ID // "now" (deferred), "later" (its row)
	c.Advance(time.Second)
	due := t0.Add(time.Minute)
	reschedule := func(id int64) store.Outcome {
		return store.Outcome{DeliveryID: id, Status: store.Pending, NextAt: due, Attempt: store.Attempt{Error: "circuit open"}}
	}
	if err := s.Complete(ctx, []store.Outcome{reschedule(deferredID), reschedule(writtenID)}); err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, s); n != 4 {
		t.Fatalf("%d delivery rows after Complete, want 4", n)
	}
	got, err := s.Delivery(ctx, deferredID)
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.Delivery(ctx, writtenID)
	if err != nil {
		t.Fatal(err)
	}
	g, w := got.Delivery, want.Delivery
	g.ID, g.Destination, w.ID, w.Destination = 0, "", 0, ""
	if g != w || g.Status != store.Pending || g.Attempts != 0 || !g.NextAt.Equal(due) || g.LastError != "circuit open" {
		t.Fatalf("rescheduled deferred delivery = %+v, want it as the written one: %+v", g, w)
	}
	if len(got.AttemptLog) != 0 || len(want.AttemptLog) != 0 {
		t.Fatalf("attempt logs %+v and %+v, want none", got.AttemptLog, want.AttemptLog)
	}
	if counts, err := s.PendingCounts(ctx); err != nil || counts["now"] != 1 {
		t.Fatalf("PendingCounts = %v, %v; want now 1 (still pending)", counts, err)
	}
	if jobs, err := s.Claim(ctx, "now", due.Add(-time.Millisecond), time.Minute, 10); err != nil || len(jobs) != 0 {
		t.Fatalf("Claim before it is due = %d jobs, %v; want none", len(jobs), err)
	}
	jobs, err := s.Claim(ctx, "now", due, time.Minute, 10)
	if err != nil || len(jobs) != 1 || jobs[0].Delivery.ID != deferredID {
		t.Fatalf("Claim when due = %+v, %v; want the rescheduled delivery", jobs, err)
	}
}

// TestDeferredDeliveryReadsAsPending: every read sees a deferred delivery as the pending, leased row Append
// used to write, and completing it after a read wrote that row still records the outcome.
func TestDeferredDeliveryReadsAsPending(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1"), mixedEvent("e-2")})
	id := res[0].Deliveries[0].ID
	// Reads that cannot show a deferred delivery, or not these, write nothing.
	if _, err := s.ListDeliveries(ctx, store.DeliveryFilter{Status: store.Delivered}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"later"}}); err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, s); n != 6 {
		t.Fatalf("%d rows after lists that cannot show the deferred deliveries, want 6", n)
	}
	if _, err := s.Retry(ctx, id, time.Now()); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Retry of a delivery being attempted: %v, want ErrConflict", err)
	}
	rec, err := s.Event(ctx, "e-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Deliveries) != 4 || rec.Deliveries[0].ID != id || rec.Deliveries[0].Status != store.Pending {
		t.Fatalf("Event's deliveries = %+v, want 4, the first pending", rec.Deliveries)
	}
	if n := rowCount(t, s); n != 7 {
		t.Fatalf("%d rows after reading e-1, want 7: the read writes e-1's deferred delivery, not e-2's", n)
	}
	ds, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"now"}})
	if err != nil || len(ds) != 2 || ds[0].Status != store.Pending || ds[1].Status != store.Pending {
		t.Fatalf("ListDeliveries = %+v, %v", ds, err)
	}
	if n := rowCount(t, s); n != 8 {
		t.Fatalf("%d rows after listing the destination, want 8", n)
	}
	if err := s.Complete(ctx, []store.Outcome{delivered(id)}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Delivery(ctx, id); err != nil || rec.Status != store.Delivered || len(rec.AttemptLog) != 1 {
		t.Fatalf("Delivery = %+v, %v", rec, err)
	}
	// A duplicate of the event answers with the deliveries as they stand.
	dup := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1")})
	if !dup[0].Duplicate || len(dup[0].Deliveries) != 4 || dup[0].Deliveries[0].Status != store.Delivered {
		t.Fatalf("duplicate Append = %+v", dup[0])
	}
}

// TestDeferredDeliveryLeaseEnds: once its lease has ended, a deferred delivery is due and claimable, as a
// leased row is; outcomes other than a first attempt start from that row too.
func TestDeferredDeliveryLeaseEnds(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1"), mixedEvent("e-2")})
	now := time.Now()
	if due, err := s.Due(ctx, []string{"now", "x"}, now); err != nil || len(due) != 0 {
		t.Fatalf("Due before the lease ends = %v, %v", due, err)
	}
	if jobs, err := s.Claim(ctx, "now", now, time.Minute, 10); err != nil || len(jobs) != 0 {
		t.Fatalf("Claim before the lease ends = %d jobs, %v", len(jobs), err)
	}
	later := now.Add(opts.Lease + time.Second)
	if due, err := s.Due(ctx, []string{"now", "x"}, later); err != nil || len(due) != 1 || due[0] != "now" {
		t.Fatalf("Due after the lease ends = %v, %v", due, err)
	}
	jobs, err := s.Claim(ctx, "now", later, time.Minute, 10)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("Claim after the lease ends = %+v, %v", jobs, err)
	}
	for i, r := range res {
		if !slices.ContainsFunc(jobs, func(j store.Job) bool {
			return j.Delivery.ID == r.Deliveries[0].ID && j.Event.ID == r.ID && j.Delivery.Destination == "now"
		}) {
			t.Fatalf("Claim after the lease ends did not take e-%d's delivery: %+v", i+1, jobs)
		}
	}
	// A skip (no attempt) of a delivery still deferred.
	s2 := open(t, t.TempDir())
	res = mustAppend(t, s2, []store.NewEvent{mixedEvent("e-3")})
	id := res[0].Deliveries[0].ID
	if err := s2.Complete(ctx, []store.Outcome{{DeliveryID: id, Status: store.Skipped, Attempt: store.Attempt{Error: "paused"}}}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s2.Delivery(ctx, id); err != nil || rec.Status != store.Skipped || rec.Attempts != 0 || rec.LastError != "paused" {
		t.Fatalf("skipped deferred delivery = %+v, %v", rec, err)
	}
}

// TestDeferredUndoneWithItsTransaction: a transaction that fails takes back the deliveries it deferred and the
// ids it handed out.
func TestDeferredUndoneWithItsTransaction(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	next := s.nextID
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		s.deferred.put(next, deferredRow{id: next, seq: 1, eventID: "x", dest: "now"})
		s.nextID++
		return errors.New("boom")
	})
	if err == nil || s.deferred.size() != 0 || s.nextID != next {
		t.Fatalf("after a failed transaction: err %v, %d deferred, next id %d (want %d)", err, s.deferred.len(), s.nextID, next)
	}
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1")})
	if res[0].Deliveries[0].ID != next || s.deferred.len() != 1 {
		t.Fatalf("first delivery id %d, %d deferred; want %d and 1", res[0].Deliveries[0].ID, s.deferred.len(), next)
	}
}

// copyDB copies the database files of an open store: what a process killed at that moment leaves on disk
// (every commit so far is in the file or its WAL).
func copyDB(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, name := range []string{FileName, FileName + "-wal"} {
		src, err := os.Open(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// TestDeferredRecoveredAtOpen: deliveries deferred when the process died get their rows when the store opens
// again, pending and due at once; those that completed are not made again.
func TestDeferredRecoveredAtOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1"), mixedEvent("e-2"), mixedEvent("e-3")})
	if err := s.Complete(ctx, []store.Outcome{delivered(res[1].Deliveries[0].ID)}); err != nil {
		t.Fatal(err)
	}
	crashed := copyDB(t, dir)

	r := open(t, crashed)
	if n := rowCount(t, r); n != 12 {
		t.Fatalf("%d delivery rows after the restart, want 12", n)
	}
	jobs, err := r.Claim(ctx, "now", time.Now(), time.Minute, 10)
	got := map[string]bool{}
	for _, j := range jobs {
		got[j.Event.ID] = true
	}
	if err != nil || len(jobs) != 2 || !got["e-1"] || !got["e-3"] {
		t.Fatalf("Claim after the restart = %+v, %v; want e-1's and e-3's", jobs, err)
	}
	if rec, err := r.Delivery(ctx, res[1].Deliveries[0].ID); err != nil || rec.Status != store.Delivered {
		t.Fatalf("the delivery completed before the crash = %+v, %v", rec, err)
	}
	// New deliveries carry on after the recovered ids, and the mark moved past the events looked at.
	more := mustAppend(t, r, []store.NewEvent{mixedEvent("e-4")})
	if more[0].Deliveries[0].ID <= res[2].Deliveries[3].ID {
		t.Fatalf("new delivery id %d reuses an earlier one (last %d)", more[0].Deliveries[0].ID, res[2].Deliveries[3].ID)
	}
	var mark int64
	if err := r.rdb.QueryRow(`SELECT v FROM marks WHERE k = ?`, markKey).Scan(&mark); err != nil || mark != 4 {
		t.Fatalf("mark = %d, %v; want 4", mark, err)
	}
}

// TestCloseWritesDeferredRows: a store closed cleanly holds every delivery as a row, as earlier versions wrote
// them, so one of those can open it.
func TestCloseWritesDeferredRows(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1")})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := openFile(t, dir)
	var status string
	var leased int
	if err := db.QueryRow(`SELECT status, leased FROM deliveries WHERE id = ?`, res[0].Deliveries[0].ID).Scan(&status, &leased); err != nil ||
		status != "pending" || leased != 1 {
		t.Fatalf("the deferred delivery's row after Close: %q leased=%d, %v", status, leased, err)
	}
}

// TestUpgradeToDeferredDeliveries opens a store written by the version before deferred deliveries (no
// events.fanout, no marks) holding a delivery in flight: it is kept, Open does not read the old events for
// deferred ones, and new deliveries are deferred and recovered like any.
func TestUpgradeToDeferredDeliveries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, []store.NewEvent{mixedEvent("old-1"), mixedEvent("old-2")})
	if err := s.Close(); err != nil { // writes the rows, as that version did at Append
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), false))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE events DROP COLUMN fanout`, `DROP TABLE marks`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s = open(t, dir)
	var mark int64
	if err := s.rdb.QueryRow(`SELECT v FROM marks WHERE k = ?`, markKey).Scan(&mark); err != nil || mark != 3 {
		t.Fatalf("mark after the upgrade = %d, %v; want 3 (after the old events)", mark, err)
	}
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Claim(ctx, "now", time.Now(), time.Minute, 10)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("the old in-flight deliveries after the upgrade: %d claimed, %v; want 2", len(jobs), err)
	}
	mustAppend(t, s, []store.NewEvent{mixedEvent("new-1")})
	if s.deferred.len() != 1 {
		t.Fatalf("%d deliveries deferred after the upgrade, want 1", s.deferred.len())
	}
	r := open(t, copyDB(t, dir))
	if rec, err := r.Event(ctx, "new-1"); err != nil || len(rec.Deliveries) != 4 || rec.Deliveries[0].Status != store.Pending {
		t.Fatalf("new-1 after a crash = %+v, %v", rec, err)
	}
}

// TestDeferredMarkFollowsCompletions: the mark stays at the oldest event with a delivery deferred, and moves
// past it once that completes, so Open after a crash reads only the recent events.
func TestDeferredMarkFollowsCompletions(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	mark := func() int64 {
		t.Helper()
		var v int64
		if err := s.rdb.QueryRow(`SELECT v FROM marks WHERE k = ?`, markKey).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1"), mixedEvent("e-2")})
	c.Advance(markEvery)
	mustAppend(t, s, []store.NewEvent{mixedEvent("e-3")})
	if m := mark(); m != 1 {
		t.Fatalf("mark with e-1's delivery deferred = %d, want 1", m)
	}
	if err := s.Complete(ctx, []store.Outcome{delivered(res[0].Deliveries[0].ID), delivered(res[1].Deliveries[0].ID)}); err != nil {
		t.Fatal(err)
	}
	if m := mark(); m != 1 {
		t.Fatalf("mark = %d within markEvery of the last, want it unchanged (1)", m)
	}
	c.Advance(markEvery)
	if err := s.Ping(ctx); err != nil { // any write
		t.Fatal(err)
	}
	if m := mark(); m != 3 {
		t.Fatalf("mark after e-1's and e-2's deliveries completed = %d, want 3 (e-3's is deferred)", m)
	}
}

// TestDeferredRoomGivenBackAfterBurst: once a burst of deferred deliveries has completed, the writer lets go of
// the room its maps and change list grew to.
func TestDeferredRoomGivenBackAfterBurst(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	evs := make([]store.NewEvent, shrinkAfter+10)
	for i := range evs {
		evs[i] = store.NewEvent{Event: newEvent(fmt.Sprint("b-", i)), Destinations: []string{"now"}, Leased: []bool{true}}
	}
	res := mustAppend(t, s, evs)
	if s.deferred.peak != len(evs) || cap(s.deferred.changes) != 0 {
		t.Fatalf("after the burst: peak %d (want %d), room for %d changes (want none)", s.deferred.peak, len(evs), cap(s.deferred.changes))
	}
	outs := make([]store.Outcome, len(res))
	for i, r := range res {
		outs[i] = delivered(r.Deliveries[0].ID)
	}
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	if s.deferred.peak != 0 || s.deferred.len() != 0 {
		t.Fatalf("after the burst completed: peak %d, %d deferred; want the maps made anew", s.deferred.peak, s.deferred.len())
	}
}

// TestDeferredIDTakenIsReported: when an earlier version, run on a file a crash left, gave a deferred
// delivery's id to a delivery of its own, Open leaves that row alone and says which delivery it could not
// recover.
func TestDeferredIDTakenIsReported(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	res := mustAppend(t, s, []store.NewEvent{mixedEvent("e-1")})
	crashed := copyDB(t, dir)
	id := res[0].Deliveries[0].ID
	db, err := sql.Open("sqlite", dsn(filepath.Join(crashed, FileName), false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(insDeliveriesSQL(1), 99, "other", 1, 1, 0, id, "elsewhere", "pending", 1, 0, "", 0, ""); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var logged strings.Builder
	r, err := Open(crashed, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var dest string
	if err := r.rdb.QueryRow(`SELECT destination FROM deliveries WHERE id = ?`, id).Scan(&dest); err != nil || dest != "elsewhere" {
		t.Fatalf("delivery %d after Open: %q, %v; want the other row left alone", id, dest, err)
	}
	if !strings.Contains(logged.String(), "cannot be recovered") || !strings.Contains(logged.String(), fmt.Sprint("delivery_id=", id)) {
		t.Fatalf("Open logged %q, want the delivery it could not recover named", logged.String())
	}
}

// TestPruneKeepsEventOfDeferredDelivery: retention never removes an event whose delivery is deferred (pending),
// and writes the rows of the events it looked at only.
func TestPruneKeepsEventOfDeferredDelivery(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := openClock(t, t.TempDir(), c)
	only := func(id string) store.NewEvent {
		return store.NewEvent{Event: newEvent(id), Destinations: []string{"now"}, Leased: []bool{true}}
	}
	old := mustAppend(t, s, []store.NewEvent{only("old-1"), only("old-2")})
	if err := s.Complete(ctx, []store.Outcome{delivered(old[1].Deliveries[0].ID)}); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	mustAppend(t, s, []store.NewEvent{only("new-1")})
	n, err := s.Prune(ctx, t0.Add(time.Minute), 10)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want old-2 alone removed", n, err)
	}
	if _, err := s.Event(ctx, "old-2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old-2 after Prune: %v, want gone", err)
	}
	if rowCount(t, s) != 1 || s.deferred.len() != 1 {
		t.Fatalf("after Prune: %d rows, %d deferred; want old-1's row written and new-1's still deferred", rowCount(t, s), s.deferred.len())
	}
	if rec, err := s.Event(ctx, "old-1"); err != nil || rec.Deliveries[0].Status != store.Pending {
		t.Fatalf("old-1 after Prune = %+v, %v; want kept, pending", rec, err)
	}
}

// TestDeferredSeenOnlyOnceCommitted: other goroutines see a delivery deferred only once the transaction that
// deferred it commits, and still see it deferred until the one that writes its row commits.
func TestDeferredSeenOnlyOnceCommitted(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	next := s.nextID
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		s.deferred.put(next, deferredRow{id: next, seq: 1, eventID: "x", dest: "now"})
		s.deferred.put(next+1, deferredRow{id: next + 1, seq: 1, eventID: "x", dest: "now"})
		if n := s.deferred.len(); n != 0 {
			return fmt.Errorf("readers see %d deferred before the commit, want 0", n)
		}
		if _, ok := s.deferred.take(next + 1); !ok {
			return errors.New("the writer does not see what it deferred")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, size := s.deferred.len(), s.deferred.size(); n != 1 || size != 1 {
		t.Fatalf("after the commit: readers see %d, %d entries; want 1 and 1", n, size)
	}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, ok := s.deferred.take(next); !ok {
			return errors.New("not deferred")
		}
		if s.deferred.holds(next) || s.deferred.len() != 1 {
			return fmt.Errorf("while taken: writer holds %v, readers see %d; want false and 1", s.deferred.holds(next), s.deferred.len())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.deferred.len() != 0 || s.deferred.size() != 0 {
		t.Fatalf("after the take committed: %d seen, %d entries", s.deferred.len(), s.deferred.size())
	}
}

// TestCompleteRunsOfDeferredDeliveries: one Complete of 75 outcomes — runs of first attempts of deferred
// deliveries longer than the largest multi-row insert, broken by outcomes that take other statements (a retry
// after a later attempt, a delivery whose row Append wrote, a duplicate outcome of one already in the batch) —
// records each delivery as its own outcome says, in the batch's order.
func TestCompleteRunsOfDeferredDeliveries(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	const n = 70
	dests, leased := make([]string, n), make([]bool, n)
	for i := range dests {
		dests[i], leased[i] = fmt.Sprintf("d%02d", i), true
	}
	ne := store.NewEvent{Event: newEvent("e-1"), Destinations: dests, Leased: leased}
	res := mustAppend(t, s, []store.NewEvent{ne, mixedEvent("e-2")})
	if rows := rowCount(t, s); rows != 3 {
		t.Fatalf("%d rows after Append, want e-2's 3", rows)
	}
	ids := func(r store.AppendResult) (out []int64) {
		for _, d := range r.Deliveries {
			out = append(out, d.ID)
		}
		return out
	}
	e1, e2 := ids(res[0]), ids(res[1])
	want := map[int64]store.Status{}
	var outs []store.Outcome
	for i, id := range e1 {
		o := delivered(id)
		switch {
		case i == 40:
			// A first attempt that failed and will be retried.
			o.Status, o.NextAt, o.Attempt.StatusCode, o.Attempt.Error = store.Pending, t0.Add(time.Minute), 503, "busy"
		case i == 41:
			o.Status, o.Attempt.StatusCode, o.Attempt.Error = store.Failed, 410, "gone"
		case i == 50:
			// A later attempt of a deferred delivery (its lease ran out and it was claimed again): the row
			// Append would have written, then the usual update.
			o.Attempt.N = 2
		}
		want[id] = o.Status
		outs = append(outs, o)
		if i == 35 {
			// e-2's ordered delivery, whose row Append wrote, between two runs.
			outs = append(outs, delivered(e2[1]))
			want[e2[1]] = store.Delivered
		}
		if i == 60 {
			// A duplicate of an outcome earlier in the batch that ended its delivery changes nothing.
			dup := delivered(e1[41])
			dup.Attempt.StatusCode = 299
			outs = append(outs, dup)
		}
	}
	outs = append(outs, delivered(e2[0]))
	want[e2[0]] = store.Delivered
	if err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	if rows := rowCount(t, s); rows != 3+n+1 {
		t.Fatalf("%d rows after Complete, want %d", rows, 3+n+1)
	}
	for id, st := range want {
		rec, err := s.Delivery(ctx, id)
		if err != nil {
			t.Fatalf("delivery %d: %v", id, err)
		}
		d := rec.Delivery
		if d.Status != st || len(rec.AttemptLog) != 1 {
			t.Errorf("delivery %d: %s with %d attempts logged, want %s with 1", id, d.Status, len(rec.AttemptLog), st)
		}
	}
	rec, err := s.Delivery(ctx, e1[40])
	if err != nil {
		t.Fatal(err)
	}
	if a := rec.AttemptLog[0]; a.StatusCode != 503 || !rec.Delivery.NextAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("the retried delivery: attempt %+v, next at %s; want the 503, next at %s", a, rec.Delivery.NextAt, t0.Add(time.Minute))
	}
	if rec, err := s.Delivery(ctx, e1[41]); err != nil || rec.AttemptLog[0].StatusCode != 410 {
		t.Errorf("the failed delivery after a duplicate outcome: %+v, %v; want its 410", rec, err)
	}
	if rec, err := s.Delivery(ctx, e1[50]); err != nil || rec.Delivery.Attempts != 1 || rec.AttemptLog[0].N != 2 {
		t.Errorf("the delivery completed by its second attempt: %+v, %v", rec, err)
	}
	if counts, err := s.PendingCounts(ctx); err != nil || counts["d40"] != 1 || counts["d00"] != 0 || counts["now"] != 0 {
		t.Errorf("PendingCounts = %v, %v; want d40 1, d00 and now 0", counts, err)
	}
}

// TestListWritesOnlyAPageOfDeferredRows: a list without a status filter writes the rows of the page's worth of
// newest deferred deliveries it could show, not of everything in flight, and paging on walks every delivery
// once; a list of pending ones writes every deferred delivery that matches.
func TestListWritesOnlyAPageOfDeferredRows(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	var evs []store.NewEvent
	for i := range 60 {
		dest := "a"
		if i%3 == 0 {
			dest = "b"
		}
		evs = append(evs, store.NewEvent{Event: newEvent(fmt.Sprintf("e-%d", i)), Destinations: []string{dest}, Leased: []bool{true}})
	}
	res := mustAppend(t, s, evs)
	if n := rowCount(t, s); n != 0 {
		t.Fatalf("%d rows after Append, want none", n)
	}
	// Complete one of the newest: its row is written, and it is still listed in its place.
	done := res[58].Deliveries[0].ID
	if err := s.Complete(ctx, []store.Outcome{delivered(done)}); err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	before, pages := int64(0), 0
	for {
		ds, err := s.ListDeliveries(ctx, store.DeliveryFilter{Limit: 7, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		pages++
		for i, d := range ds {
			if seen[d.ID] || (i > 0 && d.ID >= ds[i-1].ID) || (before > 0 && d.ID >= before) {
				t.Fatalf("page %d lists %d out of order or twice", pages, d.ID)
			}
			seen[d.ID] = true
			if want := store.Pending; d.ID == done {
				if d.Status != store.Delivered {
					t.Fatalf("the completed delivery is listed %s", d.Status)
				}
			} else if d.Status != want {
				t.Fatalf("delivery %d is listed %s", d.ID, d.Status)
			}
		}
		if rows := rowCount(t, s); rows > pages*7+1 {
			t.Fatalf("%d rows after %d pages of 7: more than the pages could show were written", rows, pages)
		}
		before = ds[len(ds)-1].ID
	}
	if len(seen) != 60 || pages != 9 {
		t.Fatalf("the pages listed %d deliveries in %d pages, want 60 in 9", len(seen), pages)
	}
	// By destination, the same holds.
	s2 := open(t, t.TempDir())
	mustAppend(t, s2, evs)
	ds, err := s2.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"b"}, Limit: 5})
	if err != nil || len(ds) != 5 {
		t.Fatalf("list of b: %d, %v", len(ds), err)
	}
	for _, d := range ds {
		if d.Destination != "b" {
			t.Fatalf("list of b shows %+v", d)
		}
	}
	if rows := rowCount(t, s2); rows != 5 {
		t.Fatalf("%d rows after a page of 5 of b's, want 5", rows)
	}
	// Pending ones: every match is written (a written row that completed meanwhile would stop matching).
	if _, err := s2.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"b"}, Status: store.Pending, Limit: 5}); err != nil {
		t.Fatal(err)
	}
	if rows := rowCount(t, s2); rows != 20 {
		t.Fatalf("%d rows after a page of b's pending ones, want all 20 of b's", rows)
	}
}

// TestDeliveredRowAsTheGeneralRow: the statement for the common outcome (delivered at the first attempt, no
// error, not a test) writes, column for column, the row the general statement writes for the same outcome.
func TestDeliveredRowAsTheGeneralRow(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	at, created, updated := t0.UnixNano(), t0.Add(-time.Second).UnixNano(), t0.Add(time.Second).UnixNano()
	if _, err := tx.Stmt(s.stmts.insDone[0]).ExecContext(ctx, 1001, 7, "e-7", "dst", string(store.Delivered), 1, 0,
		created, updated, "", 0, at, 1500, 200, nil, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Stmt(s.stmts.insDelivered[0]).ExecContext(ctx, 1002, 7, "e-7", "dst", created, updated,
		at, 1500, 200, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	row := func(id int) []any {
		rows, err := tx.QueryContext(ctx, `SELECT * FROM deliveries WHERE id = ?`, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if !rows.Next() {
			t.Fatalf("no row %d", id)
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, c := range cols {
			vals[i] = fmt.Sprintf("%s=%T:%v", c, vals[i], vals[i])
		}
		return vals[1:] // all but the id
	}
	general, common := row(1001), row(1002)
	if !slices.Equal(general, common) {
		t.Fatalf("the common outcome's row differs from the general one:\n%v\n%v", common, general)
	}
}
