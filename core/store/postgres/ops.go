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
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// hold is a lease this process took (by claim or at birth): token proves it on complete and renew, until is
// the end of the lease the caller asked for, up to which it is renewed.
type hold struct {
	token int64
	until int64
	// ends is where the lease stands in the database now: a renewal is made only when it is near.
	ends int64
	// fan says the delivery was born on its event's fanouts row (it may have been spilled to a row since).
	fan bool
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

func (h *holds) get(id int64) hold {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[id]
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
	return h.due(1<<63 - 1)
}

// due returns the holds whose lease in the database ends before by (to renew them).
func (h *holds) due(by int64) (ids, tokens, untils []int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, hd := range h.m {
		if hd.ends < by {
			ids, tokens, untils = append(ids, id), append(tokens, hd.token), append(untils, hd.until)
		}
	}
	return
}

// renewed records the new end of the leases of ids (still under tokens).
func (h *holds) renewed(ids, tokens []int64, ends int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, id := range ids {
		if hd, ok := h.m[id]; ok && hd.token == tokens[i] {
			hd.ends = min(ends, hd.until)
			h.m[id] = hd
		}
	}
}

// leaseEnd is where a new lease reaches: the shorter of the lease asked for and the TTL, which renewals push
// on while this process lives.
func (s *Store) leaseEnd(now time.Time, lease time.Duration) time.Time {
	if s.opts.LeaseTTL < 0 {
		return now.Add(lease)
	}
	return now.Add(min(lease, s.opts.LeaseTTL))
}

// appendCall is one Append call's work. The appends a group commit carries run as one statement (appendAll).
type appendCall struct {
	evs  []store.NewEvent
	opts store.AppendOptions
	res  []store.AppendResult
	// token marks the leases taken at birth; leased are their deliveries, held until leaseUntil.
	token      int64
	leased     []int64
	fan        []bool // aligned with leased: carried by the event's fanouts row
	leaseUntil int64
	leaseEnds  int64
}

// Append implements store.Store. The events and deliveries of every Append a group commit carries go in with
// one statement (multi-row inserts from UNNEST arrays); only duplicates take a second one.
func (s *Store) Append(ctx context.Context, evs []store.NewEvent, opts store.AppendOptions) ([]store.AppendResult, error) {
	for i := range evs {
		if checkFanout(evs[i].Event.ID, len(evs[i].Destinations)) != nil {
			return s.appendWithin(ctx, evs, opts)
		}
	}
	return s.append(ctx, evs, opts)
}

// appendWithin appends the events of evs whose deliveries their ids can number (MaxFanout) and refuses the
// others alone, as Append refuses a reused id.
func (s *Store) appendWithin(ctx context.Context, evs []store.NewEvent, opts store.AppendOptions) ([]store.AppendResult, error) {
	out := make([]store.AppendResult, len(evs))
	var keep []store.NewEvent
	var at []int
	for i := range evs {
		if err := checkFanout(evs[i].Event.ID, len(evs[i].Destinations)); err != nil {
			out[i] = store.AppendResult{ID: evs[i].Event.ID, Err: err}
			continue
		}
		keep, at = append(keep, evs[i]), append(at, i)
	}
	if len(keep) == 0 {
		return out, nil
	}
	res, err := s.append(ctx, keep, opts)
	if err != nil {
		return nil, err
	}
	for k, i := range at {
		out[i] = res[k]
	}
	return out, nil
}

func (s *Store) append(ctx context.Context, evs []store.NewEvent, opts store.AppendOptions) ([]store.AppendResult, error) {
	c := &appendCall{evs: evs, opts: opts, res: make([]store.AppendResult, len(evs)), token: newToken()}
	o := &op{app: c}
	o.fn = func(ctx context.Context, tx pgx.Tx) error { return s.appendAll(ctx, tx, []*appendCall{c}) }
	o.after = func() {
		for i, id := range c.leased {
			s.holds.put(id, hold{token: c.token, until: c.leaseUntil, ends: c.leaseEnds, fan: c.fan[i]})
		}
	}
	if err := s.write(ctx, o); err != nil {
		return nil, err
	}
	return c.res, nil
}

// appendSQL claims each event's (tenant, id) in event_ids (it dedupes across the day partitions; the first
// of equal ids, in argument order, owns it), inserts the winners' events and their deliveries (each one's id
// made from its event's seq and its place in the fan-out, as deliveryID makes it): an event whose deliveries
// are all flagged ($23, planAppend) as one fanouts row carrying them (migration 0009), any other's as rows of
// deliveries. It adds the pending deliveries to this writer's counter rows, and answers, per winning event
// (its 1-based index), its seq and its delivery ids in order.
const appendSQL = `WITH u AS (
	  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bytea[], $7::bytea[], $8::bytea[], $9::text[])
	    WITH ORDINALITY AS u(t, i, tp, tm, c, m, sc, d, tr, ord)),
	first AS (SELECT DISTINCT ON (t, i) t, i, ord FROM u ORDER BY t, i, ord),
	ids AS (
	  INSERT INTO event_ids (tenant, id, seq, received_at)
	  SELECT t, i, nextval('events_seq_seq'), $10 FROM (SELECT t, i FROM first ORDER BY ord) f
	  ON CONFLICT (tenant, id) DO NOTHING
	  RETURNING tenant, id, seq),
	won AS (SELECT first.ord, ids.seq FROM first JOIN ids ON ids.tenant = first.t AND ids.id = first.i),
	ev AS (
	  INSERT INTO events (seq, tenant, id, topic, time, received_at, correlation_id, metadata, scope, data, traceparent)
	  SELECT won.seq, u.t, u.i, u.tp, u.tm, $10, u.c, u.m, u.sc, u.d, u.tr FROM u JOIN won ON won.ord = u.ord),
	x AS (
	  SELECT won.seq, u.i AS event_id, x.* FROM unnest($12::bigint[], $13::text[], $14::bigint[], $15::bool[], $16::bigint[],
	      $17::text[], $18::bool[], $19::bool[], $20::text[], $22::int[], $23::bool[])
	    WITH ORDINALITY AS x(eo, d, n, l, tk, k, b, te, w, p, f, dord)
	  JOIN won ON won.ord = x.eo JOIN u ON u.ord = x.eo),
	dl AS (
	  INSERT INTO deliveries (id, event_seq, event_id, destination, status, next_at, leased, claim_token, claim_node,
	    created_at, updated_at, ordering_key, ordering_block, test, last_error)
	  SELECT (x.seq << 16) + x.p, x.seq, x.event_id, x.d, CASE WHEN x.w = '' THEN 'pending' ELSE 'skipped' END, x.n, x.l, x.tk,
	    CASE WHEN x.l THEN $11::bigint ELSE 0 END, $10, $10, x.k, x.b, x.te, x.w
	  FROM x WHERE NOT x.f
	  ORDER BY x.dord
	  RETURNING id, event_seq, destination, status),
	fo AS (
	  INSERT INTO fanouts (event_seq, event_id, created_at, dests, open, remaining, claim_token, claim_node, lease_until)
	  SELECT x.seq, x.event_id, $10, array_agg(x.d ORDER BY x.p), array_agg(true ORDER BY x.p), count(*), min(x.tk), $11, min(x.n)
	  FROM x WHERE x.f GROUP BY x.seq, x.event_id
	  RETURNING event_seq, dests),
	made AS (
	  SELECT event_seq, id, destination, status FROM dl
	  UNION ALL SELECT fo.event_seq, (fo.event_seq << 16) + o.i - 1, o.d, 'pending' FROM fo, unnest(fo.dests) WITH ORDINALITY AS o(d, i)),
	cnt AS (
	  INSERT INTO pending_counts (destination, shard, n)
	  SELECT destination, $21, count(*) FROM made WHERE status = 'pending' GROUP BY destination
	  ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n)
	SELECT won.ord, won.seq, COALESCE(array_agg(made.id ORDER BY made.id) FILTER (WHERE made.id IS NOT NULL), '{}')
	FROM won LEFT JOIN made ON made.event_seq = won.seq GROUP BY won.ord, won.seq`

// appendPlan is the statement of a group's appends (appendSQL and its arguments) and what answering them needs.
type appendPlan struct {
	s                 *Store
	calls             []*appendCall
	now               time.Time
	args              []any
	n                 int
	dDest, dKey, dWhy []string
	dNext             []int64
	dLeased, dFan     []bool
	dups              []dupWork
}

// appendAll runs the appends of calls in one statement and answers each call's events.
func (s *Store) appendAll(ctx context.Context, tx pgx.Tx, calls []*appendCall) error {
	shard, _ := ctx.Value(shardKey{}).(int64)
	p := s.planAppend(calls, shard)
	rows, err := tx.Query(ctx, appendSQL, p.args...)
	if err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return p.answer(ctx, tx, rows)
}

// planAppend gathers the arguments of appendSQL for calls.
func (s *Store) planAppend(calls []*appendCall, shard int64) *appendPlan {
	now := s.opts.Now()
	n, m := 0, 0
	for _, c := range calls {
		n += len(c.evs)
		for i := range c.evs {
			m += len(c.evs[i].Destinations)
		}
	}
	tenants, ids, topics := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	times, corr, traces := make([]int64, 0, n), make([]string, 0, n), make([]*string, 0, n)
	mds, scs, datas := make([][]byte, 0, n), make([][]byte, 0, n), make([][]byte, 0, n)
	dOrd, dNext, dTok := make([]int64, 0, m), make([]int64, 0, m), make([]int64, 0, m)
	dDest, dKey, dWhy := make([]string, 0, m), make([]string, 0, m), make([]string, 0, m)
	dLeased, dBlock, dTest := make([]bool, 0, m), make([]bool, 0, m), make([]bool, 0, m)
	dPos, dFan := make([]int32, 0, m), make([]bool, 0, m)
	for _, c := range calls {
		c.leased, c.fan, c.leaseUntil = c.leased[:0], c.fan[:0], nanos(now.Add(c.opts.Lease))
		leaseEnd := nanos(s.leaseEnd(now, c.opts.Lease))
		c.leaseEnds = leaseEnd
		for i := range c.evs {
			ne := &c.evs[i]
			ev := &ne.Event
			c.res[i] = store.AppendResult{ID: ev.ID}
			var tr *string
			if ev.Traceparent != "" {
				tr = &ev.Traceparent
			}
			data := []byte(ev.Data)
			if data == nil {
				data = []byte{}
			}
			tenants, ids, topics = append(tenants, ev.Tenant), append(ids, ev.ID), append(topics, ev.Topic)
			times, corr, traces = append(times, nanos(ev.Time)), append(corr, ev.CorrelationID), append(traces, tr)
			mds, scs, datas = append(mds, marshalMap(ev.Metadata)), append(scs, marshalMap(ev.Scope)), append(datas, data)
			ord := int64(len(tenants))
			fan := fansOut(ne)
			for j, dest := range ne.Destinations {
				next, l, tok := nanos(now), false, int64(0)
				if j < len(ne.Leased) && ne.Leased[j] {
					next, l, tok = leaseEnd, true, c.token
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
				dOrd, dDest, dNext, dLeased, dTok = append(dOrd, ord), append(dDest, dest), append(dNext, next), append(dLeased, l), append(dTok, tok)
				dKey, dBlock, dTest, dWhy = append(dKey, k), append(dBlock, b), append(dTest, ne.Test), append(dWhy, why)
				dPos, dFan = append(dPos, int32(j)), append(dFan, fan)
			}
		}
	}
	return &appendPlan{s: s, calls: calls, now: now, n: n, dDest: dDest, dKey: dKey, dWhy: dWhy, dNext: dNext, dLeased: dLeased,
		dFan: dFan,
		args: []any{tenants, ids, topics, times, corr, mds, scs, datas, traces, nanos(now), s.nodeID,
			dOrd, dDest, dNext, dLeased, dTok, dKey, dBlock, dTest, dWhy, shard, dPos, dFan}}
}

// fanoutMin is the fewest deliveries an event goes in as a fanouts row with (a variable for benchmarks).
var fanoutMin = 2

// fansOut reports whether ne's deliveries go in as one fanouts row (appendSQL): two or more, all leased at
// birth, none ordered, none born skipped, and not a test send. A single delivery stays a row: made a fanouts
// row, it cost PostgreSQL more than its row in single-pg and nodes3-pg (docs/performance.md).
func fansOut(ne *store.NewEvent) bool {
	if len(ne.Destinations) < fanoutMin || ne.Test {
		return false
	}
	for j := range ne.Destinations {
		if j >= len(ne.Leased) || !ne.Leased[j] || (j < len(ne.OrderingKeys) && ne.OrderingKeys[j] != "") ||
			(j < len(ne.Skipped) && ne.Skipped[j] != "") {
			return false
		}
	}
	return true
}

// answer reads appendSQL's rows into the calls' results and looks up the duplicates with q.
func (p *appendPlan) answer(ctx context.Context, q querier, rows pgx.Rows) error {
	if err := p.read(rows); err != nil {
		return err
	}
	return p.finish(ctx, q)
}

// dupWork is what answering one call's duplicates needs.
type dupWork struct {
	c          *appendCall
	ts, is     []string
	owner      []int64
	dupT, dupI []string
}

// finish answers the duplicates read found, looking them up with q (the transaction, or the pool once the
// appends committed: the events they duplicate are committed too).
func (p *appendPlan) finish(ctx context.Context, q querier) error {
	for _, d := range p.dups {
		if err := p.s.duplicates(ctx, q, p.now, d.c.opts, d.c.res, d.ts, d.is, d.owner, d.dupT, d.dupI); err != nil {
			return err
		}
	}
	return nil
}

// read reads appendSQL's rows into the calls' results, noting the duplicates for finish.
func (p *appendPlan) read(rows pgx.Rows) error {
	calls, now, n := p.calls, p.now, p.n
	dDest, dKey, dWhy, dNext, dLeased, dFan := p.dDest, p.dKey, p.dWhy, p.dNext, p.dLeased, p.dFan
	type won struct {
		seq int64
		ds  []int64
	}
	wins := make(map[int64]won, n)
	for rows.Next() {
		var ord int64
		var w won
		if err := rows.Scan(&ord, &w.seq, &w.ds); err != nil {
			rows.Close()
			return fmt.Errorf("insert events: %w", err)
		}
		wins[ord] = w
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	// Answer the winners; the rest are duplicates, answered last (one of an event earlier in this very
	// statement sees its deliveries).
	ord, k := int64(0), 0
	for _, c := range calls {
		owner := make([]int64, len(c.evs))
		var dupT, dupI []string
		for i := range c.evs {
			ord++
			ne := &c.evs[i]
			w, ok := wins[ord]
			if !ok {
				k += len(ne.Destinations)
				dupT, dupI = append(dupT, ne.Event.Tenant), append(dupI, ne.Event.ID)
				continue
			}
			owner[i] = w.seq
			if len(w.ds) != len(ne.Destinations) {
				return fmt.Errorf("insert deliveries: %d rows for %d destinations", len(w.ds), len(ne.Destinations))
			}
			c.res[i].Deliveries = make([]store.Delivery, len(ne.Destinations))
			for j := range ne.Destinations {
				status := store.Pending
				if dWhy[k] != "" {
					status = store.Skipped
				}
				c.res[i].Deliveries[j] = store.Delivery{ID: w.ds[j], EventID: ne.Event.ID, Destination: dDest[k], Status: status,
					NextAt: fromNanos(dNext[k]), CreatedAt: now.UTC(), UpdatedAt: now.UTC(), OrderingKey: dKey[k], Test: ne.Test,
					LastError: dWhy[k]}
				if dLeased[k] {
					c.leased, c.fan = append(c.leased, w.ds[j]), append(c.fan, dFan[k])
				}
				k++
			}
		}
		if len(dupT) > 0 {
			ts, is := make([]string, len(c.evs)), make([]string, len(c.evs))
			for i := range c.evs {
				ts[i], is[i] = c.evs[i].Event.Tenant, c.evs[i].Event.ID
			}
			p.dups = append(p.dups, dupWork{c: c, ts: ts, is: is, owner: owner, dupT: dupT, dupI: dupI})
		}
	}
	return nil
}

// duplicates answers the inputs whose (tenant, id) was stored already: a duplicate within the window, or
// refused with ErrIDReused outside it.
func (s *Store) duplicates(ctx context.Context, tx querier, now time.Time, opts store.AppendOptions, res []store.AppendResult,
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
	rows, err := q.Query(ctx, s.deliveriesOfSQL(), seqs)
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

// deliveriesOfSQL is deliveriesOf's statement: one snapshot of both tables, so a row the mover moves meanwhile is
// seen once. Each event's rows are a range of ids (idsOf).
func (s *Store) deliveriesOfSQL() string {
	of := func(table string) string {
		return `SELECT ` + prefixed("t.", deliveryCols) + `, t.event_seq FROM (SELECT DISTINCT unnest($1::bigint[]) AS qs) q
			JOIN ` + table + ` t ON ` + s.idsOf("t", "q.qs", "q.qs")
	}
	return of("deliveries") + ` UNION ALL ` + of("delivery_log") + ` UNION ALL SELECT ` + prefixed("t.", deliveryCols) +
		`, t.event_seq FROM (SELECT DISTINCT unnest($1::bigint[]) AS qs) q JOIN fanout_deliveries t ON t.event_seq = q.qs ORDER BY id`
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

// claimSQL leases up to $3 due deliveries of destination $1, those first whose turn came first: pending ones
// whose ordering key (if any) no earlier pending delivery holds, nor an earlier failed one when the delivery
// blocks on failures. It reads only the destination's own rows (deliveries_due), whatever others hold
// (TestBatchesFindRowsByID).
var claimSQL = `WITH c AS (
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
	RETURNING ` + prefixed("d.", deliveryCols) + `, d.event_seq, c.due`

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
	// The open entries of the destination whose fanouts row's lease ran out become rows Claim can take.
	if err := spill(ctx, s.pool, `f.lease_until <= $1 AND $2 = ANY(f.dests)`, nanos(now), destination); err != nil {
		return nil, unavailable(fmt.Errorf("claim: %w", err))
	}
	// One statement is its own transaction: no BEGIN and COMMIT round trips around it.
	err := func() error {
		rows, err := s.pool.Query(ctx, claimSQL,
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
	}()
	if err != nil {
		return nil, unavailable(err)
	}
	if len(got) == 0 {
		return nil, nil
	}
	until := nanos(now.Add(lease))
	seqs, received := make([]int64, 0, len(got)), make([]int64, 0, len(got))
	for _, c := range got {
		s.holds.put(c.job.Delivery.ID, hold{token: token, until: until, ends: nanos(s.leaseEnd(now, lease))})
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

// completeSQL is a Complete in one statement: a delivery that ends leaves deliveries for delivery_log (mv, lg),
// one that goes on is updated in place (upd; so is a failed one with an ordering key, which must stay where
// Claim sees it), the ones that ended leave this writer's pending counters, and the attempts of those that
// moved on either way (the others were not this caller's to record) go in. mv and upd take disjoint rows. A
// delivery that ends at its first attempt keeps that attempt on its log row (a1_*, migration 0006) instead of a
// row of attempts.
//
// Rows are found by id only. Their status is compared with u.pend, a column of the materialized u that is
// always 'pending', not with the constant: the constant matches the predicate of the partial index
// deliveries_due, and the planner, going by statistics that say few rows are pending (a server with
// autovacuum off never analyzes deliveries), then read every pending row of every destination to find the
// batch's few hundred: 50,000 rows and 16 ms per batch behind a backlog of 50,000, and more in proportion,
// with the lanes of every destination waiting on those commits. Found by id, a batch reads its own rows
// whatever the backlog (TestBatchesFindRowsByID). mv also names its ids as an array, which lets one index scan
// of the primary key fetch them; upd does not, so that it starts from its own outcomes (a retry or a blocked
// key, usually none) instead of fetching every row of the batch a second time.
const completeSQL = `WITH u AS MATERIALIZED (
	  SELECT *, 'pending'::text AS pend FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::bigint[],
	    $9::int[], $10::bigint[], $11::bigint[], $12::int[], $13::bytea[])
	    AS u(id, st, tried, nx, er, tok, n, at, us, code, resp)),
	mv AS (
	  DELETE FROM deliveries d USING u
	  WHERE d.id = ANY($1::bigint[]) AND d.id = u.id AND d.status = u.pend AND u.st <> 'pending' AND NOT (u.st = 'failed' AND d.ordering_key <> '')
	    AND (d.claim_token = u.tok OR (u.tok = 0 AND (NOT d.leased OR d.next_at <= $7)))
	  RETURNING d.id, d.event_seq, d.event_id, d.destination, u.st, d.attempts + u.tried AS attempts, u.nx, d.created_at,
	    u.er, d.ordering_key, d.ordering_block, d.retry_base, d.test,
	    u.n = 1 AND d.attempts + u.tried = 1 AS logged1, u.at, u.us, u.code, u.resp),
	lg AS (
	  INSERT INTO delivery_log (` + logCols + `, a1_at, a1_us, a1_code, a1_error, a1_response)
	  SELECT id, event_seq, event_id, destination, st, attempts, nx, created_at, $7, er, ordering_key, ordering_block,
	    retry_base, test, CASE WHEN logged1 THEN at END, CASE WHEN logged1 THEN us END, CASE WHEN logged1 THEN code END,
	    CASE WHEN logged1 THEN er END, CASE WHEN logged1 THEN resp END
	  FROM mv),
	upd AS (
	  UPDATE deliveries d SET status = u.st, attempts = d.attempts + u.tried, next_at = u.nx,
	    leased = false, claim_token = 0, claim_node = 0, updated_at = $7, last_error = u.er
	  FROM u
	  WHERE d.id = u.id AND d.status = u.pend AND (u.st = 'pending' OR (u.st = 'failed' AND d.ordering_key <> ''))
	    AND (d.claim_token = u.tok OR (u.tok = 0 AND (NOT d.leased OR d.next_at <= $7)))
	  RETURNING d.id, d.destination, d.status, d.created_at),
	done AS (
	  SELECT id, destination, st AS status, created_at, logged1 FROM mv
	  UNION ALL SELECT id, destination, status, created_at, false FROM upd),
	cnt AS (
	  INSERT INTO pending_counts (destination, shard, n)
	  SELECT destination, $8, -count(*) FROM done WHERE status <> 'pending' GROUP BY destination
	  ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n)
	INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response, received_at)
	SELECT u.id, u.n, u.at, u.us, u.code, u.er, u.resp, done.created_at
	FROM u JOIN done ON done.id = u.id
	WHERE u.n > 0 AND NOT (u.n = 1 AND done.logged1)
	ON CONFLICT (delivery_id, n, received_at) DO UPDATE SET at = excluded.at, duration_us = excluded.duration_us,
		status_code = excluded.status_code, error = excluded.error, response = excluded.response`

// fanCompleteSQL is completeSQL for deliveries carried by fanouts rows (migration 0009): it closes the entries
// of the outcomes whose row still has the completer's token, writing the log row (first attempt on it) of
// each that ended, or a deliveries row (pending, due at its retry, unleased) of each that goes on, and takes
// the ended ones off this writer's pending counters. The entries it closes (g) are read from the statement's
// snapshot of the rows: only a row's holder changes its open entries, and a node writes its completions one
// transaction at a time (its completion writer), so they are still open when the row is locked. A row whose
// open entries the outcomes close all is deleted (fd), another has them closed and counted down (fu). What
// can happen meanwhile is a spill (another node's, deleting the row): then neither takes it, and the statement
// answers the ids of the outcomes it did not close, which Complete writes again as rows.
const fanCompleteSQL = `WITH u AS MATERIALIZED (
	  SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::bigint[],
	    $9::int[], $10::bigint[], $11::bigint[], $12::int[], $13::bytea[])
	    AS u(id, st, tried, nx, er, tok, n, at, us, code, resp)),
	g AS (
	  SELECT f.event_seq AS seq, f.claim_token AS tok, array_agg(x.p) AS ps, f.remaining = count(*) AS last
	  FROM (SELECT id >> 16 AS seq, tok, (id & 65535)::int + 1 AS p FROM u WHERE tok <> 0) x
	  JOIN fanouts f ON f.event_seq = x.seq AND f.claim_token = x.tok AND f.open[x.p]
	  GROUP BY f.event_seq, f.claim_token, f.remaining),
	fd AS (
	  DELETE FROM fanouts f USING g WHERE f.event_seq = g.seq AND f.claim_token = g.tok AND g.last
	  RETURNING f.event_seq, f.event_id, f.dests, f.created_at),
	fu AS (
	  UPDATE fanouts f SET open = ARRAY(SELECT o.v AND NOT o.i = ANY(g.ps) FROM unnest(f.open) WITH ORDINALITY AS o(v, i) ORDER BY o.i),
	    remaining = f.remaining - cardinality(g.ps)
	  FROM g WHERE f.event_seq = g.seq AND f.claim_token = g.tok AND NOT g.last
	  RETURNING f.event_seq, f.event_id, f.dests, f.created_at),
	c AS (
	  SELECT x.event_seq, x.event_id, x.dests, x.created_at, k.i
	  FROM (SELECT * FROM fd UNION ALL SELECT * FROM fu) x JOIN g ON g.seq = x.event_seq CROSS JOIN LATERAL unnest(g.ps) AS k(i)),
	e AS MATERIALIZED (
	  SELECT u.*, c.event_seq, c.event_id, c.dests[c.i] AS destination, c.created_at, u.n = 1 AND u.tried = 1 AS logged1
	  FROM c JOIN u ON u.id = (c.event_seq << 16) + c.i - 1),
	lg AS (
	  INSERT INTO delivery_log (` + logCols + `, a1_at, a1_us, a1_code, a1_error, a1_response)
	  SELECT id, event_seq, event_id, destination, st, tried, nx, created_at, $7, er, '', false, 0, false,
	    CASE WHEN logged1 THEN at END, CASE WHEN logged1 THEN us END, CASE WHEN logged1 THEN code END,
	    CASE WHEN logged1 THEN er END, CASE WHEN logged1 THEN resp END
	  FROM e WHERE st <> 'pending'),
	rw AS (
	  INSERT INTO deliveries (` + logCols + `, leased, claim_token, claim_node)
	  SELECT id, event_seq, event_id, destination, 'pending', tried, nx, created_at, $7, er, '', false, 0, false, false, 0, 0
	  FROM e WHERE st = 'pending'),
	cnt AS (
	  INSERT INTO pending_counts (destination, shard, n)
	  SELECT destination, $8, -count(*) FROM e WHERE st <> 'pending' GROUP BY destination
	  ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n),
	att AS (
	  INSERT INTO attempts (delivery_id, n, at, duration_us, status_code, error, response, received_at)
	  SELECT id, n, at, us, code, er, resp, created_at FROM e
	  WHERE n > 0 AND NOT (st <> 'pending' AND logged1)
	  ON CONFLICT (delivery_id, n, received_at) DO UPDATE SET at = excluded.at, duration_us = excluded.duration_us,
	    status_code = excluded.status_code, error = excluded.error, response = excluded.response)
	SELECT id FROM u WHERE id NOT IN (SELECT id FROM e)`

// spillSQL turns the fanouts rows that match a condition (appended after it: WHERE ...) into rows of deliveries
// for their open entries, as intake would have written them — pending, leased under the same token by the same
// node until the same time — and deletes them, in one statement. Whoever must act on an open entry spills its
// row first; the holder then completes and renews them as rows (completeSQL, renewSQL).
const spillSQL = `WITH f AS (DELETE FROM fanouts f `

const spillTail = ` RETURNING f.*)
	INSERT INTO deliveries (` + logCols + `, leased, claim_token, claim_node)
	SELECT (f.event_seq << 16) + o.i - 1, f.event_seq, f.event_id, o.destination, 'pending', 0, f.lease_until, f.created_at,
	  f.created_at, '', '', false, 0, false, true, f.claim_token, f.claim_node
	FROM f CROSS JOIN LATERAL unnest(f.dests, f.open) WITH ORDINALITY AS o(destination, is_open, i)
	WHERE o.is_open`

// spill runs spillSQL for the fanouts rows that match where (a condition on f, with args) on q.
func spill(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, where string, args ...any) error {
	if _, err := q.Exec(ctx, spillSQL+`WHERE `+where+spillTail, args...); err != nil {
		return fmt.Errorf("spill fan-outs: %w", err)
	}
	return nil
}

// renewSQL extends the leases this process still holds, finding its rows by id as completeSQL does.
const renewSQL = `WITH u AS MATERIALIZED (
	  SELECT *, 'pending'::text AS pend FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, tok, until))
	UPDATE deliveries d SET next_at = LEAST($4::bigint, u.until)
	FROM u
	WHERE d.id = ANY($1::bigint[]) AND d.id = u.id AND d.claim_token = u.tok AND d.status = u.pend AND u.until > $5
	RETURNING d.id`

// fanRenewSQL is renewSQL for the entries of fanouts rows: it extends each row whose token a hold has, and
// answers the ids of the held entries still open on it.
const fanRenewSQL = `WITH u AS MATERIALIZED (
	  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, tok, until)),
	r AS (
	  UPDATE fanouts f SET lease_until = LEAST($4::bigint, g.until)
	  FROM (SELECT id >> 16 AS seq, tok, max(until) AS until FROM u GROUP BY 1, 2) g
	  WHERE f.event_seq = g.seq AND f.claim_token = g.tok AND g.until > $5
	  RETURNING f.event_seq, f.claim_token, f.open)
	SELECT u.id FROM u JOIN r ON r.event_seq = u.id >> 16 AND r.claim_token = u.tok AND r.open[(u.id & 65535) + 1]`

// Complete implements store.Store. A delivery this process holds is completed only while its claim token is
// still the one stored (no other node took it over after the lease ran out); one it does not hold, only while
// nobody holds a live lease on it.
func (s *Store) Complete(ctx context.Context, outs []store.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	// Deliveries born on a fanouts row go through fanCompleteSQL, the rest through completeSQL. Entries on
	// fanouts rows first: a spill that comes later waits for this transaction and spills only what it left
	// open. One spilled before it took the row's lock is a row fanCompleteSQL answers as missed (it cannot see
	// rows committed after it started); those are completed as rows in a second transaction.
	toks, fan := make([]int64, len(outs)), make([]bool, len(outs))
	anyFan := false
	for i, o := range outs {
		hd := s.holds.get(o.DeliveryID)
		toks[i], fan[i] = hd.token, hd.fan
		anyFan = anyFan || hd.fan
	}
	rows, rowToks := outs, toks
	var fans []store.Outcome
	var fanToks []int64
	if anyFan {
		rows, rowToks = nil, nil
		fanIDs := map[int64]bool{}
		for i, o := range outs {
			switch {
			case !fan[i]:
				rows, rowToks = append(rows, o), append(rowToks, toks[i])
			case !fanIDs[o.DeliveryID]: // an outcome given twice: fanCompleteSQL closes an entry once
				fanIDs[o.DeliveryID] = true
				fans, fanToks = append(fans, o), append(fanToks, toks[i])
			}
		}
	}
	var missed map[int64]bool
	o := completion(func(shard int64) []stmt {
		now := nanos(s.opts.Now())
		var sts []stmt
		if len(fans) > 0 {
			missed = nil
			sts = append(sts, stmt{sql: fanCompleteSQL, args: outcomeArgs(fans, fanToks, now, shard), scan: func(r pgx.Rows) error {
				ids, err := pgx.CollectRows(r, pgx.RowTo[int64])
				if err == nil && len(ids) > 0 {
					missed = make(map[int64]bool, len(ids))
					for _, id := range ids {
						missed[id] = true
					}
				}
				return err
			}})
		}
		if len(rows) > 0 {
			sts = append(sts, stmt{sql: completeSQL, args: outcomeArgs(rows, rowToks, now, shard)})
		}
		return sts
	})
	// The holds these outcomes end (an outcome given twice ends its hold once).
	ids, held := slices.Concat(outcomeIDs(rows), outcomeIDs(fans)), slices.Concat(rowToks, fanToks)
	o.after = func() { s.holds.drop(ids, held) }
	err := s.write(ctx, o)
	if err == nil && len(missed) > 0 {
		var again []store.Outcome
		var againToks []int64
		for i, out := range fans {
			if missed[out.DeliveryID] {
				again, againToks = append(again, out), append(againToks, fanToks[i])
			}
		}
		err = s.write(ctx, completion(func(shard int64) []stmt {
			return []stmt{{sql: completeSQL, args: outcomeArgs(again, againToks, nanos(s.opts.Now()), shard)}}
		}))
	}
	if err != nil {
		// The caller keeps nothing of these deliveries now; renewing their leases would keep them from every
		// node for as long as the leases asked for. Unrenewed, they come back within LeaseTTL.
		s.holds.drop(ids, held)
	}
	return err
}

// completion is the operation of a Complete whose statements stmts gives (see op.complete).
func completion(stmts func(shard int64) []stmt) *op {
	o := &op{complete: stmts}
	o.fn = func(ctx context.Context, tx pgx.Tx) error {
		shard, _ := ctx.Value(shardKey{}).(int64)
		for _, st := range stmts(shard) {
			if err := st.run(ctx, tx); err != nil {
				return fmt.Errorf("complete deliveries: %w", err)
			}
		}
		return nil
	}
	return o
}

// outcomeIDs returns the delivery ids of outs.
func outcomeIDs(outs []store.Outcome) []int64 {
	ids := make([]int64, len(outs))
	for i, o := range outs {
		ids[i] = o.DeliveryID
	}
	return ids
}

// outcomeArgs are the arguments of completeSQL and fanCompleteSQL for outs, completed under toks (same index).
func outcomeArgs(outs []store.Outcome, toks []int64, now, shard int64) []any {
	n := len(outs)
	ids, nexts := make([]int64, n), make([]int64, n)
	statuses, errs := make([]string, n), make([]string, n)
	tried := make([]int32, n)
	// Each outcome's attempt (n 0: none), aligned with ids.
	aN, aCode := make([]int32, n), make([]int32, n)
	aAt, aUs := make([]int64, n), make([]int64, n)
	aResp := make([][]byte, n)
	for i, o := range outs {
		ids[i], nexts[i], statuses[i], errs[i] = o.DeliveryID, nanos(o.NextAt), string(o.Status), o.Attempt.Error
		if o.Attempt.N > 0 {
			tried[i] = 1
			a := o.Attempt
			aN[i], aCode[i], aAt[i], aUs[i], aResp[i] = int32(a.N), int32(a.StatusCode), nanos(a.At), a.Duration.Microseconds(), a.Response
		}
	}
	return []any{ids, statuses, tried, nexts, errs, toks, now, shard, aN, aAt, aUs, aCode, aResp}
}

var _ store.Lingerer = (*Store)(nil)

// CompleteLinger implements store.Lingerer. Outcomes nobody waits on (first attempts of unordered destinations
// that succeeded or failed for good) wait up to this long for company, so a node writes its completions a few
// dozen to a commit instead of a handful: with three nodes on one database, completion-only commits were 40% of
// all commits and PostgreSQL's CPU per event fell by a quarter with this wait (docs/performance.md).
func (s *Store) CompleteLinger() time.Duration { return completeLinger }

const completeLinger = 20 * time.Millisecond

// ReleaseLeases implements store.Store: on a shared database it hands back this process's own leases and
// those of nodes that are gone (their presence lock is free), never a live node's.
func (s *Store) ReleaseLeases(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable(fmt.Errorf("release leases: %w", err))
	}
	defer conn.Release()
	rows, err := conn.Query(ctx, `SELECT claim_node FROM deliveries WHERE status = 'pending' AND leased AND claim_node <> $1
		UNION SELECT claim_node FROM fanouts WHERE claim_node <> $1`, s.nodeID)
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
	if err := spill(ctx, conn, `f.claim_node = ANY($1)`, gone); err != nil {
		return unavailable(fmt.Errorf("release leases: %w", err))
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
	if s.opts.LeaseTTL < 0 {
		s.wg.Done()
		return
	}
	s.every(ctx, s.opts.LeaseTTL/3, func() {
		// Only leases with less than 5/6 of LeaseTTL left are renewed (one not renewed last tick has at least
		// half left, so a failed renewal still leaves a tick to spare): most deliveries end long before, and
		// rewriting their rows would only contend with their completions.
		now := s.opts.Now()
		ids, toks, untils := s.holds.due(nanos(now.Add(5 * s.opts.LeaseTTL / 6)))
		if len(ids) == 0 {
			return
		}
		// Fanouts rows first: one spilled meanwhile is found as rows by the second statement.
		kept := map[int64]bool{}
		for _, q := range []string{fanRenewSQL, renewSQL} {
			rows, err := s.pool.Query(ctx, q, ids, toks, untils, nanos(now.Add(s.opts.LeaseTTL)), nanos(now))
			if err != nil {
				if ctx.Err() == nil {
					s.opts.Logger.Warn("store: renew leases", "leases", len(ids), "err", err)
				}
				return
			}
			for rows.Next() {
				var id int64
				if rows.Scan(&id) == nil {
					kept[id] = true
				}
			}
			rows.Close()
			if rows.Err() != nil {
				return
			}
		}
		var gone, goneToks, keptIDs, keptToks []int64
		for i, id := range ids {
			if !kept[id] {
				gone, goneToks = append(gone, id), append(goneToks, toks[i])
			} else {
				keptIDs, keptToks = append(keptIDs, id), append(keptToks, toks[i])
			}
		}
		s.holds.drop(gone, goneToks)
		s.holds.renewed(keptIDs, keptToks, nanos(now.Add(s.opts.LeaseTTL)))
	})
}

// spillExpired spills, every second (or LeaseTTL/3 if shorter), the fanouts rows whose lease has run out: a
// node that died leaves them, and spilled they are rows whose lease has run out, which every node's lanes claim
// (claimSQL). Every node does it; a row goes once (the spill deletes it).
func (s *Store) spillExpired(ctx context.Context) {
	if s.opts.LeaseTTL < 0 {
		s.wg.Done()
		return
	}
	s.every(ctx, min(time.Second, s.opts.LeaseTTL/3), func() {
		if err := spill(ctx, s.pool, `f.lease_until <= $1`, nanos(s.opts.Now())); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("store: spill expired fan-outs", "err", err)
		}
	})
}

// SkipPending implements store.Store.
func (s *Store) SkipPending(ctx context.Context, destination, reason string) (int, error) {
	var n int64
	err := s.write(ctx, &op{fn: func(ctx context.Context, tx pgx.Tx) error {
		if err := spill(ctx, tx, `$1 = ANY(f.dests)`, destination); err != nil {
			return err
		}
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

// eventSQL finds event $1 of tenant $2 (NULL: the first of any tenant's with that id).
const eventSQL = `SELECT seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data, traceparent
	FROM events WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) ORDER BY seq LIMIT 1`

func (s *Store) event(ctx context.Context, tenant *string, id string) (*store.EventRecord, error) {
	var rec store.EventRecord
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var seq, t, received int64
		var md, sc, data []byte
		ev := &rec.Event
		var tp *string
		err := tx.QueryRow(ctx, eventSQL, id, tenant).Scan(&seq, &ev.ID, &ev.Topic, &ev.Tenant, &t, &received,
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
		ids := make([]int64, len(rec.Deliveries))
		for i := range rec.Deliveries {
			ids[i] = rec.Deliveries[i].ID
		}
		rows, err := tx.Query(ctx, attemptsSQL+` ORDER BY delivery_id, n`, ids, received)
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

// attemptsSQL reads the attempts of the deliveries $1 of one event (received at $2): the rows of attempts, and
// the first attempts kept on log rows (completeSQL). The caller orders them.
const attemptsSQL = `SELECT delivery_id, n, at, duration_us, status_code, error, response FROM attempts
	WHERE delivery_id = ANY($1) AND received_at = $2
	UNION ALL
	SELECT id, 1, a1_at, a1_us, a1_code, a1_error, a1_response FROM delivery_log
	WHERE id = ANY($1) AND created_at = $2 AND a1_at IS NOT NULL`

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
