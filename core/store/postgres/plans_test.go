package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// rowsRead runs sql under EXPLAIN ANALYZE in a transaction it rolls back and answers how many rows of table
// (or of its day partitions) the plan's scans read: those they returned and those their filters removed, over
// all their loops. (A claim
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
		rel, _ := n["Relation Name"].(string)
		if (rel == table || strings.HasPrefix(rel, table+"_p")) && n["Node Type"] != "ModifyTable" { // scans (of a day's partition too), not the write they feed
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
		toks[j], untils[j] = s.holds.get(ids[j]).token, nanos(now.Add(time.Hour))
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

// A tenant's lists read a page of their own rows, however many rows other tenants have: tenant a's 60,000
// delivered events, newer than all of b's, do not make tenant b's pages of deliveries (b has two destinations)
// or of events (one topic for both) read them. With statistics up to date a scan of the primary key looked
// cheap for b (a seventh of the rows are b's), and it met all of a's rows first.
func TestTenantListsReadTheirOwnRows(t *testing.T) {
	ctx := context.Background()
	dsn, schema := testSchema(t)
	noLeader(t, dsn, schema)
	s := openNode(t, dsn, schema, nil)
	deliver := func(tenant string, dests []string, n int) {
		t.Helper()
		for b := 0; b < n; b += 1000 {
			evs := make([]store.NewEvent, min(1000, n-b))
			for j := range evs {
				evs[j] = store.NewEvent{Event: event.Event{ID: fmt.Sprint(tenant, b+j), Tenant: tenant, Topic: "case.updated",
					Time: time.Now(), Data: []byte(`{}`)}, Destinations: dests, Leased: make([]bool, len(dests))}
				for k := range dests {
					evs[j].Leased[k] = true
				}
			}
			res, err := s.Append(ctx, evs, appendOpts)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Complete(ctx, delivered(res)); err != nil {
				t.Fatal(err)
			}
		}
	}
	const others, own, page = 60_000, 5_000, 101
	deliver("b", []string{"b1", "b2"}, own) // b's rows are the oldest: a scan in id order meets them last
	deliver("a", []string{"a1"}, others)
	// Statistics as a new table has them (never analyzed): a page may read all of b's rows, never a's. Then
	// up to date: a page reads a page of each of b's destinations.
	for _, analyzed := range []bool{false, true} {
		bound := func(own, page float64) float64 {
			if analyzed {
				return page
			}
			return own
		}
		if analyzed {
			if _, err := s.pool.Exec(ctx, `ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		for _, st := range []store.Status{"", store.Delivered, store.Pending} {
			f := store.DeliveryFilter{Destinations: []string{"b1", "b2"}, Status: st, Limit: page}
			q, a, err := s.listDeliveriesQuery(f)
			if err != nil {
				t.Fatal(err)
			}
			// A page of each destination from each table, or all of b's rows.
			if read := rowsRead(t, s, "deliveries", q, a...) + rowsRead(t, s, "delivery_log", q, a...); read > bound(2*own, 2*2*page) {
				t.Errorf("analyzed %v: b's deliveries (status %q) read %.0f rows for a page of %d; b has %d", analyzed, st, read, page, 2*own)
			}
			got, err := s.ListDeliveries(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			want := map[store.Status]int{"": page, store.Delivered: page, store.Pending: 0}[st]
			if len(got) != want {
				t.Errorf("b's deliveries (status %q): %d, want %d", st, len(got), want)
			}
			for i, d := range got {
				if d.Destination != "b1" && d.Destination != "b2" || i > 0 && d.ID >= got[i-1].ID {
					t.Fatalf("b's deliveries (status %q): %+v at %d, want b's only, newest first", st, d, i)
				}
			}
		}
		// One event's deliveries: found through the event, whatever the destination holds.
		f := store.DeliveryFilter{Destinations: []string{"b1", "b2"}, EventID: "b4242", Limit: page}
		q, a, err := s.listDeliveriesQuery(f)
		if err != nil {
			t.Fatal(err)
		}
		if read := rowsRead(t, s, "deliveries", q, a...) + rowsRead(t, s, "delivery_log", q, a...); read > 2*2 {
			t.Errorf("analyzed %v: the deliveries of one of b's events read %.0f rows", analyzed, read)
		}
		if got, err := s.ListDeliveries(ctx, f); err != nil || len(got) != 2 || got[0].EventID != "b4242" || got[1].EventID != "b4242" {
			t.Errorf("the deliveries of one of b's events: %+v, %v", got, err)
		}
		// One event's deliveries, as an event's record reads them: a range of ids in each table.
		var seq int64
		if err := s.pool.QueryRow(ctx, `SELECT seq FROM events WHERE tenant = 'b' AND id = 'b4242'`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		if read := rowsRead(t, s, "deliveries", s.deliveriesOfSQL(), []int64{seq}) + rowsRead(t, s, "delivery_log", s.deliveriesOfSQL(), []int64{seq}); read != 2 {
			t.Errorf("analyzed %v: the deliveries of one of b's events by seq read %.0f rows, want its 2", analyzed, read)
		}
		// One event by its id, as a tenant asks for it.
		if read := rowsRead(t, s, "events", eventSQL, "b4242", "b"); read > 2 {
			t.Errorf("analyzed %v: one of b's events by id read %.0f rows", analyzed, read)
		}
		q, a = listEventsQuery(store.EventFilter{Tenant: "b", TenantSet: true, Topic: "case.updated", Limit: page})
		if read := rowsRead(t, s, "events", q, a...); read > bound(own, 2*page) {
			t.Errorf("analyzed %v: b's events of a topic read %.0f rows for a page of %d; b has %d", analyzed, read, page, own)
		}
	}
}
