package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/store"
)

var _ store.Watcher = (*Store)(nil)

// changeHub fans "something changed on another node" out to the Changes channels.
type changeHub struct {
	mu   sync.Mutex
	seen int64 // the change version last read
	subs map[chan struct{}]bool
}

func (h *changeHub) fire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs {
		select {
		case c <- struct{}{}:
		default: // a signal is pending already; one is enough
		}
	}
}

// Changes implements store.Watcher: the channel receives after other nodes changed destinations, their states
// or subscriptions (within about Options.Poll even when a notification is lost). It closes when ctx ends.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	c := make(chan struct{}, 1)
	s.changes.mu.Lock()
	s.changes.subs[c] = true
	s.changes.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closed:
		}
		s.changes.mu.Lock()
		delete(s.changes.subs, c)
		s.changes.mu.Unlock()
	}()
	return c
}

// notify sends the change hint. It runs after the commit; a lost hint is made up for by polling.
func (s *Store) notify() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, s.node); err != nil {
		s.opts.Logger.Debug("store: send change hint; other nodes learn of it by polling", "err", err)
	}
}

// watch listens for change hints on one dedicated connection and reads the change version every
// Options.Poll, firing the hub when another node changed something.
func (s *Store) watch(ctx context.Context, schema string) {
	defer s.wg.Done()
	hints := make(chan struct{}, 1)
	go s.listen(ctx, hints)
	tick := time.NewTicker(s.opts.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hints:
		case <-tick.C:
		}
		var v int64
		if err := s.pool.QueryRow(ctx, `SELECT version FROM changes`).Scan(&v); err != nil {
			continue
		}
		s.changes.mu.Lock()
		changed := v != s.changes.seen
		s.changes.seen = v
		s.changes.mu.Unlock()
		if changed {
			s.changes.fire()
		}
	}
}

// listen holds the LISTEN connection, reconnecting after a failure; each hint from another node is passed on.
func (s *Store) listen(ctx context.Context, hints chan<- struct{}) {
	for ctx.Err() == nil {
		err := func() error {
			// A connection of its own, not the pool's: it stays in LISTEN until it breaks.
			c, err := s.dedicated(ctx)
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			if _, err := c.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
				return err
			}
			for {
				n, err := c.WaitForNotification(ctx)
				if err != nil {
					return err
				}
				if n.Payload == s.node {
					continue
				}
				select {
				case hints <- struct{}{}:
				default:
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		s.opts.Logger.Debug("store: change listener stopped; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

var _ store.DueFinder = (*Store)(nil)

// Due implements store.DueFinder: one query, an index probe per destination asked about (and one of fanouts'
// leases: an entry whose lease ran out is Claim's to take).
func (s *Store) Due(ctx context.Context, destinations []string, now time.Time) ([]string, error) {
	out := []string{}
	if len(destinations) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT n FROM unnest($1::text[]) AS n
		WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.destination = n AND d.status = 'pending' AND d.next_at <= $2)
		  OR EXISTS (SELECT 1 FROM fanout_deliveries f WHERE f.destination = n AND f.next_at <= $2)`,
		destinations, nanos(now))
	if err != nil {
		return nil, unavailable(fmt.Errorf("find destinations with due deliveries: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("find destinations with due deliveries: %w", err)
		}
		out = append(out, name)
	}
	return out, unavailable(rows.Err())
}
