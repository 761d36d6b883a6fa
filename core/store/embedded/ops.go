package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

type stmts struct {
	findEvent, eventDeliveries *sql.Stmt
	// insEvents[k] inserts 1<<k events in one statement (see insertEvents).
	insEvents [insChunks]*sql.Stmt
	// insDeliveries[k] inserts 1<<k deliveries of one event in one statement (see Append).
	insDeliveries [insChunks]*sql.Stmt
	// insDone[k] writes 1<<k deferred deliveries in their final state in one statement (see Complete);
	// insDelivered[k] the same for deliveries that succeeded at their first attempt, the common case.
	insDone, insDelivered                        [insChunks]*sql.Stmt
	complete, completeFirst, insAttempt, nextDue *sql.Stmt
	readEvent, readDeliveries, readAttempts      *sql.Stmt
}

func (s *stmts) prepare(w, r *sql.DB) error {
	var err error
	prep := func(db *sql.DB, q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = db.Prepare(q)
		return st
	}
	for k := range s.insEvents {
		s.insEvents[k] = prep(w, insEventsSQL(1<<k))
	}
	s.findEvent = prep(w, `SELECT seq, received_at, dfirst, dlast FROM events WHERE id = ? AND tenant = ?`)
	for k := range s.insDeliveries {
		s.insDeliveries[k] = prep(w, insDeliveriesSQL(1<<k))
	}
	s.eventDeliveries = prep(w, `SELECT `+deliveryCols+` FROM deliveries WHERE `+ofEvent+` ORDER BY id`)
	s.complete = prep(w, `UPDATE deliveries SET status = ?, attempts = attempts + ?, next_at = ?, leased = 0,
		updated_at = ?, last_error = ? WHERE id = ? AND status = 'pending'`)
	s.completeFirst = prep(w, `UPDATE deliveries SET status = ?, attempts = attempts + 1, next_at = ?, leased = 0,
		updated_at = ?, last_error = ?, a1_at = ?, a1_us = ?, a1_code = ?, a1_error = ?, a1_response = ?
		WHERE id = ? AND status = 'pending'`)
	for k := range s.insDone {
		s.insDone[k] = prep(w, insDoneSQL(1<<k, doneRow))
		s.insDelivered[k] = prep(w, insDoneSQL(1<<k, deliveredRow))
	}
	s.insAttempt = prep(w, `INSERT OR REPLACE INTO attempts (delivery_id, n, at, duration_us, status_code, error, response)
		VALUES (?,?,?,?,?,?,?)`)
	s.nextDue = prep(r, `SELECT next_at FROM deliveries WHERE destination = ? AND status = 'pending' AND leased = 0
		ORDER BY next_at LIMIT 1`)
	s.readEvent = prep(r, `SELECT seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data,
		traceparent, dfirst, dlast FROM events WHERE id = ?1 AND (?2 = 0 OR tenant = ?3) ORDER BY seq LIMIT 1`)
	s.readDeliveries = prep(r, `SELECT `+deliveryCols+`, `+attempt1Cols+` FROM deliveries WHERE `+ofEvent+` ORDER BY id`)
	// The range may hold attempts of another event's deliveries (rows an earlier version wrote): the caller
	// keeps those of the event's own.
	s.readAttempts = prep(r, `SELECT delivery_id, n, at, duration_us, status_code, error, response FROM attempts
		WHERE delivery_id BETWEEN ?1 AND ?2 ORDER BY delivery_id, n`)
	return err
}

// deferrable reports whether ne's delivery d may be deferred (deferred.go): leased at birth, unordered and not
// skipped.
func deferrable(ne *store.NewEvent, d int) bool {
	return d < len(ne.Leased) && ne.Leased[d] && (d >= len(ne.OrderingKeys) || ne.OrderingKeys[d] == "") &&
		(d >= len(ne.Skipped) || ne.Skipped[d] == "")
}

// ofEvent selects an event's deliveries: ?1 and ?2 are its dfirst and dlast, ?3 its seq.
const ofEvent = `id BETWEEN ?1 AND ?2 AND event_seq = ?3`

// insChunks is how many sizes of multi-row delivery inserts are prepared: 1, 2, 4, … 1<<(insChunks-1) rows.
const insChunks = 6

// insChunk picks the prepared multi-row insert for the rows waiting: the largest size, 1<<k, that they fill.
func insChunk(rows int) int {
	k := insChunks - 1
	for 1<<k > rows {
		k--
	}
	return k
}

// insDeliveriesSQL inserts n deliveries of one event, deliveryArgs values per row: the event's (event_seq,
// event_id, created_at = updated_at, test), then the delivery's own. The parameters are plain ?, each event
// value given again for every row: the driver looks up the name of every numbered parameter (?1) on every
// execution, a C string copied into a Go string each time, which cost more than binding the values again.
func insDeliveriesSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO deliveries (event_seq, event_id, created_at, updated_at, test, id, destination, status,
		next_at, leased, ordering_key, ordering_block, last_error) VALUES `)
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", deliveryArgs), ",") + ")"
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return b.String()
}

// deliveryArgs is how many values each row of insDeliveriesSQL takes.
const deliveryArgs = 13

// insEventsSQL inserts n events, eventArgs values per row; a row whose (id, tenant) is taken is left out.
func insEventsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO events (id, topic, tenant, time, received_at, correlation_id, metadata, scope, data,
		traceparent, dfirst, dlast, fanout) VALUES `)
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", eventArgs), ",") + ")"
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(` ON CONFLICT(id, tenant) DO NOTHING`)
	return b.String()
}

// eventArgs is how many values each row of insEventsSQL takes.
const eventArgs = 13

// insDoneSQL writes n deferred deliveries in their final state after their first attempt (or none: a
// destination whose breaker is open), each row as row says.
func insDoneSQL(n int, row string) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO deliveries (id, event_seq, event_id, destination, status, attempts, next_at, leased,
		created_at, updated_at, last_error, test, a1_at, a1_us, a1_code, a1_error, a1_response) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return b.String()
}

const (
	// doneRow takes doneArgs values: id, event_seq, event_id, destination, status, attempts, next_at,
	// created_at, updated_at, last_error, test, a1_at, a1_us, a1_code, a1_error, a1_response.
	doneRow  = "(?,?,?,?,?,?,?,0,?,?,?,?,?,?,?,?,?)"
	doneArgs = 16
	// deliveredRow is a doneRow delivered at its first attempt, with no error and not a test: its constant
	// columns are written into the statement, so a row binds deliveredArgs values (id, event_seq, event_id,
	// destination, created_at, updated_at, a1_at, a1_us, a1_code, a1_response), not 16.
	deliveredRow  = "(?,?,?,?,'delivered',1,0,0,?,?,'',0,?,?,?,NULL,?)"
	deliveredArgs = 10
)

func (s *stmts) close() {
	all := []*sql.Stmt{s.findEvent, s.eventDeliveries, s.complete, s.completeFirst, s.insAttempt, s.nextDue,
		s.readEvent, s.readDeliveries, s.readAttempts}
	all = append(append(append(append(all, s.insEvents[:]...), s.insDeliveries[:]...), s.insDone[:]...), s.insDelivered[:]...)
	for _, st := range all {
		if st != nil {
			st.Close()
		}
	}
}

// Append implements store.Store.
//
// The events themselves go in before any operation of the group runs, those of every Append of the group
// together (insertEvents): a statement costs several times what a row does. Append's own part, below, writes
// what follows from each event that went in, and answers those that did not as duplicates.
func (s *Store) Append(ctx context.Context, evs []store.NewEvent, opts store.AppendOptions) ([]store.AppendResult, error) {
	res := make([]store.AppendResult, len(evs))
	a := &appendWork{evs: evs}
	err := s.writeOp(ctx, &op{app: a, fn: func(ctx context.Context, tx *sql.Tx) error {
		now := a.now
		find := s.txStmt(tx, s.stmts.findEvent)
		var args []any
		for i := range evs {
			ne := &evs[i]
			ev := &ne.Event
			row := &a.rows[i]
			res[i] = store.AppendResult{ID: ev.ID}
			n := len(ne.Destinations)
			if row.seq == 0 {
				t := row.taken
				if t == nil {
					found, err := findEvent(ctx, find, ev)
					if err != nil {
						return fmt.Errorf("find duplicate event: %w", err)
					}
					t = &found
				}
				seq, received, dfirst, dlast := t.seq, t.received, t.dfirst, t.dlast
				if now.Sub(fromNanos(received)) > opts.DedupeWindow {
					res[i].Err = fmt.Errorf("%w: event %s was received at %s, outside the dedupe window; publish it with a new id",
						store.ErrIDReused, ev.ID, fromNanos(received).Format(time.RFC3339))
					continue
				}
				res[i].Duplicate = true
				// The first event's deliveries as they stand, deferred ones included.
				if err := s.writeDeferred(ctx, tx, func(r deferredRow) bool { return r.seq == seq }); err != nil {
					return err
				}
				ds, err := deliveriesOf(ctx, tx.Stmt(s.stmts.eventDeliveries), dfirst, dlast, seq)
				if err != nil {
					return err
				}
				for _, d := range ds {
					res[i].Deliveries = append(res[i].Deliveries, d.Delivery)
				}
				continue
			}
			seq := row.seq
			test := 0
			if ne.Test {
				test = 1
			}
			res[i].Deliveries = make([]store.Delivery, n)
			// Boxed once for all rows (an int64 in an interface is an allocation).
			var seqV, evID, created, testV any = seq, ev.ID, nanos(now), test
			// The rows written now go in by as few statements as the prepared sizes allow (10 = 8 + 2): a
			// statement costs several times what a row does.
			args, rows := args[:0], 0
			flush := func() error {
				for rows > 0 {
					k := insChunk(rows)
					m := 1 << k
					if _, err := s.txStmt(tx, s.stmts.insDeliveries[k]).ExecContext(ctx, args[:m*deliveryArgs]...); err != nil {
						return fmt.Errorf("insert delivery: %w", err)
					}
					args, rows = append(args[:0], args[m*deliveryArgs:]...), rows-m
				}
				return nil
			}
			for d := range n {
				id := row.first + int64(d)
				next, leased := now, 0
				if d < len(ne.Leased) && ne.Leased[d] {
					next, leased = now.Add(opts.Lease), 1
				}
				key, block := "", 0
				if d < len(ne.OrderingKeys) {
					key = ne.OrderingKeys[d]
				}
				if d < len(ne.OrderingBlock) && ne.OrderingBlock[d] {
					block = 1
				}
				status, reason := store.Pending, ""
				if d < len(ne.Skipped) && ne.Skipped[d] != "" {
					status, reason, next, leased, key, block = store.Skipped, ne.Skipped[d], now, 0, "", 0
				}
				res[i].Deliveries[d] = store.Delivery{ID: id, EventID: ev.ID, Destination: ne.Destinations[d], Status: status,
					NextAt: next, CreatedAt: now, UpdatedAt: now, OrderingKey: key, Test: ne.Test, LastError: reason}
				if row.deferred != nil && row.deferred[d] != "" {
					s.deferred.put(id, deferredRow{id: id, seq: seq, eventID: ev.ID, dest: ne.Destinations[d], created: nanos(now),
						leaseEnd: nanos(next), test: ne.Test})
					continue
				}
				args = append(args, seqV, evID, created, created, testV, id, ne.Destinations[d], string(status), nanos(next),
					leased, key, block, reason)
				if rows++; rows == 1<<(insChunks-1) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if err := flush(); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// appendWork is an Append's events on their way in: insertEvents fills now and rows before the Append's own
// part of the transaction runs.
type appendWork struct {
	evs  []store.NewEvent
	now  time.Time
	rows []eventRow // one per event
}

// eventRow is how an event went in.
type eventRow struct {
	first    int64    // the id of its first delivery: its deliveries are first … first+n-1
	deferred []string // the destinations of its deferred deliveries by position ("": not deferred); nil: none
	seq      int64    // its seq; 0 when it did not go in (its id was taken)
	taken    *stored  // when it did not go in, the stored event holding its id, if seqsOf looked it up
}

// stored is what Append needs of a stored event whose id a new one repeats (findEvent's row).
type stored struct {
	seq, received int64
	dfirst, dlast sql.NullInt64
}

// findEvent reads the stored event with ev's id and tenant.
func findEvent(ctx context.Context, find *sql.Stmt, ev *event.Event) (stored, error) {
	var t stored
	err := find.QueryRowContext(ctx, ev.ID, ev.Tenant).Scan(&t.seq, &t.received, &t.dfirst, &t.dlast)
	return t, err
}

// insertEvents inserts the events of the group's appends, in the order of the operations and of their events,
// by as few statements as the prepared sizes allow. Each event's delivery ids are chosen here, so its row can
// name their range (an event that does not go in leaves its range unused), and so are the deliveries that are
// deferred: leased at birth, unordered and not skipped (deferred.go), which the event row names meanwhile.
func (s *Store) insertEvents(ctx context.Context, tx *sql.Tx, ops []*op) error {
	var (
		now  time.Time
		args []any
		rows []*eventRow
		evs  []*event.Event
	)
	exec := func(k int) error {
		m := 1 << k
		r, err := s.txStmt(tx, s.stmts.insEvents[k]).ExecContext(ctx, args[:m*eventArgs]...)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		if err := s.seqsOf(ctx, tx, r, rows[:m], evs[:m]); err != nil {
			return err
		}
		args, rows, evs = append(args[:0], args[m*eventArgs:]...), append(rows[:0], rows[m:]...), append(evs[:0], evs[m:]...)
		return nil
	}
	for _, o := range ops {
		a := o.app
		if a == nil {
			continue
		}
		if now.IsZero() {
			now = s.opts.Now()
		}
		a.now, a.rows = now, make([]eventRow, len(a.evs))
		for i := range a.evs {
			ne := &a.evs[i]
			ev := &ne.Event
			row := &a.rows[i]
			n := len(ne.Destinations)
			first, last := sql.NullInt64{}, sql.NullInt64{}
			if n > 0 {
				first = sql.NullInt64{Int64: s.nextID, Valid: true}
				last = sql.NullInt64{Int64: s.nextID + int64(n) - 1, Valid: true}
			}
			row.first = s.nextID
			s.nextID += int64(n)
			var foBlob []byte
			for d := range n {
				if deferrable(ne, d) {
					if row.deferred == nil {
						row.deferred = make([]string, n)
					}
					row.deferred[d] = ne.Destinations[d]
				}
			}
			if row.deferred != nil {
				foBlob, _ = json.Marshal(fanout{Test: ne.Test, To: row.deferred})
			}
			args = append(args, ev.ID, ev.Topic, ev.Tenant, nanos(ev.Time), nanos(now), ev.CorrelationID,
				marshalMap(ev.Metadata), marshalMap(ev.Scope), []byte(ev.Data), nullString(ev.Traceparent), first, last, foBlob)
			rows, evs = append(rows, row), append(evs, ev)
			if len(rows) == 1<<(insChunks-1) {
				if err := exec(insChunks - 1); err != nil {
					return err
				}
			}
		}
	}
	for len(rows) > 0 {
		if err := exec(insChunk(len(rows))); err != nil {
			return err
		}
	}
	return nil
}

// seqsOf sets the seq of each row an insert of events wrote. The rows it wrote took the seqs after the
// highest one, in order, so when every row went in (the common case) they are the last ones; otherwise each
// event's seq is looked up and the row went in if its seq is one of those and no earlier row of the statement
// (an event with the same id and tenant) claimed it.
func (s *Store) seqsOf(ctx context.Context, tx *sql.Tx, r sql.Result, rows []*eventRow, evs []*event.Event) error {
	added, err := r.RowsAffected()
	if err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	if added == 0 {
		return nil
	}
	last, err := r.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	if int(added) == len(rows) {
		for j, row := range rows {
			row.seq = last - added + 1 + int64(j)
		}
		return nil
	}
	find := s.txStmt(tx, s.stmts.findEvent)
	claimed := make(map[int64]bool, added)
	for j, row := range rows {
		t, err := findEvent(ctx, find, evs[j])
		if err != nil {
			return fmt.Errorf("find event %s: %w", evs[j].ID, err)
		}
		if t.seq > last-added && t.seq <= last && !claimed[t.seq] {
			row.seq, claimed[t.seq] = t.seq, true
			continue
		}
		row.taken = &t // Append answers it as the duplicate it is without looking again
	}
	return nil
}

func deliveriesOf(ctx context.Context, st *sql.Stmt, args ...any) ([]store.DeliveryRecord, error) {
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	defer rows.Close()
	var out []store.DeliveryRecord
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, fmt.Errorf("read deliveries: %w", err)
		}
		out = append(out, store.DeliveryRecord{Delivery: d})
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
	var test int
	dest := append([]any{&d.ID, &d.EventID, &d.Destination, &status, &d.Attempts, &next, &created, &updated,
		&d.LastError, &d.OrderingKey, &d.RetryBase, &test}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return d, err
	}
	d.Status, d.Test = store.Status(status), test != 0
	d.NextAt, d.CreatedAt, d.UpdatedAt = fromNanos(next), fromNanos(created), fromNanos(updated)
	return d, nil
}

// Claim implements store.Store.
func (s *Store) Claim(ctx context.Context, destination string, now time.Time, lease time.Duration, limit int) ([]store.Job, error) {
	var jobs []store.Job
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		jobs = jobs[:0]
		// Deferred deliveries whose lease ended are claimable like any other.
		if err := s.writeDeferred(ctx, tx, func(r deferredRow) bool { return r.leaseEnd <= nanos(now) }); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `
			UPDATE deliveries SET next_at = ?, leased = 1
			WHERE id IN (SELECT d.id FROM deliveries d WHERE d.destination = ? AND d.status = 'pending' AND d.next_at <= ?
			             AND (d.ordering_key = '' OR (
			                 NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.destination = d.destination AND p.status = 'pending'
			                     AND p.ordering_key = d.ordering_key AND p.ordering_key != '' AND p.id < d.id)
			                 AND (d.ordering_block = 0 OR NOT EXISTS (SELECT 1 FROM deliveries f WHERE f.destination = d.destination
			                     AND f.status = 'failed' AND f.ordering_key = d.ordering_key AND f.ordering_key != '' AND f.id < d.id))))
			             ORDER BY d.next_at LIMIT ?)
			RETURNING `+deliveryCols+`, event_seq`,
			nanos(now.Add(lease)), destination, nanos(now), limit)
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		seqs := map[int64][]int{}
		for rows.Next() {
			var j store.Job
			var seq int64
			var err error
			if j.Delivery, err = scanDelivery(rows, &seq); err != nil {
				rows.Close()
				return err
			}
			seqs[seq] = append(seqs[seq], len(jobs))
			jobs = append(jobs, j)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if len(jobs) == 0 {
			return nil
		}
		args := make([]any, 0, len(seqs))
		for seq := range seqs {
			args = append(args, seq)
		}
		erows, err := tx.QueryContext(ctx, `SELECT seq, id, topic, tenant, time, correlation_id, metadata, scope, data,
			traceparent FROM events WHERE seq IN (`+placeholders(len(args))+`)`, args...)
		if err != nil {
			return fmt.Errorf("claim: read events: %w", err)
		}
		defer erows.Close()
		for erows.Next() {
			var seq, t int64
			var ev event.Event
			var md, sc, data []byte
			var tp sql.NullString
			if err := erows.Scan(&seq, &ev.ID, &ev.Topic, &ev.Tenant, &t, &ev.CorrelationID, &md, &sc, &data, &tp); err != nil {
				return err
			}
			ev.Traceparent = tp.String
			ev.Time, ev.Metadata, ev.Scope, ev.Data = fromNanos(t), unmarshalMap(md), unmarshalMap(sc), data
			for _, k := range seqs[seq] {
				jobs[k].Event = ev
				jobs[k].Event.OrderingKey = jobs[k].Delivery.OrderingKey
			}
		}
		return erows.Err()
	})
	// Deliveries whose event is gone (retention) cannot be sent; they are left leased and expire with it.
	out := jobs[:0]
	for _, j := range jobs {
		if j.Event.ID != "" {
			out = append(out, j)
		}
	}
	return out, err
}

// NextDue implements store.Store.
func (s *Store) NextDue(ctx context.Context, destination string) (time.Time, bool, error) {
	var n int64
	err := s.stmts.nextDue.QueryRowContext(ctx, destination).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	return fromNanos(n), true, nil
}

// Complete implements store.Store.
//
// A first attempt goes onto the delivery row (a1_*) in the same update that ends or reschedules it; a later
// attempt is a row of attempts. Either way an attempt recorded again under the same n replaces the earlier one.
func (s *Store) Complete(ctx context.Context, outs []store.Outcome) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := s.opts.Now()
		var upd, first, ins *sql.Stmt
		// Runs of deferred deliveries completed by their first attempt (the common case), or rescheduled without
		// one (their destination's breaker is open), are written as multi-row inserts, in as few statements as
		// the prepared sizes allow (a statement costs several times what a row does). Any other statement waits
		// until the run before it is written, so the order of the writes is the order of outs.
		done := insRun{stmts: &s.stmts.insDone, args: doneArgs}
		delivered := insRun{stmts: &s.stmts.insDelivered, args: deliveredArgs}
		flush := func() error {
			if err := s.flushRun(ctx, tx, &delivered); err != nil {
				return err
			}
			return s.flushRun(ctx, tx, &done)
		}
		for _, o := range outs {
			a := o.Attempt
			dr, deferred := s.deferred.take(o.DeliveryID)
			if deferred && a.N == 1 && o.Status == store.Delivered && a.Error == "" && o.NextAt.IsZero() && !dr.test {
				// The delivery's only row, written once in its final state: the common case binds the fewest values.
				delivered.add(len(outs), o.DeliveryID, dr.seq, dr.eventID, dr.dest, dr.created, nanos(now),
					nanos(a.At), a.Duration.Microseconds(), a.StatusCode, a.Response)
				continue
			}
			if deferred && a.N <= 1 {
				// The delivery's only row, written once in its final state.
				done.add(len(outs), o.DeliveryID, dr.seq, dr.eventID, dr.dest, string(o.Status), a.N, nanos(o.NextAt),
					dr.created, nanos(now), a.Error, boolInt(dr.test))
				if a.N == 1 {
					done.vals = append(done.vals, nanos(a.At), a.Duration.Microseconds(), a.StatusCode, nullString(a.Error), a.Response)
				} else {
					done.vals = append(done.vals, nil, nil, nil, nil, nil)
				}
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			if deferred {
				// Anything else starts from the row Append would have written.
				if _, err := s.txStmt(tx, s.stmts.insDeliveries[0]).ExecContext(ctx, dr.seq, dr.eventID, dr.created, dr.created,
					boolInt(dr.test), o.DeliveryID, dr.dest, string(store.Pending), dr.leaseEnd, 1, "", 0, ""); err != nil {
					return fmt.Errorf("complete delivery %d: %w", o.DeliveryID, err)
				}
			}
			if a.N == 1 {
				if first == nil {
					first = s.txStmt(tx, s.stmts.completeFirst)
				}
				if _, err := first.ExecContext(ctx, string(o.Status), nanos(o.NextAt), nanos(now), a.Error, nanos(a.At),
					a.Duration.Microseconds(), a.StatusCode, nullString(a.Error), a.Response, o.DeliveryID); err != nil {
					return fmt.Errorf("complete delivery %d: %w", o.DeliveryID, err)
				}
				continue
			}
			if upd == nil {
				upd = s.txStmt(tx, s.stmts.complete)
			}
			tried := 0
			if a.N > 0 {
				tried = 1
			}
			r, err := upd.ExecContext(ctx, string(o.Status), tried, nanos(o.NextAt), nanos(now), a.Error, o.DeliveryID)
			if err != nil {
				return fmt.Errorf("complete delivery %d: %w", o.DeliveryID, err)
			}
			if n, _ := r.RowsAffected(); n == 0 || tried == 0 {
				continue
			}
			if ins == nil {
				ins = s.txStmt(tx, s.stmts.insAttempt)
			}
			if _, err := ins.ExecContext(ctx, o.DeliveryID, a.N, nanos(a.At), a.Duration.Microseconds(), a.StatusCode,
				a.Error, a.Response); err != nil {
				return fmt.Errorf("record attempt of delivery %d: %w", o.DeliveryID, err)
			}
		}
		return flush()
	})
}

// insRun gathers the rows of one kind of multi-row insert (insDoneSQL) for Complete, which writes them in as
// few statements as the prepared sizes allow.
type insRun struct {
	stmts *[insChunks]*sql.Stmt
	args  int // values per row
	vals  []any
	ids   []int64
}

// add starts a row of delivery id with its first values; the caller appends the rest to r.vals.
func (r *insRun) add(capRows int, id int64, vals ...any) {
	if r.vals == nil {
		r.vals, r.ids = make([]any, 0, capRows*r.args), make([]int64, 0, capRows)
	}
	r.vals = append(append(r.vals, id), vals...)
	r.ids = append(r.ids, id)
}

// flushRun writes r's rows.
func (s *Store) flushRun(ctx context.Context, tx *sql.Tx, r *insRun) error {
	for len(r.ids) > 0 {
		k := insChunk(len(r.ids))
		m := 1 << k
		if _, err := s.txStmt(tx, r.stmts[k]).ExecContext(ctx, r.vals[:m*r.args]...); err != nil {
			return fmt.Errorf("complete deliveries %d to %d: %w", r.ids[0], r.ids[m-1], err)
		}
		r.vals, r.ids = r.vals[m*r.args:], r.ids[m:]
	}
	return nil
}

// attempt1Cols are a delivery row's first attempt, as attempt1 reads them.
const attempt1Cols = `a1_at, a1_us, a1_code, a1_error, a1_response`

// attempt1 holds a scan of attempt1Cols.
type attempt1 struct {
	at, us, code sql.NullInt64
	err          sql.NullString
	response     []byte
}

func (a *attempt1) dest() []any { return []any{&a.at, &a.us, &a.code, &a.err, &a.response} }

// log starts a delivery's attempt log with the first attempt kept on its row, if there is one.
func (a *attempt1) log(id int64) []store.Attempt {
	if !a.at.Valid {
		return nil
	}
	return []store.Attempt{{DeliveryID: id, N: 1, At: fromNanos(a.at.Int64), Duration: time.Duration(a.us.Int64) * time.Microsecond,
		StatusCode: int(a.code.Int64), Error: a.err.String, Response: a.response}}
}

// addAttempt appends a row of attempts to rec's log, unless the row holds the first attempt, which the
// delivery row has taken over (a first attempt recorded again after an upgrade).
func addAttempt(rec *store.DeliveryRecord, a store.Attempt) {
	if a.N == 1 && len(rec.AttemptLog) > 0 && rec.AttemptLog[0].N == 1 {
		return
	}
	rec.AttemptLog = append(rec.AttemptLog, a)
}

// ReleaseLeases implements store.Store.
func (s *Store) ReleaseLeases(ctx context.Context) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.writeDeferred(ctx, tx, nil); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE deliveries SET next_at = ?, leased = 0 WHERE status = 'pending' AND leased = 1`,
			nanos(s.opts.Now()))
		return err
	})
}

// SkipPending implements store.Store.
func (s *Store) SkipPending(ctx context.Context, destination, reason string) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.writeDeferred(ctx, tx, func(r deferredRow) bool { return r.dest == destination }); err != nil {
			return err
		}
		r, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = 'skipped', leased = 0, last_error = ?, updated_at = ?
			WHERE destination = ? AND status = 'pending'`, reason, nanos(s.opts.Now()), destination)
		if err != nil {
			return err
		}
		n, _ = r.RowsAffected()
		return nil
	})
	return int(n), err
}

// Event implements store.Store.
func (s *Store) Event(ctx context.Context, id string) (*store.EventRecord, error) {
	return s.event(ctx, id, false, "")
}

// TenantEvent implements store.Store.
func (s *Store) TenantEvent(ctx context.Context, tenant, id string) (*store.EventRecord, error) {
	return s.event(ctx, id, true, tenant)
}

func (s *Store) event(ctx context.Context, id string, byTenant bool, tenant string) (*store.EventRecord, error) {
	if err := s.settle(ctx, func(r deferredRow) bool { return r.eventID == id }); err != nil {
		return nil, err
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var rec store.EventRecord
	var seq, t, received int64
	var md, sc, data []byte
	var tp sql.NullString
	ev := &rec.Event
	var dfirst, dlast sql.NullInt64
	err = tx.Stmt(s.stmts.readEvent).QueryRowContext(ctx, id, byTenant, tenant).Scan(&seq, &ev.ID, &ev.Topic, &ev.Tenant, &t, &received,
		&ev.CorrelationID, &md, &sc, &data, &tp, &dfirst, &dlast)
	ev.Traceparent = tp.String
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	ev.Time, rec.ReceivedAt = fromNanos(t), fromNanos(received)
	ev.Metadata, ev.Scope, ev.Data = unmarshalMap(md), unmarshalMap(sc), data
	drows, err := tx.Stmt(s.stmts.readDeliveries).QueryContext(ctx, dfirst, dlast, seq)
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	for drows.Next() {
		var a1 attempt1
		d, err := scanDelivery(drows, a1.dest()...)
		if err != nil {
			drows.Close()
			return nil, fmt.Errorf("read deliveries: %w", err)
		}
		rec.Deliveries = append(rec.Deliveries, store.DeliveryRecord{Delivery: d, AttemptLog: a1.log(d.ID)})
	}
	drows.Close()
	if err := drows.Err(); err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	rows, err := tx.Stmt(s.stmts.readAttempts).QueryContext(ctx, dfirst, dlast)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byID := map[int64]*store.DeliveryRecord{}
	for i := range rec.Deliveries {
		byID[rec.Deliveries[i].ID] = &rec.Deliveries[i]
	}
	for rows.Next() {
		var a store.Attempt
		var at, us int64
		if err := rows.Scan(&a.DeliveryID, &a.N, &at, &us, &a.StatusCode, &a.Error, &a.Response); err != nil {
			return nil, err
		}
		a.At, a.Duration = fromNanos(at), time.Duration(us)*time.Microsecond
		if d := byID[a.DeliveryID]; d != nil {
			addAttempt(d, a)
		}
	}
	return &rec, rows.Err()
}

// nullString stores "" as NULL: most events carry no trace context, and NULL costs no bytes in the row.
func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

var _ store.Lingerer = (*Store)(nil)

// CompleteLinger implements store.Lingerer. Outcomes nobody waits on (first attempts of unordered destinations
// that succeeded or failed for good) wait up to this long for company: below saturation a commit of its own for a
// handful of outcomes (a WAL write and an fsync) cost `single` at 5,000 events/s about 8% of its CPU per event
// (docs/performance.md). Their deliveries stay pending and leased meanwhile, and a crash in that time means
// they are sent again, as any outcome not yet written.
func (s *Store) CompleteLinger() time.Duration { return completeLinger }

const completeLinger = 5 * time.Millisecond
