package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// updateOnlyCompleteSQL is the completion statement as it was before the delivery log (finished rows stay in
// deliveries): the baseline BenchmarkCompleteStatement compares completeSQL with.
const updateOnlyCompleteSQL = `WITH upd AS (
	  UPDATE deliveries d SET status = u.st, attempts = d.attempts + u.tried, next_at = u.nx,
	    leased = false, claim_token = 0, claim_node = 0, updated_at = $7, last_error = u.er
	  FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::bigint[]) AS u(id, st, tried, nx, er, tok)
	  WHERE d.id = u.id AND d.status = 'pending'
	    AND (d.claim_token = u.tok OR (u.tok = 0 AND (NOT d.leased OR d.next_at <= $7)))
	  RETURNING d.id, d.destination, d.status, d.created_at),
	cnt AS (
	  INSERT INTO pending_counts (destination, shard, n)
	  SELECT destination, $8, -count(*) FROM upd WHERE status <> 'pending' GROUP BY destination
	  ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n)
	INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response, received_at)
	SELECT a.id, a.n, a.at, a.us, a.code, a.er, a.resp, upd.created_at
	FROM unnest($9::bigint[], $10::int[], $11::bigint[], $12::bigint[], $13::int[], $14::text[], $15::bytea[])
	  AS a(id, n, at, us, code, er, resp)
	JOIN upd ON upd.id = a.id
	ON CONFLICT (delivery_id, n, received_at) DO UPDATE SET at = excluded.at, duration_us = excluded.duration_us,
		status_code = excluded.status_code, error = excluded.error, response = excluded.response`

// BenchmarkCompleteStatement measures PostgreSQL's side of completing a batch of 100 deliveries (one op), as
// the dispatcher batches them: "move" is completeSQL (finished rows move to the log in the statement),
// "update" the statement before the log, "update+mover" that plus the leader's later move of the same rows
// (the whole cost of moving them out of the hot table a tick later). Run the three interleaved
// (-bench 'CompleteStatement/(move|update)$' alternately, -count 1) on a busy machine.
func BenchmarkCompleteStatement(b *testing.B) {
	for _, mode := range []string{"move", "update", "update+mover"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			dsn, schema := testSchema(b)
			noLeader(b, dsn, schema) // the mover runs only where the mode says
			s := openNode(b, dsn, schema, nil)
			sql := completeSQL
			if mode != "move" {
				sql = updateOnlyCompleteSQL
			}
			const batch = 100
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				evs := make([]store.NewEvent, batch)
				for j := range evs {
					evs[j] = store.NewEvent{Event: event.Event{ID: fmt.Sprint(i, "-", j), Topic: "t", Time: time.Now(),
						Data: []byte(`{"case":{"id":"c-1","status":"approved"}}`)}, Destinations: []string{"a"}}
				}
				res, err := s.Append(ctx, evs, appendOpts)
				if err != nil {
					b.Fatal(err)
				}
				ids, sts, nexts, toks := make([]int64, batch), make([]string, batch), make([]int64, batch), make([]int64, batch)
				errs, tried, ns, codes := make([]string, batch), make([]int32, batch), make([]int32, batch), make([]int32, batch)
				ats, us, resp := make([]int64, batch), make([]int64, batch), make([][]byte, batch)
				now := time.Now().UnixNano()
				for j, r := range res {
					ids[j], sts[j], tried[j], ns[j], codes[j], ats[j], us[j] = r.Deliveries[0].ID, "delivered", 1, 1, 200, now, 1500
				}
				b.StartTimer()
				args := []any{ids, sts, tried, nexts, errs, toks, now, int64(0)}
				if mode == "move" {
					args = append(args, ns, ats, us, codes, resp) // each outcome's attempt, aligned with ids
				} else {
					args = append(args, ids, ns, ats, us, codes, errs, resp)
				}
				if _, err := s.pool.Exec(ctx, sql, args...); err != nil {
					b.Fatal(err)
				}
				if mode == "update+mover" {
					if _, err := s.moveFinished(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
