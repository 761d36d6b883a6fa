package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// rowsRead runs sql under EXPLAIN ANALYZE in a transaction it rolls back and answers how many rows of table
// the plan's scans read: those they returned and those their filters removed, over all their loops. (A claim
// reads each of its rows twice: to choose it, then to update it.)
func rowsRead(t *testing.T, s *Store, table, sql string, args ...any) float64 {
	t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var out []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct{ Plan map[string]any }
	if err := json.Unmarshal(out, &plans); err != nil {
		t.Fatal(err)
	}
	var walk func(n map[string]any) float64
	walk = func(n map[string]any) float64 {
		var read float64
		if n["Relation Name"] == table && n["Node Type"] != "ModifyTable" { // scans, not the write they feed
			num := func(k string) float64 { f, _ := n[k].(float64); return f }
			read = (num("Actual Rows") + num("Rows Removed by Filter") + num("Rows Removed by Index Recheck")) * num("Actual Loops")
		}
		kids, _ := n["Plans"].([]any)
		for _, k := range kids {
			if m, ok := k.(map[string]any); ok {
				read += walk(m)
			}
		}
		return read
	}
	return walk(plans[0].Plan)
}

// A batch of completions, renewals or claims reads its own rows of deliveries, however many other deliveries are
// pending: behind a destination that is down, a plan that read every pending row made each batch cost in
// proportion to the backlog. The statistics are a fresh table's (never analyzed), as on a server with
// autovacuum off.
func TestBatchesFindRowsByID(t *testing.T) {
	ctx := context.Background()
	dsn, schema := testSchema(t)
	noLeader(t, dsn, schema)
	s := openNode(t, dsn, schema, nil)
	const backlog, batch = 50_000, 256
	for b := range backlog / 1000 {
		evs := make([]store.NewEvent, 1000)
		for j := range evs {
			evs[j] = store.NewEvent{Event: event.Event{ID: fmt.Sprint("down-", b, "-", j), Topic: "t", Time: time.Now(),
				Data: []byte(`{}`)}, Destinations: []string{"down"}}
		}
		if _, err := s.Append(ctx, evs, appendOpts); err != nil {
			t.Fatal(err)
		}
	}
	evs := make([]store.NewEvent, batch)
	for j := range evs {
		evs[j] = store.NewEvent{Event: event.Event{ID: fmt.Sprint("live-", j), Topic: "t", Time: time.Now(),
			Data: []byte(`{}`)}, Destinations: []string{"live"}, Leased: []bool{true}}
	}
	res, err := s.Append(ctx, evs, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	ids, toks, untils := make([]int64, batch), make([]int64, batch), make([]int64, batch)
	sts, errs, nexts := make([]string, batch), make([]string, batch), make([]int64, batch)
	tried, ns, codes := make([]int32, batch), make([]int32, batch), make([]int32, batch)
	ats, us, resp := make([]int64, batch), make([]int64, batch), make([][]byte, batch)
	now := time.Now()
	for j, r := range res {
		ids[j] = r.Deliveries[0].ID
		toks[j], untils[j] = s.holds.token(ids[j]), nanos(now.Add(time.Hour))
		if toks[j] == 0 {
			t.Fatalf("delivery %d is not held by its appender", ids[j])
		}
		sts[j], tried[j], ns[j], codes[j], ats[j], us[j] = "delivered", 1, 1, 200, nanos(now), 1500
	}
	if n := rowsRead(t, s, "deliveries", completeSQL,
		ids, sts, tried, nexts, errs, toks, nanos(now), int64(0), ns, ats, us, codes, resp); n > 2*batch {
		t.Errorf("completing %d deliveries read %.0f rows of deliveries (%d pending); want at most %d", batch, n, backlog+batch, 2*batch)
	}
	for j := range sts {
		sts[j] = "pending" // a retry: the row stays, updated in place
	}
	if n := rowsRead(t, s, "deliveries", completeSQL,
		ids, sts, tried, nexts, errs, toks, nanos(now), int64(0), ns, ats, us, codes, resp); n > 2*batch {
		t.Errorf("rescheduling %d deliveries read %.0f rows of deliveries (%d pending); want at most %d", batch, n, backlog+batch, 2*batch)
	}
	if n := rowsRead(t, s, "deliveries", renewSQL, ids, toks, untils, nanos(now.Add(time.Hour)), nanos(now)); n > 2*batch {
		t.Errorf("renewing %d leases read %.0f rows of deliveries (%d pending); want at most %d", batch, n, backlog+batch, 2*batch)
	}
	// A claim reads its destination's due rows, not the backlog of another (all of it due too).
	due := make([]store.NewEvent, batch)
	for j := range due {
		due[j] = store.NewEvent{Event: event.Event{ID: fmt.Sprint("due-", j), Topic: "t", Time: time.Now(),
			Data: []byte(`{}`)}, Destinations: []string{"up"}}
	}
	if _, err := s.Append(ctx, due, appendOpts); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if n := rowsRead(t, s, "deliveries", claimSQL, "up", nanos(later), batch, nanos(later.Add(time.Minute)), int64(7), s.nodeID); n > 2*batch {
		t.Errorf("claiming %d deliveries read %.0f rows of deliveries (%d pending); want at most %d", batch, n, backlog+2*batch, 2*batch)
	}
}
