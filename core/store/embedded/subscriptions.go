package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// Subscriptions are few and change rarely (once per run), so these go through plain statements rather than
// prepared ones; writes still share the group commit.

// PutSubscription implements store.Store.
func (s *Store) PutSubscription(ctx context.Context, sub store.Subscription) error {
	topics, err := json.Marshal(sub.Topics)
	if err != nil {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO subscriptions
			(name, correlation_id, tenant, url, topics, secret, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?)`,
			sub.Name, sub.CorrelationID, sub.Tenant, sub.URL, topics, sub.Secret, nanos(sub.CreatedAt), nanos(sub.ExpiresAt))
		if err != nil {
			return fmt.Errorf("store subscription: %w", err)
		}
		return nil
	})
}

// Subscriptions implements store.Store.
func (s *Store) Subscriptions(ctx context.Context) ([]store.Subscription, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, correlation_id, tenant, url, topics, secret, created_at, expires_at
		FROM subscriptions ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	defer rows.Close()
	var out []store.Subscription
	for rows.Next() {
		var sub store.Subscription
		var topics []byte
		var created, expires int64
		if err := rows.Scan(&sub.Name, &sub.CorrelationID, &sub.Tenant, &sub.URL, &topics, &sub.Secret, &created, &expires); err != nil {
			return nil, fmt.Errorf("read subscriptions: %w", err)
		}
		if err := json.Unmarshal(topics, &sub.Topics); err != nil {
			return nil, fmt.Errorf("read subscription %s: topics: %w", sub.Name, err)
		}
		sub.CreatedAt, sub.ExpiresAt = fromNanos(created), fromNanos(expires)
		out = append(out, sub)
	}
	return out, rows.Err()
}

// DeleteSubscription implements store.Store.
func (s *Store) DeleteSubscription(ctx context.Context, name string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE name = ?`, name); err != nil {
			return fmt.Errorf("delete subscription: %w", err)
		}
		return nil
	})
}

var _ store.DueFinder = (*Store)(nil)

// Due implements store.DueFinder: one query over the pending index for every destination asked about.
func (s *Store) Due(ctx context.Context, destinations []string, now time.Time) ([]string, error) {
	out := []string{}
	if len(destinations) == 0 {
		return out, nil
	}
	names, err := json.Marshal(destinations)
	if err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT DISTINCT n.value FROM json_each(?) n
		WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.destination = n.value AND d.status = 'pending' AND d.next_at <= ?)`,
		string(names), nanos(now))
	if err != nil {
		return nil, fmt.Errorf("find destinations with due deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("find destinations with due deliveries: %w", err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find destinations with due deliveries: %w", err)
	}
	// Deferred deliveries whose lease ended (deferred.go) are due too.
	for _, name := range s.deferred.expired(destinations, nanos(now)) {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}
