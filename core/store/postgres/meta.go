package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/store"
)

// API destinations, destination states and subscriptions are few and change rarely. Each change bumps the
// change version in its transaction, and a hint is sent after the commit, so other nodes learn of it.

// bump records a change other nodes must learn of, in the change's own transaction.
func bump(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `UPDATE changes SET version = version + 1`)
	return err
}

// PutDestination implements store.Store.
func (s *Store) PutDestination(ctx context.Context, d store.DestinationRecord) error {
	if d.ID == "" || d.Name == "" {
		return fmt.Errorf("store destination: id and name are required (id %q, name %q)", d.ID, d.Name)
	}
	var retiring []byte
	if len(d.Retiring) > 0 {
		var err error
		if retiring, err = json.Marshal(d.Retiring); err != nil {
			return fmt.Errorf("store destination %s: retiring secrets: %w", d.Name, err)
		}
	}
	var refused error
	err := s.write(ctx, &op{changed: true, fn: func(ctx context.Context, tx pgx.Tx) error {
		refused = nil
		var other string
		err := tx.QueryRow(ctx, `SELECT id FROM destinations WHERE name = $1 AND id <> $2`, d.Name, d.ID).Scan(&other)
		if err == nil {
			refused = fmt.Errorf("destination name %q is already used by destination %s: %w", d.Name, other, store.ErrConflict)
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store destination %s: %w", d.Name, err)
		}
		now := nanos(s.opts.Now())
		created, updated := nanos(d.CreatedAt), nanos(d.UpdatedAt)
		keepCreated := created == 0
		if created == 0 {
			created = now
		}
		if updated == 0 {
			updated = now
		}
		// A replace that does not say when the destination was created keeps the stored creation time.
		_, err = tx.Exec(ctx, `INSERT INTO destinations (id, name, tenant, type, spec, retiring, created_at, updated_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, tenant = excluded.tenant, type = excluded.type,
				spec = excluded.spec, retiring = excluded.retiring, updated_at = excluded.updated_at,
				created_at = CASE WHEN $9 THEN destinations.created_at ELSE excluded.created_at END`,
			d.ID, d.Name, d.Tenant, d.Type, d.Spec, retiring, created, updated, keepCreated)
		if err != nil {
			return fmt.Errorf("store destination %s: %w", d.Name, err)
		}
		return bump(ctx, tx)
	}})
	if err != nil {
		return err
	}
	return refused
}

// DeleteDestination implements store.Store.
func (s *Store) DeleteDestination(ctx context.Context, id string) error {
	var n int64
	err := s.write(ctx, &op{changed: true, fn: func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM destinations WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("delete destination %s: %w", id, err)
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		return bump(ctx, tx)
	}})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("destination %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// Destinations implements store.Store.
func (s *Store) Destinations(ctx context.Context) ([]store.DestinationRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, tenant, type, spec, retiring, created_at, updated_at
		FROM destinations ORDER BY created_at, ord`)
	if err != nil {
		return nil, unavailable(fmt.Errorf("read destinations: %w", err))
	}
	defer rows.Close()
	var out []store.DestinationRecord
	for rows.Next() {
		var d store.DestinationRecord
		var retiring []byte
		var created, updated int64
		if err := rows.Scan(&d.ID, &d.Name, &d.Tenant, &d.Type, &d.Spec, &retiring, &created, &updated); err != nil {
			return nil, fmt.Errorf("read destinations: %w", err)
		}
		if len(retiring) > 0 {
			if err := json.Unmarshal(retiring, &d.Retiring); err != nil {
				return nil, fmt.Errorf("read destination %s: retiring secrets: %w", d.Name, err)
			}
		}
		d.CreatedAt, d.UpdatedAt = fromNanos(created), fromNanos(updated)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read destinations: %w", err))
	}
	return out, nil
}

// SetDestinationState implements store.Store.
func (s *Store) SetDestinationState(ctx context.Context, st store.DestinationState) error {
	if st.Name == "" {
		return errors.New("store destination state: name is required")
	}
	return s.write(ctx, &op{changed: true, fn: func(ctx context.Context, tx pgx.Tx) error {
		updated := nanos(st.UpdatedAt)
		if updated == 0 {
			updated = nanos(s.opts.Now())
		}
		if _, err := tx.Exec(ctx, `INSERT INTO destination_states (name, enabled, reason, updated_at) VALUES ($1,$2,$3,$4)
			ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason, updated_at = excluded.updated_at`,
			st.Name, st.Enabled, st.Reason, updated); err != nil {
			return fmt.Errorf("store state of destination %s: %w", st.Name, err)
		}
		return bump(ctx, tx)
	}})
}

// DestinationStates implements store.Store.
func (s *Store) DestinationStates(ctx context.Context) ([]store.DestinationState, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, enabled, reason, updated_at FROM destination_states ORDER BY name`)
	if err != nil {
		return nil, unavailable(fmt.Errorf("read destination states: %w", err))
	}
	defer rows.Close()
	var out []store.DestinationState
	for rows.Next() {
		var st store.DestinationState
		var updated int64
		if err := rows.Scan(&st.Name, &st.Enabled, &st.Reason, &updated); err != nil {
			return nil, fmt.Errorf("read destination states: %w", err)
		}
		st.UpdatedAt = fromNanos(updated)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read destination states: %w", err))
	}
	return out, nil
}

// DeleteDestinationState implements store.Store.
func (s *Store) DeleteDestinationState(ctx context.Context, name string) error {
	return s.write(ctx, &op{changed: true, fn: func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM destination_states WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete state of destination %s: %w", name, err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return bump(ctx, tx)
	}})
}

// PutSubscription implements store.Store.
func (s *Store) PutSubscription(ctx context.Context, sub store.Subscription) error {
	topics, err := json.Marshal(sub.Topics)
	if err != nil {
		return err
	}
	return s.write(ctx, &op{changed: true, fn: func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO subscriptions (name, correlation_id, tenant, url, topics, secret, created_at, expires_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
			ON CONFLICT (name) DO UPDATE SET correlation_id = excluded.correlation_id, tenant = excluded.tenant, url = excluded.url,
				topics = excluded.topics, secret = excluded.secret, created_at = excluded.created_at, expires_at = excluded.expires_at`,
			sub.Name, sub.CorrelationID, sub.Tenant, sub.URL, topics, sub.Secret, nanos(sub.CreatedAt), nanos(sub.ExpiresAt))
		if err != nil {
			return fmt.Errorf("store subscription: %w", err)
		}
		return bump(ctx, tx)
	}})
}

// Subscriptions implements store.Store.
func (s *Store) Subscriptions(ctx context.Context) ([]store.Subscription, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, correlation_id, tenant, url, topics, secret, created_at, expires_at
		FROM subscriptions ORDER BY created_at, name`)
	if err != nil {
		return nil, unavailable(fmt.Errorf("read subscriptions: %w", err))
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
	return out, unavailable(rows.Err())
}

// DeleteSubscription implements store.Store.
func (s *Store) DeleteSubscription(ctx context.Context, name string) error {
	return s.write(ctx, &op{changed: true, fn: func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM subscriptions WHERE name = $1`, name)
		if err != nil {
			return fmt.Errorf("delete subscription: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		return bump(ctx, tx)
	}})
}
