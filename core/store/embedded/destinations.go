package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/core/store"
)

// API destinations and destination states are few and change rarely, so, like subscriptions, they use plain
// statements; writes still share the group commit.

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
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// A refusal is reported beside the op, not as its failure, so it does not roll back the commit it
		// shares with others (see Store.commit).
		refused = nil
		var other string
		err := tx.QueryRowContext(ctx, `SELECT id FROM destinations WHERE name = ? AND tenant = ? AND id != ?`, d.Name, d.Tenant, d.ID).Scan(&other)
		if err == nil {
			refused = fmt.Errorf("destination name %q is already used by destination %s: %w", d.Name, other, store.ErrConflict)
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
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
		_, err = tx.ExecContext(ctx, `INSERT INTO destinations (id, name, tenant, type, spec, retiring, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?,?)
			ON CONFLICT(id) DO UPDATE SET name = excluded.name, tenant = excluded.tenant, type = excluded.type,
				spec = excluded.spec, retiring = excluded.retiring, updated_at = excluded.updated_at,
				created_at = CASE WHEN ? THEN destinations.created_at ELSE excluded.created_at END`,
			d.ID, d.Name, d.Tenant, d.Type, d.Spec, retiring, created, updated, keepCreated)
		if err != nil {
			return fmt.Errorf("store destination %s: %w", d.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return refused
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// DeleteDestination implements store.Store.
func (s *Store) DeleteDestination(ctx context.Context, id string) error {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, `DELETE FROM destinations WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("delete destination %s: %w", id, err)
		}
		n, _ = r.RowsAffected()
		return nil
	})
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
	rows, err := s.rdb.QueryContext(ctx, `SELECT id, name, tenant, type, spec, retiring, created_at, updated_at
		FROM destinations ORDER BY created_at, rowid`)
	if err != nil {
		return nil, fmt.Errorf("read destinations: %w", err)
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
		return nil, fmt.Errorf("read destinations: %w", err)
	}
	return out, nil
}

// SetDestinationState implements store.Store.
func (s *Store) SetDestinationState(ctx context.Context, st store.DestinationState) error {
	if st.Name == "" {
		return errors.New("store destination state: name is required")
	}
	enabled := boolInt(st.Enabled)
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		updated := nanos(st.UpdatedAt)
		if updated == 0 {
			updated = nanos(s.opts.Now())
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO destination_states (name, enabled, reason, updated_at)
			VALUES (?,?,?,?)`, st.Name, enabled, st.Reason, updated); err != nil {
			return fmt.Errorf("store state of destination %s: %w", st.Name, err)
		}
		return nil
	})
}

// DestinationStates implements store.Store.
func (s *Store) DestinationStates(ctx context.Context) ([]store.DestinationState, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, enabled, reason, updated_at FROM destination_states ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read destination states: %w", err)
	}
	defer rows.Close()
	var out []store.DestinationState
	for rows.Next() {
		var st store.DestinationState
		var enabled int
		var updated int64
		if err := rows.Scan(&st.Name, &enabled, &st.Reason, &updated); err != nil {
			return nil, fmt.Errorf("read destination states: %w", err)
		}
		st.Enabled, st.UpdatedAt = enabled != 0, fromNanos(updated)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read destination states: %w", err)
	}
	return out, nil
}

// DeleteDestinationState implements store.Store.
func (s *Store) DeleteDestinationState(ctx context.Context, name string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM destination_states WHERE name = ?`, name); err != nil {
			return fmt.Errorf("delete state of destination %s: %w", name, err)
		}
		return nil
	})
}
