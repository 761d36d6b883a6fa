package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/core/store"
)

// Events and attempts are range partitions by day of the event's received_at (migration 0004). Partitions
// are made ahead (premakeDays past today) by the leader and at start; retention (Prune) detaches a day that
// lies wholly before its cutoff, once none of that day's deliveries is pending, and drops it: a detach made
// CONCURRENTLY takes no lock intake waits on. A day with a pending delivery is kept whole (its finished
// events go row by row, as Prune's contract says), and dropped once its last pending delivery ends.

var _ store.Partitioned = (*Store)(nil)

const (
	dayNanos = int64(24 * time.Hour)
	// premakeDays is how many days past today have their partitions ready.
	premakeDays = 2
	// cleanBatch bounds one transaction deleting the deliveries (or event ids) of a dropped day.
	cleanBatch = 2000
)

// partitioned are the tables partitioned by day: a day of each is made, detached and dropped together.
var partitioned = []string{"events", "attempts", "delivery_log"}

// partitionLock serialises partition DDL (per schema) between nodes and between the leader and intake.
const partitionLock = `SELECT pg_advisory_xact_lock(hashtext('sluice.partitions.' || current_schema()))`

func dayStart(n int64) int64 { return n - ((n%dayNanos)+dayNanos)%dayNanos }

// PartitionFloor implements store.Partitioned: the start (UTC midnight) of the day t falls in.
func (s *Store) PartitionFloor(t time.Time) time.Time {
	return time.Unix(0, dayStart(t.UnixNano())).UTC()
}

func partitionName(table string, lo int64) string {
	return table + "_p" + time.Unix(0, lo).UTC().Format("20060102")
}

// days lists the days (their start) of table's partitions, oldest first.
func days(ctx context.Context, q querier, table string) ([]int64, error) {
	rows, err := q.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass AND NOT i.inhdetachpending ORDER BY c.relname`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		d, err := time.Parse("20060102", strings.TrimPrefix(name, table+"_p"))
		if err != nil {
			continue // not one of ours
		}
		out = append(out, d.UnixNano())
	}
	return out, rows.Err()
}

// premake makes the partitions of the days from..to (inclusive, by their start) that are missing. A new
// partition is made as a table of its own and attached: ATTACH PARTITION takes a lock on the parent that
// inserts do not wait on (CREATE TABLE … PARTITION OF would take one they do).
func (s *Store) premake(ctx context.Context, from, to time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, partitionLock); err != nil {
			return err
		}
		for _, table := range partitioned {
			have, err := days(ctx, tx, table)
			if err != nil {
				return fmt.Errorf("list partitions of %s: %w", table, err)
			}
			got := map[int64]bool{}
			for _, d := range have {
				got[d] = true
			}
			for lo := dayStart(nanos(from)); lo <= dayStart(nanos(to)); lo += dayNanos {
				if got[lo] {
					continue
				}
				name := pgx.Identifier{partitionName(table, lo)}.Sanitize()
				if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+name+` (LIKE `+table+` INCLUDING DEFAULTS)`); err != nil {
					return fmt.Errorf("make partition %s: %w", name, err)
				}
				if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%d) TO (%d)`,
					table, name, lo, lo+dayNanos)); err != nil {
					return fmt.Errorf("attach partition %s: %w", name, err)
				}
			}
		}
		return nil
	})
}

// premakeAround makes the partitions of today through premakeDays after it (by the store's clock).
func (s *Store) premakeAround(ctx context.Context) error {
	now := s.opts.Now()
	return s.premake(ctx, now, now.Add(premakeDays*24*time.Hour))
}

// noPartition reports whether err is an insert that found no partition for its row.
func noPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23514" && (pgErr.TableName == "events" || pgErr.TableName == "attempts" || pgErr.TableName == "delivery_log")
}

// finishDetaches completes detaches that a node dying halfway left pending.
func (s *Store) finishDetaches(ctx context.Context) error {
	for _, table := range partitioned {
		rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = $1::regclass AND i.inhdetachpending`, table)
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, n := range names {
			if _, err := s.pool.Exec(ctx, `ALTER TABLE `+table+` DETACH PARTITION `+pgx.Identifier{n}.Sanitize()+` FINALIZE`); err != nil {
				return fmt.Errorf("finish detaching %s: %w", n, err)
			}
		}
	}
	return nil
}

// dropDays drops the days wholly before cutoff none of whose deliveries is pending, and returns how many
// events went with them.
func (s *Store) dropDays(ctx context.Context, cutoff time.Time) (int, error) {
	if err := s.finishDetaches(ctx); err != nil {
		return 0, err
	}
	have, err := days(ctx, s.pool, "events")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, lo := range have {
		hi := lo + dayNanos
		if hi > nanos(cutoff) {
			break
		}
		n, err := s.dropDay(ctx, lo)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// held reports whether a delivery of the day starting at lo is pending, given the range of the seqs of the day's
// events (nil when it has none). A delivery is made with its event and takes its received_at as created_at, so
// the day's deliveries are among those of its events' seqs (a range of ids: idsOf), and the day's bounds
// leave out any other day's event whose seq falls in the range.
func (s *Store) held(ctx context.Context, lo int64, minSeq, maxSeq *int64) (bool, error) {
	if minSeq == nil {
		return false, nil
	}
	var held bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deliveries WHERE `+s.idsOf("", "$1::bigint", "$2::bigint")+`
		AND status = 'pending' AND created_at >= $3 AND created_at < $4)
		OR EXISTS (SELECT 1 FROM fanouts WHERE event_seq BETWEEN $1 AND $2 AND created_at >= $3 AND created_at < $4)`, *minSeq, *maxSeq, lo, lo+dayNanos).Scan(&held)
	return held, err
}

// seqs returns the lowest and highest seq of the events in table (nil when it holds none).
func (s *Store) seqs(ctx context.Context, table string) (minSeq, maxSeq *int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT min(seq), max(seq) FROM `+table).Scan(&minSeq, &maxSeq)
	return minSeq, maxSeq, err
}

// dropDay detaches and drops the events, attempts and delivery log partitions of the day starting at lo,
// unless one of the day's deliveries is pending, and returns how many events it held. Retry and Replay refuse a
// delivery whose event is no longer attached; one requeued before the detach is seen by the check made after
// it, and the day is attached again.
func (s *Store) dropDay(ctx context.Context, lo int64) (int, error) {
	ev := pgx.Identifier{partitionName("events", lo)}.Sanitize()
	minSeq, maxSeq, err := s.seqs(ctx, ev)
	if err != nil {
		return 0, err
	}
	if held, err := s.held(ctx, lo, minSeq, maxSeq); err != nil || held {
		return 0, err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	// Not in a transaction (CONCURRENTLY cannot be): the detach waits for the transactions using the table,
	// never the other way round. Events go first: once its event is detached a delivery can no longer be
	// requeued (nor its row moved back out of the log).
	var detached []string
	for _, table := range partitioned {
		name := partitionName(table, lo)
		var attached bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1)
			AND inhparent = $2::regclass)`, name, table).Scan(&attached); err != nil {
			s.reattach(ctx, lo)
			return 0, err
		}
		if !attached {
			continue // a day made before its table was partitioned (none should be): nothing to drop
		}
		id := pgx.Identifier{name}.Sanitize()
		if _, err := conn.Exec(ctx, `ALTER TABLE `+table+` DETACH PARTITION `+id+` CONCURRENTLY`); err != nil {
			s.reattach(ctx, lo)
			return 0, fmt.Errorf("detach %s: %w", id, err)
		}
		detached = append(detached, id)
	}
	// Detached, the day's events are fixed: their seqs are read again, so an event that came in since the first
	// look (a node whose clock lags by days) is counted too.
	if minSeq, maxSeq, err = s.seqs(ctx, ev); err != nil {
		s.reattach(ctx, lo)
		return 0, err
	}
	if held, err := s.held(ctx, lo, minSeq, maxSeq); err != nil || held {
		s.reattach(ctx, lo)
		return 0, err
	}
	var n int64
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+ev).Scan(&n); err != nil {
			return err
		}
		if minSeq != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO retired_days (lo, hi, min_seq, max_seq) VALUES ($1, $2, $3, $4)
				ON CONFLICT (lo) DO UPDATE SET min_seq = LEAST(retired_days.min_seq, excluded.min_seq),
					max_seq = GREATEST(retired_days.max_seq, excluded.max_seq)`, lo, lo+dayNanos, *minSeq, *maxSeq); err != nil {
				return err
			}
		}
		for _, id := range detached {
			if _, err := tx.Exec(ctx, `DROP TABLE `+id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.reattach(ctx, lo)
		return 0, fmt.Errorf("drop day %s: %w", ev, err)
	}
	return int(n), s.cleanRetired(ctx)
}

// reattach puts a detached day back (its drop was called off).
func (s *Store) reattach(ctx context.Context, lo int64) {
	ctx = context.WithoutCancel(ctx)
	for _, table := range partitioned {
		name := pgx.Identifier{partitionName(table, lo)}.Sanitize()
		_, err := s.pool.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%d) TO (%d)`, table, name, lo, lo+dayNanos))
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42P17" || pgErr.Code == "42809")) {
			s.opts.Logger.Error("store: put back a day's partition whose drop was called off", "partition", name, "err", err)
		}
	}
}

// cleanRetired deletes the deliveries and event ids of dropped days, cleanBatch rows per transaction, and
// forgets a day once nothing of it is left.
func (s *Store) cleanRetired(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT lo, hi, min_seq, max_seq FROM retired_days ORDER BY lo`)
	if err != nil {
		return err
	}
	type day struct{ lo, hi, minSeq, maxSeq int64 }
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (day, error) {
		var d day
		return d, r.Scan(&d.lo, &d.hi, &d.minSeq, &d.maxSeq)
	})
	if err != nil {
		return err
	}
	for _, d := range ds {
		for {
			// Deliveries of the day's events: created at the instant their event was received. None is pending
			// (the day was dropped only then, and a delivery whose event is gone cannot be requeued).
			tag, err := s.pool.Exec(ctx, `DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries
				WHERE `+s.idsOf("", "$1::bigint", "$2::bigint")+` AND created_at >= $3 AND created_at < $4 AND status <> 'pending' LIMIT $5)`,
				d.minSeq, d.maxSeq, d.lo, d.hi, cleanBatch)
			if err != nil {
				return fmt.Errorf("delete deliveries of a dropped day: %w", err)
			}
			if tag.RowsAffected() < cleanBatch {
				break
			}
		}
		for {
			tag, err := s.pool.Exec(ctx, `DELETE FROM event_ids WHERE (tenant, id) IN (SELECT tenant, id FROM event_ids
				WHERE received_at >= $1 AND received_at < $2 LIMIT $3)`, d.lo, d.hi, cleanBatch)
			if err != nil {
				return fmt.Errorf("delete event ids of a dropped day: %w", err)
			}
			if tag.RowsAffected() < cleanBatch {
				break
			}
		}
		if _, err := s.pool.Exec(ctx, `DELETE FROM retired_days WHERE lo = $1`, d.lo); err != nil {
			return err
		}
	}
	return nil
}
