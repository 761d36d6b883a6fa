package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// hold is a lease this process took (by claim or at birth): token proves it on complete and renew, until is
// the end of the lease the caller asked for, up to which it is renewed.
type hold struct {
	token int64
	until int64
}

type holds struct {
	mu sync.Mutex
	m  map[int64]hold
}

func (h *holds) put(id int64, hd hold) {
	h.mu.Lock()
	h.m[id] = hd
	h.mu.Unlock()
}

func (h *holds) token(id int64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[id].token
}

// drop forgets the holds of ids taken under tokens (same index). A hold taken since under another token (the
// delivery was claimed again, by this process, meanwhile) is kept.
func (h *holds) drop(ids, tokens []int64) {
	h.mu.Lock()
	for i, id := range ids {
		if hd, ok := h.m[id]; ok && hd.token == tokens[i] {
			delete(h.m, id)
		}
	}
	h.mu.Unlock()
}

func (h *holds) snapshot() (ids, tokens, untils []int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, hd := range h.m {
		ids, tokens, untils = append(ids, id), append(tokens, hd.token), append(untils, hd.until)
	}
	return
}

// leaseEnd is where a new lease reaches: the shorter of the lease asked for and the TTL, which renewals push
// on while this process lives.
func (s *Store) leaseEnd(now time.Time, lease time.Duration) time.Time {
	if s.opts.LeaseTTL < 0 {
		return now.Add(lease)
	}
	return now.Add(min(lease, s.opts.LeaseTTL))
}

// Append implements store.Store. Each call's events and deliveries go in as one multi-row insert each
// (UNNEST arrays); concurrent calls share a transaction.
func (s *Store) Append(ctx context.Context, evs []store.NewEvent, opts store.AppendOptions) ([]store.AppendResult, error) {
	res := make([]store.AppendResult, len(evs))
	token := newToken()
	var leased []int64
	var leaseUntil int64
	o := &op{}
	o.fn = func(ctx context.Context, tx pgx.Tx) error {
		now := s.opts.Now()
		leased, leaseUntil = leased[:0], nanos(now.Add(opts.Lease))
		n := len(evs)
		tenants, ids, topics := make([]string, n), make([]string, n), make([]string, n)
		times, corr, traces := make([]int64, n), make([]string, n), make([]*string, n)
		mds, scs, datas := make([][]byte, n), make([][]byte, n), make([][]byte, n)
		for i := range evs {
			ev := &evs[i].Event
			res[i] = store.AppendResult{ID: ev.ID}
			tenants[i], ids[i], topics[i], times[i], corr[i] = ev.Tenant, ev.ID, ev.Topic, nanos(ev.Time), ev.CorrelationID
			mds[i], scs[i], datas[i] = marshalMap(ev.Metadata), marshalMap(ev.Scope), []byte(ev.Data)
			if datas[i] == nil {
				datas[i] = []byte{}
			}
			if ev.Traceparent != "" {
				traces[i] = &ev.Traceparent
			}
		}
		type key struct{ tenant, id string }
		// The id is claimed in event_ids first (it dedupes across the day partitions); only the winners' events
		// go in. The first of equal ids in one call owns it.
		rows, err := tx.Query(ctx, `WITH u AS (
			  SELECT DISTINCT ON (t, i) * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $6::text[], $7::bytea[], $8::bytea[], $9::bytea[], $10::text[])
			    WITH ORDINALITY AS u(t, i, tp, tm, c, m, sc, d, tr, ord)
			  ORDER BY t, i, ord),
			ids AS (
			  INSERT INTO event_ids (tenant, id, seq, received_at)
			  SELECT t, i, nextval('events_seq_seq'), $5 FROM (SELECT t, i FROM u ORDER BY ord) o
			  ON CONFLICT (tenant, id) DO NOTHING
			  RETURNING tenant, id, seq)
			INSERT INTO events (seq, tenant, id, topic, time, received_at, correlation_id, metadata, scope, data, traceparent)
			SELECT ids.seq, u.t, u.i, u.tp, u.tm, $5, u.c, u.m, u.sc, u.d, u.tr FROM u JOIN ids ON ids.tenant = u.t AND ids.id = u.i
			RETURNING seq, tenant, id`,
			tenants, ids, topics, times, nanos(now), corr, mds, scs, datas, traces)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		inserted := map[key]int64{}
		for rows.Next() {
			var seq int64
			var k key
			if err := rows.Scan(&seq, &k.tenant, &k.id); err != nil {
				rows.Close()
				return fmt.Errorf("insert events: %w", err)
			}
			inserted[k] = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		// Which input owns each inserted row (the first with its key); the rest are duplicates.
		owner := make([]int64, n)
		var dupT, dupI []string
		for i := range evs {
			k := key{tenants[i], ids[i]}
			if seq, ok := inserted[k]; ok {
				owner[i] = seq
				delete(inserted, k)
				continue
			}
			dupT, dupI = append(dupT, k.tenant), append(dupI, k.id)
		}
		// Deliveries of the new events, one insert.
		var dSeq []int64
		var dEv, dDest, dKey, dWhy []string
		var dNext []int64
		var dLeased, dBlock []bool
		var dTok []int64
		for i := range evs {
			if owner[i] == 0 {
				continue
			}
			ne := &evs[i]
			for j, dest := range ne.Destinations {
				next, l, tok := nanos(now), false, int64(0)
				if j < len(ne.Leased) && ne.Leased[j] {
					next, l, tok = nanos(s.leaseEnd(now, opts.Lease)), true, token
				}
				k, b := "", false
				if j < len(ne.OrderingKeys) {
					k = ne.OrderingKeys[j]
				}
				if j < len(ne.OrderingBlock) {
					b = ne.OrderingBlock[j]
				}
				why := ""
				if j < len(ne.Skipped) && ne.Skipped[j] != "" {
					// Born skipped: never claimed, holds no key back, counts as nothing pending.
					why, next, l, tok, k, b = ne.Skipped[j], nanos(now), false, 0, "", false
				}
				dWhy = append(dWhy, why)
				dSeq, dEv, dDest, dKey = append(dSeq, owner[i]), append(dEv, ne.Event.ID), append(dDest, dest), append(dKey, k)
				dNext, dLeased, dBlock, dTok = append(dNext, next), append(dLeased, l), append(dBlock, b), append(dTok, tok)
			}
		}
		if len(dSeq) > 0 {
			c := counts{}
			for k, d := range dDest {
				if dWhy[k] == "" {
					c.add(d, 1)
				}
			}
			if err := c.apply(ctx, tx); err != nil {
				return err
			}
			if err := s.insertDeliveries(ctx, tx, now, evs, res, owner, &leased, dSeq, dEv, dDest, dKey, dWhy, dNext, dLeased, dBlock, dTok); err != nil {
				return err
			}
		}
		// Duplicates are answered last: one of an event earlier in this very call sees its deliveries.
		if len(dupT) > 0 {
			return s.duplicates(ctx, tx, now, opts, res, tenants, ids, owner, dupT, dupI)
		}
		return nil
	}
	o.after = func() {
		for _, id := range leased {
			s.holds.put(id, hold{token: token, until: leaseUntil})
		}
	}
	if err := s.write(ctx, o); err != nil {
		return nil, err
	}
	return res, nil
}

// insertDeliveries inserts the delivery rows of the new events in one statement and answers them in res.
func (s *Store) insertDeliveries(ctx context.Context, tx pgx.Tx, now time.Time, evs []store.NewEvent, res []store.AppendResult,
	owner []int64, leased *[]int64, dSeq []int64, dEv, dDest, dKey, dWhy []string, dNext []int64, dLeased, dBlock []bool, dTok []int64) error {
	{
		// Test is per event; a call mixing test and real events (none does) would need it per row.
		tests := make([]bool, len(dSeq))
		k := 0
		for i := range evs {
			if owner[i] == 0 {
				continue
			}
			for range evs[i].Destinations {
				tests[k] = evs[i].Test
				k++
			}
		}
		rows, err := tx.Query(ctx, `INSERT INTO deliveries (event_seq, event_id, destination, status, next_at, leased, claim_token,
				claim_node, created_at, updated_at, ordering_key, ordering_block, test, last_error)
			SELECT s, e, d, CASE WHEN w = '' THEN 'pending' ELSE 'skipped' END, n, l, t, CASE WHEN l THEN $11::bigint ELSE 0 END,
				$9, $9, k, b, x, w
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bool[], $6::bigint[], $7::text[], $8::bool[], $10::bool[], $12::text[])
			  WITH ORDINALITY AS u(s, e, d, n, l, t, k, b, x, w, ord)
			ORDER BY ord
			RETURNING id, event_seq, destination`,
			dSeq, dEv, dDest, dNext, dLeased, dTok, dKey, dBlock, nanos(now), tests, s.nodeID, dWhy)
		if err != nil {
			return fmt.Errorf("insert deliveries: %w", err)
		}
		var dIDs []int64
		for rows.Next() {
			var id, seq int64
			var dest string
			if err := rows.Scan(&id, &seq, &dest); err != nil {
				rows.Close()
				return fmt.Errorf("insert deliveries: %w", err)
			}
			// Rows come back in the order they were inserted (the SELECT's); check rather than trust it.
			if k := len(dIDs); k >= len(dSeq) || dSeq[k] != seq || dDest[k] != dest {
				rows.Close()
				return errors.New("insert deliveries: rows returned out of order")
			}
			dIDs = append(dIDs, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("insert deliveries: %w", err)
		}
		k = 0
		for i := range evs {
			if owner[i] == 0 {
				continue
			}
			ne := &evs[i]
			res[i].Deliveries = make([]store.Delivery, len(ne.Destinations))
			for j := range ne.Destinations {
				status := store.Pending
				if dWhy[k] != "" {
					status = store.Skipped
				}
				res[i].Deliveries[j] = store.Delivery{ID: dIDs[k], EventID: ne.Event.ID, Destination: dDest[k], Status: status,
					NextAt: fromNanos(dNext[k]), CreatedAt: now.UTC(), UpdatedAt: now.UTC(), OrderingKey: dKey[k], Test: ne.Test,
					LastError: dWhy[k]}
				if dLeased[k] {
					*leased = append(*leased, dIDs[k])
				}
				k++
			}
		}
		return nil
	}
}

// duplicates answers the inputs whose (tenant, id) was stored already: a duplicate within the window, or
// refused with ErrIDReused outside it.
func (s *Store) duplicates(ctx context.Context, tx pgx.Tx, now time.Time, opts store.AppendOptions, res []store.AppendResult,
	tenants, ids []string, owner []int64, dupT, dupI []string) error {
	type key struct{ tenant, id string }
	type found struct{ seq, received int64 }
	rows, err := tx.Query(ctx, `SELECT e.seq, e.tenant, e.id, e.received_at FROM event_ids e
		JOIN unnest($1::text[], $2::text[]) AS u(t, i) ON e.tenant = u.t AND e.id = u.i`, dupT, dupI)
	if err != nil {
		return fmt.Errorf("find duplicate events: %w", err)
	}
	existing := map[key]found{}
	for rows.Next() {
		var f found
		var k key
		if err := rows.Scan(&f.seq, &k.tenant, &k.id, &f.received); err != nil {
			rows.Close()
			return fmt.Errorf("find duplicate events: %w", err)
		}
		existing[k] = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find duplicate events: %w", err)
	}
	var seqs []int64
	for i := range res {
		if owner[i] != 0 {
			continue
		}
		f, ok := existing[key{tenants[i], ids[i]}]
		if !ok {
			return fmt.Errorf("find duplicate event %s: not found", ids[i])
		}
		if now.Sub(fromNanos(f.received)) > opts.DedupeWindow {
			res[i].Err = fmt.Errorf("%w: event %s was received at %s, outside the dedupe window; publish it with a new id",
				store.ErrIDReused, ids[i], fromNanos(f.received).Format(time.RFC3339))
			continue
		}
		res[i].Duplicate = true
		owner[i] = -f.seq // marks "duplicate of seq" until its deliveries are read
		seqs = append(seqs, f.seq)
	}
	if len(seqs) > 0 {
		ds, err := s.deliveriesOf(ctx, tx, seqs)
		if err != nil {
			return err
		}
		for i := range res {
			if owner[i] < 0 {
				for _, d := range ds[-owner[i]] {
					res[i].Deliveries = append(res[i].Deliveries, d.Delivery)
				}
				owner[i] = 0
			}
		}
	}
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// deliveriesOf reads the deliveries of events by seq, in id order.
func (s *Store) deliveriesOf(ctx context.Context, q querier, seqs []int64) (map[int64][]store.DeliveryRecord, error) {
	rows, err := q.Query(ctx, `SELECT `+deliveryCols+`, event_seq FROM deliveries WHERE event_seq = ANY($1) ORDER BY id`, seqs)
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	defer rows.Close()
	out := map[int64][]store.DeliveryRecord{}
	for rows.Next() {
		var seq int64
		d, err := scanDelivery(rows, &seq)
		if err != nil {
			return nil, fmt.Errorf("read deliveries: %w", err)
		}
		out[seq] = append(out[seq], store.DeliveryRecord{Delivery: d})
	}
	return out, rows.Err()
}

// deliveryCols are the columns scanDelivery reads, in its order.
const deliveryCols = `id, event_id, destination, status, attempts, next_at, created_at, updated_at, last_error,
	ordering_key, retry_base, test`

// scanDelivery reads one row of deliveryCols, then extra (columns selected after them).
func scanDelivery(sc interface{ Scan(...any) error }, extra ...any) (store.Delivery, error) {
	var d store.Delivery
	var status string
	var next, created, updated int64
	dest := append([]any{&d.ID, &d.EventID, &d.Destination, &status, &d.Attempts, &next, &created, &updated,
		&d.LastError, &d.OrderingKey, &d.RetryBase, &d.Test}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return d, err
	}
	d.Status = store.Status(status)
	d.NextAt, d.CreatedAt, d.UpdatedAt = fromNanos(next), fromNanos(created), fromNanos(updated)
	return d, nil
}

// Claim implements store.Store. Rows are locked with FOR UPDATE SKIP LOCKED, so nodes claiming the same
// destination at once take different rows; each claim writes a fresh token that Complete and renewals check.
func (s *Store) Claim(ctx context.Context, destination string, now time.Time, lease time.Duration, limit int) ([]store.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	token := newToken()
	type claimed struct {
		job store.Job
		due int64
		seq int64
	}

	var got []claimed
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		got = got[:0]
		rows, err := tx.Query(ctx, `
			WITH c AS (
			  SELECT d.id, d.next_at AS due FROM deliveries d
			  WHERE d.destination = $1 AND d.status = 'pending' AND d.next_at <= $2
			    AND (d.ordering_key = '' OR (
			      NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.destination = d.destination AND p.status = 'pending'
			          AND p.ordering_key = d.ordering_key AND p.ordering_key <> '' AND p.id < d.id)
			      AND (NOT d.ordering_block OR NOT EXISTS (SELECT 1 FROM deliveries f WHERE f.destination = d.destination
			          AND f.status = 'failed' AND f.ordering_key = d.ordering_key AND f.ordering_key <> '' AND f.id < d.id))))
			  ORDER BY d.next_at, d.id LIMIT $3
			  FOR UPDATE SKIP LOCKED)
			UPDATE deliveries d SET next_at = $4, leased = true, claim_token = $5, claim_node = $6
			FROM c WHERE d.id = c.id
			RETURNING `+prefixed("d.", deliveryCols)+`, d.event_seq, c.due`,
			destination, nanos(now), limit, nanos(s.leaseEnd(now, lease)), token, s.nodeID)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		for rows.Next() {
			var c claimed
			if c.job.Delivery, err = scanDelivery(rows, &c.seq, &c.due); err != nil {
				rows.Close()
				return fmt.Errorf("claim: %w", err)
			}
			got = append(got, c)
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return nil, unavailable(err)
	}
	if len(got) == 0 {
		return nil, nil
	}
	until := nanos(now.Add(lease))
	seqs, received := make([]int64, 0, len(got)), make([]int64, 0, len(got))
	for _, c := range got {
		s.holds.put(c.job.Delivery.ID, hold{token: token, until: until})
		// A delivery is created when its event is received: created_at picks the event's day partition.
		seqs, received = append(seqs, c.seq), append(received, nanos(c.job.Delivery.CreatedAt))
	}
	slices.SortFunc(got, func(a, b claimed) int {
		return cmp.Or(cmp.Compare(a.due, b.due), cmp.Compare(a.job.Delivery.ID, b.job.Delivery.ID))
	})
	evs, err := s.events(ctx, seqs, received)
	if err != nil {
		for _, c := range got {
			s.holds.drop([]int64{c.job.Delivery.ID}, []int64{token})
		}
		// The claims stand unrenewed: they come back within LeaseTTL.
		return nil, unavailable(fmt.Errorf("claim: read events: %w", err))
	}
	jobs := make([]store.Job, 0, len(got))
	for _, c := range got {
		ev, ok := evs[c.seq]
		if !ok {
			// The event is gone (retention): the delivery cannot be sent; it stays leased and expires with it.
			continue
		}
		c.job.Event = ev
		c.job.Event.OrderingKey = c.job.Delivery.OrderingKey
		jobs = append(jobs, c.job)
	}
	return jobs, nil
}

func prefixed(p, cols string) string {
	out := ""
	for i, c := range splitCols(cols) {
		if i > 0 {
			out += ", "
		}
		out += p + c
	}
	return out
}

func splitCols(cols string) []string {
	var out []string
	cur := ""
	for _, r := range cols {
		switch r {
		case ',':
			out, cur = append(out, cur), ""
		case ' ', '\n', '\t':
		default:
			cur += string(r)
		}
	}
	return append(out, cur)
}

// events reads events by seq; received are their received_at (any order), so only their days are searched.
func (s *Store) events(ctx context.Context, seqs, received []int64) (map[int64]event.Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, id, topic, tenant, time, correlation_id, metadata, scope, data, traceparent
		FROM events WHERE seq = ANY($1) AND received_at = ANY($2)`, seqs, received)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]event.Event{}
	for rows.Next() {
		var seq, t int64
		var ev event.Event
		var md, sc, data []byte
		var tp *string
		if err := rows.Scan(&seq, &ev.ID, &ev.Topic, &ev.Tenant, &t, &ev.CorrelationID, &md, &sc, &data, &tp); err != nil {
			return nil, err
		}
		if tp != nil {
			ev.Traceparent = *tp
		}
		ev.Time, ev.Metadata, ev.Scope, ev.Data = fromNanos(t), unmarshalMap(md), unmarshalMap(sc), data
		out[seq] = ev
	}
	return out, rows.Err()
}

// NextDue implements store.Store.
func (s *Store) NextDue(ctx context.Context, destination string) (time.Time, bool, error) {
	var n *int64
	err := s.pool.QueryRow(ctx, `SELECT min(next_at) FROM deliveries WHERE destination = $1 AND status = 'pending' AND NOT leased`,
		destination).Scan(&n)
	if err != nil {
		return time.Time{}, false, unavailable(err)
	}
	if n == nil {
		return time.Time{}, false, nil
	}
	return fromNanos(*n), true, nil
}

// Complete implements store.Store. A delivery this process holds is completed only while its claim token is
// still the one stored (no other node took it over after the lease ran out); one it does not hold, only while
// nobody holds a live lease on it.
func (s *Store) Complete(ctx context.Context, outs []store.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	n := len(outs)
	ids, toks, nexts := make([]int64, n), make([]int64, n), make([]int64, n)
	statuses, errs := make([]string, n), make([]string, n)
	tried := make([]int32, n)
	for i, o := range outs {
		ids[i], toks[i], nexts[i], statuses[i], errs[i] = o.DeliveryID, s.holds.token(o.DeliveryID), nanos(o.NextAt), string(o.Status), o.Attempt.Error
		if o.Attempt.N > 0 {
			tried[i] = 1
		}
	}
	o := &op{}
	o.fn = func(ctx context.Context, tx pgx.Tx) error {
		now := nanos(s.opts.Now())
		rows, err := tx.Query(ctx, `UPDATE deliveries d SET status = u.st, attempts = d.attempts + u.tried, next_at = u.nx,
				leased = false, claim_token = 0, claim_node = 0, updated_at = $7, last_error = u.er
			FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::bigint[]) AS u(id, st, tried, nx, er, tok)
			WHERE d.id = u.id AND d.status = 'pending'
			  AND (d.claim_token = u.tok OR (u.tok = 0 AND (NOT d.leased OR d.next_at <= $7)))
			RETURNING d.id, d.destination, d.status, d.created_at`, ids, statuses, tried, nexts, errs, toks, now)
		if err != nil {
			return fmt.Errorf("complete deliveries: %w", err)
		}
		done := map[int64]int64{} // id: created_at (the attempts' partition key)
		c := counts{}
		for rows.Next() {
			var id, created int64
			var dest, status string
			if err := rows.Scan(&id, &dest, &status, &created); err != nil {
				rows.Close()
				return fmt.Errorf("complete deliveries: %w", err)
			}
			done[id] = created
			if status != "pending" {
				c.add(dest, -1)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("complete deliveries: %w", err)
		}
		if err := c.apply(ctx, tx); err != nil {
			return err
		}
		var aID []int64
		var aN, aCode []int32
		var aAt, aUs, aRecv []int64
		var aErr []string
		var aResp [][]byte
		for _, o := range outs {
			created, ok := done[o.DeliveryID]
			if o.Attempt.N == 0 || !ok {
				continue
			}
			aRecv = append(aRecv, created)
			a := o.Attempt
			aID, aN, aAt, aUs = append(aID, o.DeliveryID), append(aN, int32(a.N)), append(aAt, nanos(a.At)), append(aUs, a.Duration.Microseconds())
			aCode, aErr, aResp = append(aCode, int32(a.StatusCode)), append(aErr, a.Error), append(aResp, a.Response)
		}
		if len(aID) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response, received_at)
			SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::int[], $6::text[], $7::bytea[], $8::bigint[])
			ON CONFLICT (delivery_id, n, received_at) DO UPDATE SET at = excluded.at, duration_us = excluded.duration_us,
				status_code = excluded.status_code, error = excluded.error, response = excluded.response`,
			aID, aN, aAt, aUs, aCode, aErr, aResp, aRecv); err != nil {
			return fmt.Errorf("record attempts: %w", err)
		}
		return nil
	}
	o.after = func() { s.holds.drop(ids, toks) }
	err := s.write(ctx, o)
	if err != nil {
		// The caller keeps nothing of these deliveries now; renewing their leases would keep them from every
		// node for as long as the leases asked for. Unrenewed, they come back within LeaseTTL.
		s.holds.drop(ids, toks)
	}
	return err
}

// ReleaseLeases implements store.Store: on a shared database it hands back this process's own leases and
// those of nodes that are gone (their presence lock is free), never a live node's.
func (s *Store) ReleaseLeases(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable(fmt.Errorf("release leases: %w", err))
	}
	defer conn.Release()
	rows, err := conn.Query(ctx, `SELECT DISTINCT claim_node FROM deliveries WHERE status = 'pending' AND leased AND claim_node <> $1`, s.nodeID)
	if err != nil {
		return unavailable(fmt.Errorf("release leases: %w", err))
	}
	var owners []int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		owners = append(owners, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return unavailable(fmt.Errorf("release leases: %w", err))
	}
	gone := []int64{s.nodeID}
	for _, n := range owners {
		if n == 0 {
			gone = append(gone, n)
			continue
		}
		// A live node holds its presence lock for as long as it runs: if it can be taken, the node is gone.
		var free bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, n).Scan(&free); err != nil {
			return unavailable(fmt.Errorf("release leases: %w", err))
		}
		if free {
			if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, n); err != nil {
				return unavailable(fmt.Errorf("release leases: %w", err))
			}
			gone = append(gone, n)
		}
	}
	if _, err := conn.Exec(ctx, `UPDATE deliveries SET next_at = $2, leased = false, claim_token = 0, claim_node = 0
		WHERE status = 'pending' AND leased AND claim_node = ANY($1)`, gone, nanos(s.opts.Now())); err != nil {
		return unavailable(fmt.Errorf("release leases: %w", err))
	}
	ids, toks, _ := s.holds.snapshot()
	s.holds.drop(ids, toks)
	return nil
}

// renewLeases pushes the end of every lease this process holds LeaseTTL ahead, every LeaseTTL/3, up to the
// lease its caller asked for. A lease that another node has taken over (its token changed) or that ended is
// forgotten.
func (s *Store) renewLeases(ctx context.Context) {
	defer s.wg.Done()
	if s.opts.LeaseTTL < 0 {
		return
	}
	tick := time.NewTicker(s.opts.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ids, toks, untils := s.holds.snapshot()
		if len(ids) == 0 {
			continue
		}
		now := s.opts.Now()
		rows, err := s.pool.Query(ctx, `UPDATE deliveries d SET next_at = LEAST($4::bigint, u.until)
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, tok, until)
			WHERE d.id = u.id AND d.claim_token = u.tok AND d.status = 'pending' AND u.until > $5
			RETURNING d.id`, ids, toks, untils, nanos(now.Add(s.opts.LeaseTTL)), nanos(now))
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Warn("store: renew leases", "leases", len(ids), "err", err)
			}
			continue
		}
		kept := map[int64]bool{}
		for rows.Next() {
			var id int64
			if rows.Scan(&id) == nil {
				kept[id] = true
			}
		}
		rows.Close()
		if rows.Err() != nil {
			continue
		}
		var gone, goneToks []int64
		for i, id := range ids {
			if !kept[id] {
				gone, goneToks = append(gone, id), append(goneToks, toks[i])
			}
		}
		s.holds.drop(gone, goneToks)
	}
}

// SkipPending implements store.Store.
func (s *Store) SkipPending(ctx context.Context, destination, reason string) (int, error) {
	var n int64
	err := s.write(ctx, &op{fn: func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE deliveries SET status = 'skipped', leased = false, claim_token = 0, claim_node = 0, last_error = $1,
			updated_at = $2 WHERE destination = $3 AND status = 'pending'`, reason, nanos(s.opts.Now()), destination)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return counts{destination: -n}.apply(ctx, tx)
	}})
	return int(n), err
}

// Event implements store.Store. Ids dedupe per tenant, so two tenants may use one id; the first appended is
// answered (TenantEvent reads one tenant's).
func (s *Store) Event(ctx context.Context, id string) (*store.EventRecord, error) {
	return s.event(ctx, nil, id)
}

// TenantEvent implements store.Store.
func (s *Store) TenantEvent(ctx context.Context, tenant, id string) (*store.EventRecord, error) {
	return s.event(ctx, &tenant, id)
}

func (s *Store) event(ctx context.Context, tenant *string, id string) (*store.EventRecord, error) {
	var rec store.EventRecord
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var seq, t, received int64
		var md, sc, data []byte
		ev := &rec.Event
		var tp *string
		err := tx.QueryRow(ctx, `SELECT seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data, traceparent
			FROM events WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) ORDER BY seq LIMIT 1`, id, tenant).Scan(&seq, &ev.ID, &ev.Topic, &ev.Tenant, &t, &received,
			&ev.CorrelationID, &md, &sc, &data, &tp)
		if tp != nil {
			ev.Traceparent = *tp
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		ev.Time, rec.ReceivedAt = fromNanos(t), fromNanos(received)
		ev.Metadata, ev.Scope, ev.Data = unmarshalMap(md), unmarshalMap(sc), data
		ds, err := s.deliveriesOf(ctx, tx, []int64{seq})
		if err != nil {
			return err
		}
		rec.Deliveries = ds[seq]
		rows, err := tx.Query(ctx, `SELECT delivery_id, n, at, duration_us, status_code, error, response FROM attempts
			WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq = $1) AND received_at = $2 ORDER BY delivery_id, n`, seq, received)
		if err != nil {
			return err
		}
		defer rows.Close()
		byID := map[int64]*store.DeliveryRecord{}
		for i := range rec.Deliveries {
			byID[rec.Deliveries[i].ID] = &rec.Deliveries[i]
		}
		for rows.Next() {
			a, err := scanAttempt(rows)
			if err != nil {
				return err
			}
			if d := byID[a.DeliveryID]; d != nil {
				d.AttemptLog = append(d.AttemptLog, a)
			}
		}
		return rows.Err()
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		return nil, unavailable(fmt.Errorf("read event %s: %w", id, err))
	}
	return &rec, nil
}

func scanAttempt(rows pgx.Rows) (store.Attempt, error) {
	var a store.Attempt
	var at, us int64
	var n, code int32
	if err := rows.Scan(&a.DeliveryID, &n, &at, &us, &code, &a.Error, &a.Response); err != nil {
		return a, err
	}
	a.N, a.StatusCode = int(n), int(code)
	a.At, a.Duration = fromNanos(at), time.Duration(us)*time.Microsecond
	return a, nil
}
