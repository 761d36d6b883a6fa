package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// TestLeaderVacuumsTheQueue: where autovacuum leaves the delivery queue alone (here the table's
// autovacuum_enabled is off; a server with autovacuum = off is the same case for every table), the leader
// vacuums it once the rows of finished deliveries pile up, so the queue does not grow by every delivery ever
// made, and renews its statistics. The queue is both tables: deliveries, and fanouts (the events whose
// deliveries are all leased at birth).
func TestLeaderVacuumsTheQueue(t *testing.T) {
	for _, table := range []string{"deliveries", "fanouts"} {
		t.Run(table, func(t *testing.T) { leaderVacuums(t, table) })
	}
}

func leaderVacuums(t *testing.T, table string) {
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, func(o *Options) { o.LeaderEvery = 50 * time.Millisecond })
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = off)`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node to lead", s.Leading)
	vacuums := func() (n int64) {
		t.Helper()
		err := s.pool.QueryRow(ctx, `SELECT vacuum_count FROM pg_stat_user_tables
			WHERE schemaname = current_schema() AND relname = $1`, table).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := vacuums(); n != 0 {
		t.Fatalf("a new queue was vacuumed %d times", n)
	}
	// Deliveries made and completed, 1,000 at a time, until the leader has vacuumed: each leaves a dead row in
	// deliveries, or each event (both leased at birth) two in fanouts (its update and its delete). The
	// statistics the leader reads lag the commits by a second or so.
	deadline := time.Now().Add(60 * time.Second)
	made := 0
	for vacuums() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d deliveries made and finished, the leader has not vacuumed the queue", made)
		}
		evs := make([]store.NewEvent, 500)
		for i := range evs {
			evs[i] = ev(fmt.Sprintf("e%d", made/2+i), "")
			evs[i].Leased = []bool{true, table == "fanouts"}
		}
		res, err := s.Append(ctx, evs, appendOpts)
		if err != nil {
			t.Fatal(err)
		}
		outs := delivered(res)
		if len(outs) != 2*len(evs) {
			t.Fatalf("%d deliveries for %d events", len(outs), len(evs))
		}
		if err := s.Complete(ctx, outs); err != nil {
			t.Fatal(err)
		}
		made += len(outs)
	}
	if made <= vacuumDeadRows {
		t.Fatalf("the leader vacuumed the queue after %d finished deliveries, before %d dead rows", made, vacuumDeadRows)
	}
	// The vacuum analyzes too: nothing else renews the queue's statistics here.
	waitFor(t, "the queue's statistics to be renewed with its vacuum", func() bool {
		var n int64
		err := s.pool.QueryRow(ctx, `SELECT analyze_count FROM pg_stat_user_tables
			WHERE schemaname = current_schema() AND relname = $1`, table).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	t.Logf("vacuumed after %d finished deliveries", made)
}
