package postgres

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/store"
)

var _ store.Leader = (*Store)(nil)

// leader is whether this node holds the maintenance lock: a session advisory lock on a dedicated connection,
// so it goes with the node — when the process dies, its connection closes and another node takes it.
type leader struct {
	on atomic.Bool
}

// Leading implements store.Leader.
func (s *Store) Leading() bool { return s.leader.on.Load() }

// foldEvery is how often the leader folds the writers' counter shards together and makes the partitions of
// the days ahead.
const foldEvery = time.Minute

const leaderLock = `SELECT pg_try_advisory_lock(hashtext('sluice.leader.' || current_schema()))`

func (s *Store) lead(ctx context.Context) {
	defer s.wg.Done()
	defer s.leader.on.Store(false)
	tick := time.NewTicker(s.opts.LeaderEvery)
	defer tick.Stop()
	for ctx.Err() == nil {
		s.holdLead(ctx, tick.C)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// holdLead takes a connection, tries for the lock until it gets it, and holds it while the connection lives.
func (s *Store) holdLead(ctx context.Context, tick <-chan time.Time) {
	c, err := s.dedicated(ctx)
	if err != nil {
		return
	}
	defer c.Close(context.Background())
	defer s.leader.on.Store(false)
	for {
		var got bool
		if err := c.QueryRow(ctx, leaderLock).Scan(&got); err != nil {
			return
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
	s.leader.on.Store(true)
	s.opts.Logger.Info("store: this node runs maintenance (leader)")
	lastFold := time.Time{}
	for {
		if time.Since(lastFold) >= foldEvery {
			if err := s.foldCounts(ctx); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("store: fold pending counters", "err", err)
			}
			if err := s.premakeAround(ctx); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("store: make partitions ahead", "err", err)
			}
			lastFold = time.Now()
		}
		if _, err := s.moveFinished(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("store: move finished deliveries to the log", "err", err)
		}
		if _, err := s.vacuumChurned(ctx, c); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("store: vacuum the delivery queue (autovacuum is off)", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if err := ping(ctx, c); err != nil {
			s.opts.Logger.Warn("store: lost the leader connection", "err", err)
			return
		}
	}
}

func ping(ctx context.Context, c *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Ping(ctx)
}
