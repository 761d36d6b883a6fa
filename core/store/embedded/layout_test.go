package embedded

import (
	"context"
	"database/sql"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// TestUpgradeFromEarlierLayout opens a database in the layout of earlier versions, where every attempt (the
// first one too) is a row of attempts, deliveries has no a1_* columns, and an event's deliveries are found by
// the index deliveries_event rather than the id range on the event: every event, delivery and attempt answers
// as before the upgrade, deliveries carry on from where they were, and retention removes what it should.
func TestUpgradeFromEarlierLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	s, err := Open(dir, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	dests := []string{"ok", "retrying", "failed", "untried", "skipped"}
	res := mustAppend(t, s, []store.NewEvent{
		{Event: newEvent("e-1"), Destinations: dests, Skipped: []string{"", "", "", "", "disabled"}},
		{Event: newEvent("e-2"), Destinations: []string{"ok"}, Test: true},
	})
	ids := map[string]int64{}
	for _, d := range res[0].Deliveries {
		ids[d.Destination] = d.ID
	}
	at := c.Now()
	out := func(dest string, n int, st store.Status, code int, errText, resp string) store.Outcome {
		o := store.Outcome{DeliveryID: ids[dest], Status: st, Attempt: store.Attempt{N: n, At: at.Add(time.Duration(n) * time.Second),
			Duration: time.Duration(n) * 1500 * time.Microsecond, StatusCode: code, Error: errText}}
		if resp != "" {
			o.Attempt.Response = []byte(resp)
		}
		if st == store.Pending {
			o.NextAt = at.Add(time.Minute)
		}
		return o
	}
	for _, outs := range [][]store.Outcome{
		{out("ok", 1, store.Delivered, 204, "", ""), out("retrying", 1, store.Pending, 503, "http 503", "busy"),
			out("failed", 1, store.Pending, 500, "http 500", "oops"),
			{DeliveryID: res[1].Deliveries[0].ID, Status: store.Delivered, Attempt: store.Attempt{N: 1, At: at, StatusCode: 200}}},
		{out("failed", 2, store.Failed, 400, "http 400", "bad")},
	} {
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
	}
	before := answers(t, s, res)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Rewrite the database into the earlier layout: first attempts back into attempts, the columns gone, the
	// index back.
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, FileName), false))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response)
		   SELECT id, 1, a1_at, a1_us, a1_code, coalesce(a1_error, ''), a1_response FROM deliveries WHERE a1_at IS NOT NULL`,
		`ALTER TABLE deliveries DROP COLUMN a1_at`,
		`ALTER TABLE deliveries DROP COLUMN a1_us`,
		`ALTER TABLE deliveries DROP COLUMN a1_code`,
		`ALTER TABLE deliveries DROP COLUMN a1_error`,
		`ALTER TABLE deliveries DROP COLUMN a1_response`,
		`ALTER TABLE events DROP COLUMN dfirst`,
		`ALTER TABLE events DROP COLUMN dlast`,
		`CREATE INDEX deliveries_event ON deliveries(event_seq)`,
		`CREATE INDEX events_received ON events(received_at)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM attempts`).Scan(&n); err != nil || n != 5 {
		t.Fatalf("attempts rows in the earlier layout: %d %v, want 5", n, err)
	}
	db.Close()

	s = openClock(t, dir, c)
	if after := answers(t, s, res); !reflect.DeepEqual(after, before) {
		t.Fatalf("after the upgrade:\n%+v\nwant\n%+v", after, before)
	}
	for _, idx := range []string{"deliveries_event", "events_received"} {
		if err := s.rdb.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = ?`, idx).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s after the upgrade: %d %v, want it dropped", idx, n, err)
		}
	}
	// A range that takes in another event's rows (as rows an earlier version wrote might) still answers the
	// event's own deliveries and attempts only.
	if _, err := s.wdb.Exec(`UPDATE events SET dlast = dlast + 1 WHERE id = 'e-1'`); err != nil {
		t.Fatal(err)
	}
	if after := answers(t, s, res); !reflect.DeepEqual(after, before) {
		t.Fatalf("with a wider range:\n%+v\nwant\n%+v", after, before)
	}
	// Deliveries carry on: the retrying one's second attempt follows its first (a row of attempts), the
	// untried one's first attempt goes onto its row.
	c.Advance(time.Hour)
	if err := s.Complete(ctx, []store.Outcome{out("retrying", 2, store.Delivered, 200, "", ""), out("untried", 1, store.Delivered, 202, "", "")}); err != nil {
		t.Fatal(err)
	}
	for dest, want := range map[string][]int{"retrying": {503, 200}, "untried": {202}, "ok": {204}, "failed": {500, 400}} {
		d, err := s.Delivery(ctx, ids[dest])
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for i, a := range d.AttemptLog {
			if a.N != i+1 || a.DeliveryID != ids[dest] {
				t.Fatalf("%s: attempt %d is %+v", dest, i+1, a)
			}
			got = append(got, a.StatusCode)
		}
		if !reflect.DeepEqual(got, want) || d.Attempts != len(want) {
			t.Fatalf("%s after the upgrade: attempts %d, status codes %v, want %v", dest, d.Attempts, got, want)
		}
	}
	rec, err := s.Event(ctx, "e-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rec.Deliveries {
		if got, err := s.Delivery(ctx, d.ID); err != nil || !reflect.DeepEqual(*got, d) {
			t.Fatalf("delivery %d: Event answers %+v, Delivery %+v %v", d.ID, d, got, err)
		}
	}
	// Retention removes both events (none pending now) with every delivery and attempt; new events append
	// after the upgraded ones.
	more := mustAppend(t, s, []store.NewEvent{{Event: newEvent("e-3"), Destinations: []string{"ok", "failed"}}})
	if got := more[0].Deliveries[0].ID; got != res[1].Deliveries[0].ID+1 {
		t.Fatalf("first delivery after the upgrade: id %d, want %d", got, res[1].Deliveries[0].ID+1)
	}
	if n, err := s.Prune(ctx, c.Now(), 0); err != nil || n != 2 {
		t.Fatalf("Prune = %d %v, want the 2 upgraded events", n, err)
	}
	var deliveries, attempts int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM deliveries`).Scan(&deliveries); err != nil {
		t.Fatal(err)
	}
	if deliveries != 2 || countAttempts(t, s) != 0 {
		t.Fatalf("after pruning the upgraded events: %d deliveries, %d attempts left; want e-3's 2 and none", deliveries, attempts)
	}
	if rec, err := s.TenantEvent(ctx, "acme", "e-3"); err != nil || len(rec.Deliveries) != 2 {
		t.Fatalf("e-3 after pruning: %+v %v", rec, err)
	}
}

// answers is what the store says about the events of res and each of their deliveries.
func answers(t *testing.T, s *Store, res []store.AppendResult) []any {
	t.Helper()
	ctx := context.Background()
	var out []any
	for _, r := range res {
		rec, err := s.TenantEvent(ctx, "acme", r.ID)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
		for _, d := range r.Deliveries {
			dr, err := s.Delivery(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, dr)
		}
		list, err := s.ListDeliveries(ctx, store.DeliveryFilter{EventID: r.ID})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, list)
	}
	return out
}
