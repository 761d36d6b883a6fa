package postgres

import (
	"context"
	"fmt"
)

// Finished deliveries live in delivery_log (migration 0005), partitioned by day like events, so deliveries
// holds what is still to do (pending rows) and stays small whatever the retention: vacuum keeps up with it and
// the claim scans never wade through history. A completion that finishes a delivery moves it there in its own
// statement (completeSQL); the leader moves, in small batches, the finished rows other writes leave behind
// (born skipped at intake, SkipPending, rows finished before the migration). A failed delivery with an
// ordering key stays in deliveries: Claim looks there for what holds a key back under on_failure: block.
// Every read of deliveries reads both tables; Retry and Replay move a logged delivery back, pending.

// logCols are the columns deliveries and delivery_log share, in one order for moves either way.
const logCols = `id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, last_error,
	ordering_key, ordering_block, retry_base, test`

// movablePred is the predicate of the index deliveries_movable, word for word (the planner matches it as text):
// the finished rows that belong in the log.
const movablePred = `(status = 'delivered' OR status = 'skipped' OR (status = 'failed' AND ordering_key = ''))`

// moveBatch bounds one transaction of the leader's mover; moveRounds bounds how many it runs per tick, so
// the other maintenance is never starved by a backlog (it goes on at the next tick).
const (
	moveBatch  = 2000
	moveRounds = 50
)

// moveFinished moves finished rows left in deliveries to delivery_log, oldest first, moveBatch rows per
// transaction, skipping rows another transaction holds (a Retry, a completion). Only rows of days the log has
// a partition for move: older ones belong to days retention dropped (cleanRetired deletes them). It returns
// how many rows moved.
func (s *Store) moveFinished(ctx context.Context) (int, error) {
	have, err := days(ctx, s.pool, "delivery_log")
	if err != nil || len(have) == 0 {
		return 0, err
	}
	lo, hi := have[0], have[len(have)-1]+dayNanos
	total := 0
	for range moveRounds {
		tag, err := s.pool.Exec(ctx, `WITH m AS (
			  SELECT id FROM deliveries WHERE `+movablePred+` AND created_at >= $1 AND created_at < $2
			  ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED),
			g AS (DELETE FROM deliveries d USING m WHERE d.id = m.id RETURNING `+prefixed("d.", logCols)+`)
			INSERT INTO delivery_log (`+logCols+`) SELECT `+logCols+` FROM g`, lo, hi, moveBatch)
		if err != nil {
			return total, fmt.Errorf("move finished deliveries to the log: %w", err)
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < moveBatch {
			break
		}
	}
	return total, nil
}
