package embedded

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

func TestTraceparentPersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traced, plain := newEvent("traced"), newEvent("plain")
	traced.Traceparent = tp
	mustAppend(t, s, []store.NewEvent{{Event: traced, Destinations: []string{"d"}}, {Event: plain, Destinations: []string{"d"}}})
	jobs, err := s.Claim(ctx, "d", time.Now().Add(time.Second), time.Minute, 10)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	for _, j := range jobs {
		want := map[string]string{"traced": tp, "plain": ""}[j.Event.ID]
		if j.Event.Traceparent != want {
			t.Fatalf("claimed %s with traceparent %q, want %q", j.Event.ID, j.Event.Traceparent, want)
		}
	}
	rec, err := s.Event(ctx, "traced")
	if err != nil || rec.Event.Traceparent != tp {
		t.Fatalf("event read back: %+v %v", rec, err)
	}
	// Stored as NULL when absent.
	var null sql.NullString
	if err := s.rdb.QueryRowContext(ctx, `SELECT traceparent FROM events WHERE id = 'plain'`).Scan(&null); err != nil || null.Valid {
		t.Fatalf("plain event's traceparent column: %+v %v, want NULL", null, err)
	}
}
