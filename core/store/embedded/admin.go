package embedded

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// The admin reads below run on the read-only pool, never on the writer, so a slow list cannot delay intake.
// Their plans are pinned with INDEXED BY / NOT INDEXED: the database has no statistics (no ANALYZE), and a
// planner that picked an index on another key for a filtered list would sort the whole range it matched
// before applying the LIMIT. Walking an index whose key ends in seq/id backwards stops after Limit matches
// instead.

const (
	defaultListLimit = 100
	maxListLimit     = 1001 // the API pages at most 1000 and asks for one more to see whether a next page exists
	// replayBatch bounds how many deliveries one Replay write transaction requeues, so intake waits at most
	// one small transaction behind it.
	replayBatch = 500
	// defaultPruneBatch is used when Prune is called with a limit <= 0.
	defaultPruneBatch = 500
)

func listLimit(n int) int {
	if n <= 0 {
		return defaultListLimit
	}
	return min(n, maxListLimit)
}

// statusLiteral returns status as a SQL literal. Statuses are inlined rather than bound so SQLite can match
// them against the WHERE clause of a partial index (it does not do so for bound parameters).
func statusLiteral(st store.Status) (string, error) {
	switch st {
	case store.Pending, store.Delivered, store.Failed, store.Skipped:
		return "'" + string(st) + "'", nil
	}
	return "", fmt.Errorf("unknown delivery status %q (want pending, delivered, failed or skipped)", st)
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.EventSummary, error) {
	var where []string
	var args []any
	index := "NOT INDEXED" // walk the table itself (seq is the rowid), newest first
	if f.Topic != "" {
		where, args = append(where, "topic = ?"), append(args, f.Topic)
		index = "INDEXED BY events_topic"
	}
	if f.TenantSet {
		where, args = append(where, "tenant = ?"), append(args, f.Tenant)
		if f.Tenant != "" && f.Topic == "" {
			// The literal term lets SQLite use the partial index (its WHERE is tenant != '').
			where = append(where, "tenant != ''")
			index = "INDEXED BY events_tenant"
		}
	}
	if !f.Since.IsZero() {
		where, args = append(where, "received_at >= ?"), append(args, nanos(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "received_at < ?"), append(args, nanos(f.Until))
	}
	if f.Before > 0 {
		where, args = append(where, "seq < ?"), append(args, f.Before)
	}
	q := `SELECT seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data FROM events ` + index
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, listLimit(f.Limit))
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	out := []store.EventSummary{}
	for rows.Next() {
		var e store.EventSummary
		var t, received int64
		var md, sc, data []byte
		ev := &e.Event
		if err := rows.Scan(&e.Seq, &ev.ID, &ev.Topic, &ev.Tenant, &t, &received, &ev.CorrelationID, &md, &sc, &data); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		ev.Time, e.ReceivedAt = fromNanos(t), fromNanos(received)
		ev.Metadata, ev.Scope, ev.Data = unmarshalMap(md), unmarshalMap(sc), data
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// ListDeliveries implements store.Store.
//
// Several destinations are listed with one query each, merged here: each query walks deliveries_dest
// backwards and stops after Limit rows, whereas one "destination IN (...) ORDER BY id" would read every row
// of those destinations to sort them.
func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.Delivery, error) {
	limit := listLimit(f.Limit)
	if f.Destinations != nil && len(f.Destinations) == 0 {
		return []store.Delivery{}, nil
	}
	// Deferred deliveries are pending: a list that could show them gets their rows first.
	if f.Status == "" || f.Status == store.Pending {
		since, until := nanos(f.Since), nanos(f.Until)
		match := func(r deferredRow) bool {
			return (f.EventID == "" || r.eventID == f.EventID) &&
				(f.Destinations == nil || slices.Contains(f.Destinations, r.dest)) &&
				(f.Before <= 0 || r.id < f.Before) &&
				(f.Since.IsZero() || r.created >= since) && (f.Until.IsZero() || r.created < until)
		}
		keep := match
		if f.Status == "" {
			// A page holds the limit newest matches, so only the limit newest deferred ones can be among
			// them: with those written, every older deferred match has a page's worth of newer matches
			// before it, which stay matches whatever becomes of them. (Listing pending ones, a written row
			// that completes meanwhile stops matching: then all are written.) A console left open on the
			// list writes a page's worth per load, not everything in flight.
			if newest, ok := s.deferred.newest(match, limit); ok {
				keep = func(r deferredRow) bool { return r.id >= newest && match(r) }
			}
		}
		if err := s.settle(ctx, keep); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
	}
	var where []string
	var args []any
	index := "NOT INDEXED" // walk the table itself (id is the rowid), newest first
	if f.Status != "" {
		lit, err := statusLiteral(f.Status)
		if err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		where = append(where, "status = "+lit)
		if f.Status == store.Failed {
			index = "INDEXED BY deliveries_failed"
		}
	}
	if !f.Since.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, nanos(f.Since))
	}
	if !f.Until.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, nanos(f.Until))
	}
	if f.Before > 0 {
		where, args = append(where, "id < ?"), append(args, f.Before)
	}
	query := func(index string, where []string, args []any) ([]store.Delivery, error) {
		q := `SELECT ` + deliveryCols + ` FROM deliveries ` + index
		if len(where) > 0 {
			q += ` WHERE ` + strings.Join(where, " AND ")
		}
		q += ` ORDER BY id DESC LIMIT ?`
		rows, err := s.rdb.QueryContext(ctx, q, append(args, limit)...)
		if err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		defer rows.Close()
		var out []store.Delivery
		for rows.Next() {
			d, err := scanDelivery(rows)
			if err != nil {
				return nil, fmt.Errorf("list deliveries: %w", err)
			}
			out = append(out, d)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		return out, nil
	}

	if f.EventID != "" {
		// An event has a handful of deliveries: find them by the id range its row keeps (one event per tenant
		// that used the id), filter the rest.
		if f.Destinations != nil {
			where = append(where, "destination IN ("+placeholders(len(f.Destinations))+")")
			for _, d := range f.Destinations {
				args = append(args, d)
			}
		}
		rows, err := s.rdb.QueryContext(ctx, `SELECT seq, dfirst, dlast FROM events WHERE id = ? AND dfirst IS NOT NULL`, f.EventID)
		if err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		var ranges [][3]int64
		for rows.Next() {
			var r [3]int64
			if err := rows.Scan(&r[0], &r[1], &r[2]); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list deliveries: %w", err)
			}
			ranges = append(ranges, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		var out []store.Delivery
		for _, r := range ranges {
			// NOT INDEXED: the rowid range, not an index a status or destination term might suggest.
			ds, err := query("NOT INDEXED", append([]string{"id BETWEEN ? AND ? AND event_seq = ?"}, where...),
				append([]any{r[1], r[2], r[0]}, args...))
			if err != nil {
				return nil, err
			}
			out = append(out, ds...)
		}
		return newestFirst(out, limit), nil
	}
	if f.Destinations == nil {
		out, err := query(index, where, args)
		return nonNil(out), err
	}
	var out []store.Delivery
	seen := map[string]bool{}
	for _, dest := range f.Destinations {
		if seen[dest] {
			continue
		}
		seen[dest] = true
		ds, err := query("INDEXED BY deliveries_dest", append([]string{"destination = ?"}, where...), append([]any{dest}, args...))
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return newestFirst(out, limit), nil
}

// newestFirst orders deliveries gathered by several queries newest first and keeps a page of limit.
func newestFirst(out []store.Delivery, limit int) []store.Delivery {
	slices.SortFunc(out, func(a, b store.Delivery) int { return cmp.Compare(b.ID, a.ID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return nonNil(out)
}

func nonNil(ds []store.Delivery) []store.Delivery {
	if ds == nil {
		return []store.Delivery{}
	}
	return ds
}

// Delivery implements store.Store.
func (s *Store) Delivery(ctx context.Context, id int64) (*store.DeliveryRecord, error) {
	if err := s.settle(ctx, func(r deferredRow) bool { return r.id == id }); err != nil {
		return nil, fmt.Errorf("read delivery %d: %w", id, err)
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var a1 attempt1
	d, err := scanDelivery(tx.QueryRowContext(ctx, `SELECT `+deliveryCols+`, `+attempt1Cols+` FROM deliveries WHERE id = ?`, id),
		a1.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("delivery %d: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read delivery %d: %w", id, err)
	}
	rec := &store.DeliveryRecord{Delivery: d, AttemptLog: a1.log(d.ID)}
	rows, err := tx.QueryContext(ctx, `SELECT delivery_id, n, at, duration_us, status_code, error, response FROM attempts
		WHERE delivery_id = ? ORDER BY n`, id)
	if err != nil {
		return nil, fmt.Errorf("read attempts of delivery %d: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var a store.Attempt
		var at, us int64
		if err := rows.Scan(&a.DeliveryID, &a.N, &at, &us, &a.StatusCode, &a.Error, &a.Response); err != nil {
			return nil, fmt.Errorf("read attempts of delivery %d: %w", id, err)
		}
		a.At, a.Duration = fromNanos(at), time.Duration(us)*time.Microsecond
		addAttempt(rec, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read attempts of delivery %d: %w", id, err)
	}
	return rec, nil
}

// Retry implements store.Store.
func (s *Store) Retry(ctx context.Context, id int64, now time.Time) (store.Delivery, error) {
	var d store.Delivery
	var refused error
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// The op may run twice (see commit): start from scratch. A refusal is not an op failure: returning it
		// would roll back the neighbours sharing this commit only to run them again.
		d, refused = store.Delivery{}, nil
		if s.deferred.holds(id) { // pending and leased: its first attempt is under way
			refused = fmt.Errorf("delivery %d is being attempted right now: %w", id, store.ErrConflict)
			return nil
		}
		var status string
		var leased int
		err := tx.QueryRowContext(ctx, `SELECT status, leased FROM deliveries WHERE id = ?`, id).Scan(&status, &leased)
		if errors.Is(err, sql.ErrNoRows) {
			refused = fmt.Errorf("delivery %d: %w", id, store.ErrNotFound)
			return nil
		}
		if err != nil {
			return fmt.Errorf("retry delivery %d: %w", id, err)
		}
		if store.Status(status) == store.Pending && leased != 0 {
			refused = fmt.Errorf("delivery %d is being attempted right now: %w", id, store.ErrConflict)
			return nil
		}
		d, err = scanDelivery(tx.QueryRowContext(ctx, `UPDATE deliveries SET status = 'pending', next_at = ?, leased = 0,
			retry_base = attempts, updated_at = ? WHERE id = ? RETURNING `+deliveryCols, nanos(now), nanos(s.opts.Now()), id))
		if err != nil {
			return fmt.Errorf("retry delivery %d: %w", id, err)
		}
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return store.Delivery{}, err
	}
	return d, nil
}

// Replay implements store.Store.
//
// Each batch is chosen on the read pool (walking the destination's deliveries by id, forwards from a cursor)
// and requeued in its own write transaction, which checks the status again: whatever happened in between, a
// pending delivery is never touched. Deliveries appended meanwhile are pending, so they are never selected.
func (s *Store) Replay(ctx context.Context, f store.ReplayFilter, now time.Time) (int, error) {
	var lits []string
	for _, st := range f.Statuses {
		lit, err := statusLiteral(st)
		if err != nil {
			return 0, fmt.Errorf("replay: %w", err)
		}
		if st != store.Pending && !slices.Contains(lits, lit) {
			lits = append(lits, lit)
		}
	}
	if len(f.Statuses) == 0 {
		lits = []string{"'delivered'", "'failed'", "'skipped'"}
	}
	if len(lits) == 0 {
		return 0, nil // only pending was asked for, and pending is never touched
	}
	statusIn := "status IN (" + strings.Join(lits, ",") + ")"
	sel := `SELECT id FROM deliveries INDEXED BY deliveries_dest WHERE destination = ? AND id > ? AND ` + statusIn
	var bounds []any
	if !f.Since.IsZero() {
		sel += ` AND created_at >= ?`
		bounds = append(bounds, nanos(f.Since))
	}
	if !f.Until.IsZero() {
		sel += ` AND created_at < ?`
		bounds = append(bounds, nanos(f.Until))
	}
	sel += ` ORDER BY id LIMIT ?`

	total := 0
	var cursor int64
	for {
		args := append(append([]any{f.Destination, cursor}, bounds...), replayBatch)
		rows, err := s.rdb.QueryContext(ctx, sel, args...)
		if err != nil {
			return total, fmt.Errorf("replay %s: %w", f.Destination, err)
		}
		var ids []any
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return total, fmt.Errorf("replay %s: %w", f.Destination, err)
			}
			ids, cursor = append(ids, id), id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("replay %s: %w", f.Destination, err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		var n int64
		err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			r, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', next_at = ?, leased = 0,
				retry_base = attempts, updated_at = ? WHERE id IN (`+placeholders(len(ids))+`) AND `+statusIn,
				append([]any{nanos(now), nanos(s.opts.Now())}, ids...)...)
			if err != nil {
				return fmt.Errorf("replay %s: %w", f.Destination, err)
			}
			n, _ = r.RowsAffected()
			return nil
		})
		if err != nil {
			return total, err
		}
		total += int(n)
		if len(ids) < replayBatch {
			return total, nil
		}
	}
}

// Prune implements store.Store.
//
// The oldest events are found on the read pool by walking events in seq order (deleted rows leave the table,
// so each call starts at the oldest survivor) below a bound found by pruneBound; each is checked against
// cutoff itself. The write transaction deletes only those that still have no pending delivery, so a retry or
// replay that raced the read keeps its event.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = defaultPruneBatch
	}
	bound, err := s.pruneBound(ctx, nanos(cutoff), nanos(s.opts.Now()))
	if err != nil {
		return 0, fmt.Errorf("prune: find old events: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT seq FROM events WHERE seq < ? AND received_at < ?
		AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE `+pendingOfEvent+`)
		ORDER BY seq LIMIT ?`, bound, nanos(cutoff), limit)
	if err != nil {
		return 0, fmt.Errorf("prune: find old events: %w", err)
	}
	var seqs []any
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return 0, fmt.Errorf("prune: find old events: %w", err)
		}
		seqs = append(seqs, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("prune: find old events: %w", err)
	}
	if len(seqs) == 0 {
		return 0, nil
	}
	chosen := make(map[int64]bool, len(seqs))
	for _, seq := range seqs {
		chosen[seq.(int64)] = true
	}
	var n int
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		// A deferred delivery is pending: its row keeps its event.
		if err := s.writeDeferred(ctx, tx, func(r deferredRow) bool { return chosen[r.seq] }); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM events WHERE seq IN (`+placeholders(len(seqs))+`)
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE `+pendingOfEvent+`)
			RETURNING seq, dfirst, dlast`, seqs...)
		if err != nil {
			return fmt.Errorf("prune: delete events: %w", err)
		}
		var ranges []any // (dfirst, dlast, seq) of each deleted event with deliveries
		for rows.Next() {
			var seq int64
			var first, last sql.NullInt64
			if err := rows.Scan(&seq, &first, &last); err != nil {
				rows.Close()
				return fmt.Errorf("prune: delete events: %w", err)
			}
			n++
			if first.Valid {
				ranges = append(ranges, first.Int64, last.Int64, seq)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("prune: delete events: %w", err)
		}
		if len(ranges) == 0 {
			return nil
		}
		// The deleted events' deliveries, by their id ranges (and event, for rows an earlier version wrote).
		delAttempts, err := tx.PrepareContext(ctx, `DELETE FROM attempts WHERE delivery_id IN
			(SELECT id FROM deliveries WHERE `+ofEvent+`)`)
		if err != nil {
			return fmt.Errorf("prune: delete attempts: %w", err)
		}
		defer delAttempts.Close()
		delDeliveries, err := tx.PrepareContext(ctx, `DELETE FROM deliveries WHERE `+ofEvent)
		if err != nil {
			return fmt.Errorf("prune: delete deliveries: %w", err)
		}
		defer delDeliveries.Close()
		for i := 0; i < len(ranges); i += 3 {
			if _, err := delAttempts.ExecContext(ctx, ranges[i:i+3]...); err != nil {
				return fmt.Errorf("prune: delete attempts: %w", err)
			}
			if _, err := delDeliveries.ExecContext(ctx, ranges[i:i+3]...); err != nil {
				return fmt.Errorf("prune: delete deliveries: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// pruneBound returns the seq below which Prune looks for events received before cutoff: the first seq from
// which events were received at or after it, found by bisection over seq (a seek by rowid per step). The one
// writer stamps events as it appends them, so received_at grows with seq, but for clock steps. Those cost
// time, never an event: every event below the bound is still checked against cutoff, and one above it waits
// for a later call. An event stamped in the future (the clock ran ahead, then was set back) is passed over
// rather than taken for the bound, so it cannot hold back the days after it.
func (s *Store) pruneBound(ctx context.Context, cutoff, now int64) (int64, error) {
	var first, last sql.NullInt64
	if err := s.rdb.QueryRowContext(ctx, `SELECT min(seq), max(seq) FROM events`).Scan(&first, &last); err != nil {
		return 0, err
	}
	if !first.Valid {
		return 0, nil
	}
	lo, hi := first.Int64, last.Int64+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		var seq, received int64
		err := s.rdb.QueryRowContext(ctx, `SELECT seq, received_at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1`, mid).Scan(&seq, &received)
		if errors.Is(err, sql.ErrNoRows) {
			hi = mid // deleted meanwhile
			continue
		}
		if err != nil {
			return 0, err
		}
		if received < cutoff || received > now {
			lo = min(seq+1, hi)
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// pendingOfEvent matches a pending delivery d of the event in the outer query.
const pendingOfEvent = `d.id BETWEEN events.dfirst AND events.dlast AND d.event_seq = events.seq AND d.status = 'pending'`

// PendingCounts implements store.Store. It reads only deliveries_due, which holds pending rows alone, and adds
// the deferred deliveries, which are pending too.
func (s *Store) PendingCounts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT destination, count(*) FROM deliveries INDEXED BY deliveries_due
		WHERE status = 'pending' GROUP BY destination`)
	if err != nil {
		return nil, fmt.Errorf("count pending deliveries: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var dest string
		var n int64
		if err := rows.Scan(&dest, &n); err != nil {
			return nil, fmt.Errorf("count pending deliveries: %w", err)
		}
		out[dest] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count pending deliveries: %w", err)
	}
	s.deferred.counts(out)
	return out, nil
}
