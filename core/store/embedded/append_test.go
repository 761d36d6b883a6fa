package embedded

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// TestGroupEventInsert: the events of a group's appends go in by shared multi-row statements (insertEvents).
// Whatever mix a statement holds — new events, ids stored earlier, ids repeated within the statement or
// across a chunk boundary or across two appends of the group — each new event gets its own row and
// deliveries, each repeat is answered as the duplicate of the first with the first's deliveries, and nothing
// else is stored.
func TestGroupEventInsert(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	dests := []string{"a", "b", "c"}
	leased := []bool{true, true, false} // two deferred, one a row from the start
	ne := func(id, topic string) store.NewEvent {
		ev := newEvent(id)
		ev.Topic = topic
		return store.NewEvent{Event: ev, Destinations: dests, Leased: leased}
	}
	stored, err := s.Append(ctx, []store.NewEvent{ne("old-1", "t.old"), ne("old-2", "t.old")}, opts)
	if err != nil {
		t.Fatal(err)
	}

	// One append of 75 events: more than a statement's 32 rows, with repeats of stored ids, repeats within the
	// batch on both sides of a chunk boundary, and new ids.
	var first, second []store.NewEvent
	for i := range 75 {
		id := fmt.Sprintf("new-%02d", i)
		switch {
		case i == 5 || i == 40:
			id = "old-1"
		case i == 33:
			id = "new-03" // repeats a row of the first chunk in the second
		case i == 31 || i == 32:
			id = "edge" // the last row of one chunk and the first of the next
		}
		first = append(first, ne(id, fmt.Sprintf("t.%d", i)))
	}
	// A second append in the same group repeats ids of the first and of the stored events.
	for _, id := range []string{"new-10", "old-2", "other-1", "new-74", "other-1"} {
		second = append(second, ne(id, "t.second"))
	}
	res1, res2 := groupAppend(t, s, first, second)

	topicOf := map[string]string{}  // the topic of the event that went in, by id
	answers := map[string][]int64{} // the delivery ids each id was answered with
	check := func(res []store.AppendResult, evs []store.NewEvent) {
		t.Helper()
		for i, r := range res {
			id := evs[i].Event.ID
			if r.Err != nil || r.ID != id || len(r.Deliveries) != len(dests) {
				t.Fatalf("%s: result %+v", id, r)
			}
			var ids []int64
			for _, d := range r.Deliveries {
				ids = append(ids, d.ID)
			}
			_, seen := topicOf[id]
			if r.Duplicate != seen {
				t.Fatalf("%s (position %d): duplicate %v, want %v", id, i, r.Duplicate, seen)
			}
			if seen {
				if !reflect.DeepEqual(ids, answers[id]) {
					t.Fatalf("%s: duplicate answered deliveries %v, the first %v", id, ids, answers[id])
				}
				continue
			}
			topicOf[id], answers[id] = evs[i].Event.Topic, ids
		}
	}
	for _, r := range stored {
		topicOf[r.ID] = "t.old"
		for _, d := range r.Deliveries {
			answers[r.ID] = append(answers[r.ID], d.ID)
		}
	}
	check(res1, first)
	check(res2, second)

	// What is stored is each id once, with its own topic and deliveries.
	for id, topic := range topicOf {
		rec, err := s.TenantEvent(ctx, "acme", id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		var ids []int64
		for _, d := range rec.Deliveries {
			if d.EventID != id {
				t.Fatalf("%s: delivery %+v of another event", id, d)
			}
			ids = append(ids, d.ID)
		}
		if rec.Event.Topic != topic || !reflect.DeepEqual(ids, answers[id]) {
			t.Fatalf("%s: stored topic %q with deliveries %v, want %q with %v", id, rec.Event.Topic, ids, topic, answers[id])
		}
	}
	var events, deliveries int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != len(topicOf) {
		t.Fatalf("%d events stored, want %d", events, len(topicOf))
	}
	// The deferred deliveries get their rows at Close; then every delivery answered is one row.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := openFile(t, dir).QueryRow(`SELECT count(*) FROM deliveries`).Scan(&deliveries); err != nil {
		t.Fatal(err)
	}
	if deliveries != len(topicOf)*len(dests) {
		t.Fatalf("%d deliveries stored, want %d", deliveries, len(topicOf)*len(dests))
	}
}

// groupAppend runs two appends as one group commit and returns their answers: the writer is held in an
// operation until both are queued, and then takes them together.
func groupAppend(t *testing.T, s *Store, a, b []store.NewEvent) (ra, rb []store.AppendResult) {
	t.Helper()
	ctx := context.Background()
	hold, held := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.write(ctx, func(context.Context, *sql.Tx) error {
			close(held)
			<-hold
			return nil
		})
	}()
	<-held
	commits, grouped := s.Stats()
	results := make([][]store.AppendResult, 2)
	errs := make(chan error, 2)
	for i, evs := range [][]store.NewEvent{a, b} {
		go func() {
			var err error
			results[i], err = s.Append(ctx, evs, opts)
			errs <- err
		}()
		// Queued in this order, so the group's events go in as a, then b.
		for len(s.ops) < i+1 {
			runtime.Gosched()
		}
	}
	close(hold)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The held operation's commit, then one commit of both appends.
	if c, g := s.Stats(); c-commits != 2 || g-grouped != 3 {
		t.Fatalf("%d commits of %d operations, want the appends in one", c-commits, g-grouped)
	}
	return results[0], results[1]
}

// TestCommitTime: the writer's time on a group counts from the group's start to its durable commit, so an
// operation that holds the writer adds at least as long as it held it, and the writer, which is one, is never
// busy for longer than the clock has run.
func TestCommitTime(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	begun, before := time.Now(), s.CommitTime()
	var held time.Duration
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.write(ctx, func(context.Context, *sql.Tx) error {
			t0 := time.Now()
			close(inside)
			<-release
			held = time.Since(t0)
			return nil
		})
	}()
	<-inside
	// Some appends queue behind the held operation meanwhile.
	appended := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, []store.NewEvent{{Event: newEvent("after-hold"), Destinations: []string{"a"}}}, opts)
		appended <- err
	}()
	for len(s.ops) < 1 {
		runtime.Gosched()
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	busy, ran := s.CommitTime()-before, time.Since(begun)
	if busy < held || busy > ran {
		t.Fatalf("writer busy %v: want at least the %v an operation held it and at most the %v the test ran", busy, held, ran)
	}
}
