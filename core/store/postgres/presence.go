package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// takePresence takes this node's presence lock (a session advisory lock keyed by its node id) on a connection
// of its own: while it is held, other nodes leave this node's leases alone at their start.
func (s *Store) takePresence(ctx context.Context) (*pgx.Conn, error) {
	c, err := s.dedicated(ctx)
	if err != nil {
		return nil, unavailable(fmt.Errorf("store: %w", err))
	}
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, s.nodeID); err != nil {
		c.Close(context.Background())
		return nil, unavailable(fmt.Errorf("store: take the presence lock: %w", err))
	}
	return c, nil
}

// keepPresence checks the presence connection and, when it broke (PostgreSQL restarted, a network cut), takes
// the lock again on a new one. Only this goroutine touches s.presence after Open (Close waits for it).
func (s *Store) keepPresence(ctx context.Context) {
	s.every(ctx, s.opts.LeaderEvery, func() {
		if s.presence != nil && ping(ctx, s.presence) == nil {
			return
		}
		if s.presence != nil {
			s.presence.Close(context.Background())
			s.presence = nil
		}
		c, err := s.takePresence(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Warn("store: presence lock lost; taking it again", "err", err)
			}
			return
		}
		s.presence = c
	})
}

// dedicated opens a connection outside the pool, for what holds one for the process's life (the presence
// lock, LISTEN, leadership): the pool's MaxConns stay for statements, and its warm connections stay in it.
func (s *Store) dedicated(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, s.connCfg)
}
