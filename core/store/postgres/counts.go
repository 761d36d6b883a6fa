package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

type shardKey struct{}

// withShard marks ctx as running in the writer whose counter shard is shard.
func withShard(ctx context.Context, shard int64) context.Context {
	return context.WithValue(ctx, shardKey{}, shard)
}

// counts collects one operation's changes to the number of pending deliveries per destination.
type counts map[string]int64

func (c counts) add(dest string, n int64) {
	if n != 0 {
		c[dest] += n
	}
}

// apply adds the changes to this writer's counter rows, in the operation's transaction.
func (c counts) apply(ctx context.Context, tx pgx.Tx) error {
	if len(c) == 0 {
		return nil
	}
	shard, _ := ctx.Value(shardKey{}).(int64)
	dests, ns := make([]string, 0, len(c)), make([]int64, 0, len(c))
	for d, n := range c {
		if n != 0 {
			dests, ns = append(dests, d), append(ns, n)
		}
	}
	if len(dests) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pending_counts (destination, shard, n)
		SELECT d, $3, n FROM unnest($1::text[], $2::bigint[]) AS u(d, n)
		ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n`, dests, ns, shard); err != nil {
		return fmt.Errorf("count pending deliveries: %w", err)
	}
	return nil
}

// foldCounts moves every shard's count into shard 0 and drops the zeros (the leader runs it now and then).
func (s *Store) foldCounts(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `WITH gone AS (DELETE FROM pending_counts WHERE shard <> 0 RETURNING destination, n)
			INSERT INTO pending_counts (destination, shard, n) SELECT destination, 0, sum(n) FROM gone GROUP BY destination
			ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM pending_counts WHERE shard = 0 AND n = 0`)
		return err
	})
}
