package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/store"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1001 // the API pages at most 1000 and asks for one more to see whether a next page exists
	// replayBatch bounds how many deliveries one Replay transaction requeues.
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

func checkStatus(st store.Status) error {
	switch st {
	case store.Pending, store.Delivered, store.Failed, store.Skipped:
		return nil
	}
	return fmt.Errorf("unknown delivery status %q (want pending, delivered, failed or skipped)", st)
}

// args collects query arguments and hands out their placeholders.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.EventSummary, error) {
	q, a := listEventsQuery(f)
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("list events: %w", err))
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
		return nil, unavailable(fmt.Errorf("list events: %w", err))
	}
	return out, nil
}

// listEventsQuery is ListEvents' statement for f and its arguments.
func listEventsQuery(f store.EventFilter) (string, args) {
	var where []string
	var a args
	if f.Topic != "" {
		where = append(where, "topic = "+a.add(f.Topic))
	}
	if f.TenantSet {
		where = append(where, "tenant = "+a.add(f.Tenant))
	}
	if !f.Since.IsZero() {
		where = append(where, "received_at >= "+a.add(nanos(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "received_at < "+a.add(nanos(f.Until)))
	}
	if f.Before > 0 {
		where = append(where, "seq < "+a.add(f.Before))
	}
	q := `SELECT seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data FROM events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq DESC LIMIT ` + a.add(listLimit(f.Limit))
	return q, a
}

// ListDeliveries implements store.Store.
func (s *Store) ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.Delivery, error) {
	if f.Destinations != nil && len(f.Destinations) == 0 {
		return []store.Delivery{}, nil
	}
	q, a, err := s.listDeliveriesQuery(f)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("list deliveries: %w", err))
	}
	defer rows.Close()
	out := []store.Delivery{}
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("list deliveries: %w", err))
	}
	slices.SortFunc(out, func(a, b store.Delivery) int { return cmp.Compare(b.ID, a.ID) })
	return out, nil
}

// listDeliveriesQuery is ListDeliveries' statement for f (Destinations nil or not empty) and its arguments.
func (s *Store) listDeliveriesQuery(f store.DeliveryFilter) (string, args, error) {
	limit := listLimit(f.Limit)
	var where []string
	var a args
	var event string // the placeholder of the event id, when it is given
	if f.Status != "" {
		if err := checkStatus(f.Status); err != nil {
			return "", nil, err
		}
		// Inlined (it is checked) so the planner can use the partial indexes.
		where = append(where, "status = '"+string(f.Status)+"'")
	}
	if !f.Since.IsZero() {
		where = append(where, "created_at >= "+a.add(nanos(f.Since)))
	}
	if !f.Until.IsZero() {
		where = append(where, "created_at < "+a.add(nanos(f.Until)))
	}
	if f.Before > 0 {
		where = append(where, "id < "+a.add(f.Before))
	}
	if f.EventID != "" {
		// The ids of the event's deliveries, an array the subquery fills once (each event's are a range of the
		// primary key): = ANY of it is an index condition whatever the statistics say (a semi-join was planned
		// from them, and behind stale ones read every row of the destinations).
		event = a.add(f.EventID)
	}
	var dests string // the placeholder of the destinations, when they are given
	if f.Destinations != nil {
		seen := map[string]bool{}
		var ds []string
		for _, d := range f.Destinations {
			if !seen[d] {
				seen[d] = true
				ds = append(ds, d)
			}
		}
		dests = a.add(ds)
		// A range of one value rather than =: an equality would make the planner treat destination as a
		// constant and drop it from the order below (see page).
		where = append(where, "destination >= dd.name AND destination <= dd.name")
	}
	conds := func(table string) string {
		w := where
		if event != "" {
			w = append(w[:len(w):len(w)], "id = ANY(ARRAY(SELECT t.id FROM events e JOIN "+table+" t ON "+s.idsOf("t", "e.seq", "e.seq")+
				" WHERE e.id = "+event+"))")
		}
		if len(w) == 0 {
			return ""
		}
		return ` WHERE ` + strings.Join(w, " AND ")
	}
	lim := a.add(limit)
	// page is the newest page of one table. Given destinations, it is the newest page of each, merged: each
	// reads its own rows through (destination, id), so a tenant's list costs a page per destination whatever
	// other tenants' destinations hold. (One scan for all of them, destination = ANY, cannot come out of that
	// index in id order; the planner took the primary key backwards instead and read every newer row of the
	// other destinations to find a page of these: TestTenantListsReadTheirOwnRows.)
	page := func(table string) string {
		cond := conds(table)
		if dests == "" {
			return `SELECT ` + deliveryCols + ` FROM ` + table + cond + ` ORDER BY id DESC LIMIT ` + lim
		}
		// Ordered as the (destination, id) index is: the planner otherwise may take the primary key backwards,
		// expecting a destination's rows to be a fair share of every stretch of ids.
		return `SELECT x.* FROM unnest(` + dests + `::text[]) AS dd(name) CROSS JOIN LATERAL (
			SELECT ` + deliveryCols + ` FROM ` + table + cond + ` ORDER BY destination DESC, id DESC LIMIT ` + lim + `) x
			ORDER BY x.id DESC LIMIT ` + lim
	}
	// Pending deliveries are in deliveries or open on fanouts rows (whose page a status other than pending
	// empties at planning); finished ones are in deliveries or the log (most in the log). Each side yields its
	// newest page, in one statement (one snapshot: a row the mover moves meanwhile, or a completion closes, is
	// seen once).
	q := `SELECT * FROM ((` + page("deliveries") + `) UNION ALL (` + page("fanout_deliveries") + `)`
	if f.Status != store.Pending {
		q += ` UNION ALL (` + page("delivery_log") + `)`
	}
	q += `) y ORDER BY id DESC LIMIT ` + lim
	return q, a, nil
}

// Delivery implements store.Store.
func (s *Store) Delivery(ctx context.Context, id int64) (*store.DeliveryRecord, error) {
	var rec *store.DeliveryRecord
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		d, err := scanDelivery(tx.QueryRow(ctx, `SELECT `+deliveryCols+` FROM deliveries WHERE id = $1
			UNION ALL SELECT `+deliveryCols+` FROM delivery_log WHERE id = $1
			UNION ALL SELECT `+deliveryCols+` FROM fanout_deliveries WHERE event_seq = $1 >> 16 AND id = $1 LIMIT 1`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("delivery %d: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read delivery %d: %w", id, err)
		}
		rec = &store.DeliveryRecord{Delivery: d}
		rows, err := tx.Query(ctx, attemptsSQL+` ORDER BY n`, []int64{id}, nanos(d.CreatedAt))
		if err != nil {
			return fmt.Errorf("read attempts of delivery %d: %w", id, err)
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAttempt(rows)
			if err != nil {
				return fmt.Errorf("read attempts of delivery %d: %w", id, err)
			}
			rec.AttemptLog = append(rec.AttemptLog, a)
		}
		return rows.Err()
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		return nil, unavailable(err)
	}
	return rec, nil
}

// Retry implements store.Store. A delivery under a live lease (some node is attempting it) answers
// ErrConflict. A finished delivery in the log moves back to deliveries, pending, under its id.
func (s *Store) Retry(ctx context.Context, id int64, now time.Time) (store.Delivery, error) {
	var d store.Delivery
	var refused error
	err := s.write(ctx, &op{fn: func(ctx context.Context, tx pgx.Tx) error {
		d, refused = store.Delivery{}, nil
		var status, dest string
		var leased bool
		var next int64
		// An open entry of a fanouts row becomes a row first (spillSQL).
		if err := spill(ctx, tx, `f.event_seq = $1::bigint >> 16`, id); err != nil {
			return fmt.Errorf("retry delivery %d: %w", id, err)
		}
		// A delivery whose event retention has detached is gone with it: requeued, it could never be sent.
		err := tx.QueryRow(ctx, `SELECT status, leased, next_at, destination FROM deliveries d WHERE id = $1
			AND EXISTS (SELECT 1 FROM events e WHERE e.seq = d.event_seq AND e.received_at = d.created_at) FOR UPDATE OF d`, id).Scan(&status, &leased, &next, &dest)
		if errors.Is(err, pgx.ErrNoRows) {
			moved, err := unlog(ctx, tx, []int64{id}, nanos(now), nanos(s.opts.Now()))
			if err != nil {
				return fmt.Errorf("retry delivery %d: %w", id, err)
			}
			if len(moved) == 0 {
				refused = fmt.Errorf("delivery %d: %w", id, store.ErrNotFound)
				return nil
			}
			d = moved[0]
			return counts{d.Destination: 1}.apply(ctx, tx)
		}
		if err != nil {
			return fmt.Errorf("retry delivery %d: %w", id, err)
		}
		if store.Status(status) == store.Pending && leased && next > nanos(s.opts.Now()) {
			refused = fmt.Errorf("delivery %d is being attempted right now: %w", id, store.ErrConflict)
			return nil
		}
		if store.Status(status) != store.Pending {
			if err := (counts{dest: 1}).apply(ctx, tx); err != nil {
				return err
			}
		}
		d, err = scanDelivery(tx.QueryRow(ctx, `UPDATE deliveries SET status = 'pending', next_at = $1, leased = false,
			claim_token = 0, retry_base = attempts, updated_at = $2 WHERE id = $3 RETURNING `+deliveryCols,
			nanos(now), nanos(s.opts.Now()), id))
		if err != nil {
			return fmt.Errorf("retry delivery %d: %w", id, err)
		}
		return nil
	}})
	if err == nil {
		err = refused
	}
	if err != nil {
		return store.Delivery{}, err
	}
	return d, nil
}

// unlog moves the logged deliveries ids whose event is still attached back to deliveries, pending and due at
// next with a fresh retry schedule, and returns them as requeued (in id order). The caller adds them to the
// pending counters.
func unlog(ctx context.Context, tx pgx.Tx, ids []int64, next, now int64) ([]store.Delivery, error) {
	// A first attempt kept on the log row goes to attempts, where the queue's deliveries keep theirs.
	rows, err := tx.Query(ctx, `WITH g AS (
		  DELETE FROM delivery_log l WHERE id = ANY($1)
		    AND EXISTS (SELECT 1 FROM events e WHERE e.seq = l.event_seq AND e.received_at = l.created_at)
		  RETURNING `+logCols+`, a1_at, a1_us, a1_code, a1_error, a1_response),
		a1 AS (
		  INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response, received_at)
		  SELECT id, 1, a1_at, a1_us, a1_code, a1_error, a1_response, created_at FROM g WHERE a1_at IS NOT NULL
		  ON CONFLICT (delivery_id, n, received_at) DO NOTHING)
		INSERT INTO deliveries (`+logCols+`, leased, claim_token, claim_node)
		SELECT id, event_seq, event_id, destination, 'pending', attempts, $2, created_at, $3, last_error,
		  ordering_key, ordering_block, attempts, test, false, 0, 0 FROM g
		RETURNING `+deliveryCols, ids, next, now)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Delivery) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Replay implements store.Store, in transactions of at most replayBatch deliveries walking the destination's
// deliveries by id; each checks the status again, so a pending delivery is never touched.
func (s *Store) Replay(ctx context.Context, f store.ReplayFilter, now time.Time) (int, error) {
	var sts []string
	for _, st := range f.Statuses {
		if err := checkStatus(st); err != nil {
			return 0, fmt.Errorf("replay: %w", err)
		}
		if st != store.Pending && !slices.Contains(sts, string(st)) {
			sts = append(sts, string(st))
		}
	}
	if len(f.Statuses) == 0 {
		sts = []string{"delivered", "failed", "skipped"}
	}
	if len(sts) == 0 {
		return 0, nil
	}
	since, until := nanos(f.Since), nanos(f.Until)
	if f.Until.IsZero() {
		until = 1<<63 - 1
	}
	total := 0
	var cursor int64
	for {
		var n int
		var last int64
		var more bool
		err := s.write(ctx, &op{fn: func(ctx context.Context, tx pgx.Tx) error {
			n, last, more = 0, 0, false
			// The batch is the replayBatch lowest ids past the cursor across both tables. Each side's rows are
			// locked as read, so the mover cannot move one of them between the two reads; a row it moves out of
			// deliveries after the first read is found in the log by the second, once.
			ids := func(table string) ([]int64, error) {
				rows, err := tx.Query(ctx, `SELECT id FROM `+table+` d WHERE destination = $1 AND id > $2 AND status = ANY($3)
				    AND created_at >= $4 AND created_at < $5
				    AND EXISTS (SELECT 1 FROM events e WHERE e.seq = d.event_seq AND e.received_at = d.created_at)
				  ORDER BY id LIMIT $6 FOR UPDATE OF d`, f.Destination, cursor, sts, since, until, replayBatch)
				if err != nil {
					return nil, err
				}
				return pgx.CollectRows(rows, pgx.RowTo[int64])
			}
			hot, err := ids("deliveries")
			if err != nil {
				return fmt.Errorf("replay %s: %w", f.Destination, err)
			}
			logged, err := ids("delivery_log")
			if err != nil {
				return fmt.Errorf("replay %s: %w", f.Destination, err)
			}
			all := slices.Sorted(slices.Values(append(slices.Clone(hot), logged...)))
			if len(all) >= replayBatch {
				all, more = all[:replayBatch], true
			}
			if len(all) == 0 {
				return nil
			}
			last = all[len(all)-1]
			hot = slices.DeleteFunc(hot, func(id int64) bool { return id > last })
			logged = slices.DeleteFunc(logged, func(id int64) bool { return id > last })
			if len(hot) > 0 {
				tag, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'pending', next_at = $2, leased = false, claim_token = 0,
				  retry_base = attempts, updated_at = $3 WHERE id = ANY($1)`, hot, nanos(now), nanos(s.opts.Now()))
				if err != nil {
					return fmt.Errorf("replay %s: %w", f.Destination, err)
				}
				n += int(tag.RowsAffected())
			}
			if len(logged) > 0 {
				moved, err := unlog(ctx, tx, logged, nanos(now), nanos(s.opts.Now()))
				if err != nil {
					return fmt.Errorf("replay %s: %w", f.Destination, err)
				}
				n += len(moved)
			}
			return counts{f.Destination: int64(n)}.apply(ctx, tx)
		}})
		if err != nil {
			return total, err
		}
		total += n
		if !more {
			return total, nil
		}
		cursor = last
	}
}

// Prune implements store.Store. Days (partitions) lying wholly before cutoff none of whose deliveries is
// pending are dropped whole first (then more than limit events may go at once: store.RunRetention moves its
// cutoff to a day's start, so that is how retention removes events). Then up to limit events received before
// cutoff whose deliveries are all final go row by row, with their deliveries and attempts, in one
// transaction: those of a day a pending delivery keeps, or before a cutoff inside a day.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = defaultPruneBatch
	}
	dropped, err := s.dropDays(ctx, cutoff)
	if err != nil {
		return dropped, unavailable(fmt.Errorf("prune: drop old days: %w", err))
	}
	if dropped > 0 {
		return dropped, nil
	}
	var n int
	err = s.write(ctx, &op{fn: func(ctx context.Context, tx pgx.Tx) error {
		n = 0
		rows, err := tx.Query(ctx, `DELETE FROM events WHERE (seq, received_at) IN (
			  SELECT seq, received_at FROM events e WHERE received_at < $1
			    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE `+s.idsOf("d", "e.seq", "e.seq")+` AND d.status = 'pending')
			    AND NOT EXISTS (SELECT 1 FROM fanouts f WHERE f.event_seq = e.seq)
			  ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING seq, received_at, tenant, id`, nanos(cutoff), limit)
		if err != nil {
			return fmt.Errorf("prune: delete events: %w", err)
		}
		var gone, received []int64
		var tenants, ids []string
		for rows.Next() {
			var seq, at int64
			var tenant, id string
			if err := rows.Scan(&seq, &at, &tenant, &id); err != nil {
				rows.Close()
				return err
			}
			gone, received = append(gone, seq), append(received, at)
			tenants, ids = append(tenants, tenant), append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("prune: delete events: %w", err)
		}
		if len(gone) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `DELETE FROM event_ids WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
			AND seq = ANY($3)`, tenants, ids, gone); err != nil {
			return fmt.Errorf("prune: delete event ids: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM attempts WHERE delivery_id IN (`+s.idsOfSeqs("deliveries", "$1")+`
			UNION ALL `+s.idsOfSeqs("delivery_log", "$1")+` AND t.created_at = ANY($2))
			AND received_at = ANY($2)`, gone, received); err != nil {
			return fmt.Errorf("prune: delete attempts: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE id IN (`+s.idsOfSeqs("deliveries", "$1")+`)`, gone); err != nil {
			return fmt.Errorf("prune: delete deliveries: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM delivery_log WHERE created_at = ANY($2) AND id IN (`+s.idsOfSeqs("delivery_log", "$1")+`
			AND t.created_at = ANY($2))`, gone, received); err != nil {
			return fmt.Errorf("prune: delete logged deliveries: %w", err)
		}
		n = len(gone)
		return nil
	}})
	return n, err
}

// PendingCounts implements store.Store from the maintained counters (no rows are counted).
func (s *Store) PendingCounts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT destination, sum(n)::bigint FROM pending_counts GROUP BY destination HAVING sum(n) > 0`)
	if err != nil {
		return nil, unavailable(fmt.Errorf("count pending deliveries: %w", err))
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
		return nil, unavailable(fmt.Errorf("count pending deliveries: %w", err))
	}
	return out, nil
}
