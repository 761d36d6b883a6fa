package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// Deferred deliveries: most deliveries are leased at birth (the node that accepted the event attempts it at
// once) and succeed on that first attempt. Writing such a delivery's row at Append and rewriting it at Complete
// cost two row writes and an entry in deliveries_due put in and taken out again; instead its row is written
// once, by Complete, in its final state. Until then the delivery lives in memory (deferredSet), and the event
// row carries it (events.fanout) so a crash loses nothing: Open writes the rows of whatever was deferred when
// the process died, as pending and due.
//
// Every other operation sees deferred deliveries as the rows Append would have written (pending, leased until
// the lease's end): the writes that touch deliveries (Claim, ReleaseLeases, SkipPending, Prune, a duplicate
// Append) first write the rows they could touch, inside their own transaction; the admin reads first have the
// writer write the rows they could return (settle); PendingCounts and Due add them from memory; NextDue and
// Replay never see leased or pending rows anyway. A clean Close writes the rows of what is still deferred, so
// a database left by Close holds every delivery as a row.
//
// Only unordered, unskipped, leased deliveries are deferred: an ordered delivery's row is what holds its key's
// later deliveries back.

// deferredRow is what a deferred delivery's row would hold.
type deferredRow struct {
	id, seq  int64
	eventID  string
	dest     string
	created  int64 // unix nanos: the event's received_at
	leaseEnd int64 // unix nanos
	test     bool
}

// deferredSet is the deferred deliveries by id, twice over. The writer changes work inside its transactions,
// recording each change so that a transaction rolled back is undone and one committed is copied to seen; other
// goroutines read seen, which therefore holds what is committed, no more and no less (a read that found a
// delivery neither deferred nor written would miss it).
type deferredSet struct {
	work    map[int64]deferredRow // writer only
	changes []deferredChange      // writer only: work's changes in the transaction in progress
	peak    int                   // writer only: the most deliveries deferred at once since the maps were made

	mu   sync.Mutex
	seen map[int64]deferredRow
}

type deferredChange struct {
	id    int64
	row   deferredRow
	added bool // else taken
}

func newDeferredSet() deferredSet {
	return deferredSet{work: map[int64]deferredRow{}, seen: map[int64]deferredRow{}}
}

// put defers id (writer).
func (d *deferredSet) put(id int64, r deferredRow) {
	d.work[id] = r
	d.changes = append(d.changes, deferredChange{id: id, row: r, added: true})
	d.peak = max(d.peak, len(d.work))
}

// shrinkAfter is how many deliveries deferred at once make the maps worth replacing once they are empty: a Go
// map keeps the room it grew to, and a burst would otherwise hold it for good.
const shrinkAfter = 1024

// take removes id and returns its row, if it is deferred (writer).
func (d *deferredSet) take(id int64) (deferredRow, bool) {
	r, ok := d.work[id]
	if ok {
		delete(d.work, id)
		d.changes = append(d.changes, deferredChange{id: id, row: r})
	}
	return r, ok
}

// holds reports whether id is deferred (writer).
func (d *deferredSet) holds(id int64) bool {
	_, ok := d.work[id]
	return ok
}

// ids returns the deferred deliveries keep picks (nil: all), in id order (writer).
func (d *deferredSet) ids(keep func(deferredRow) bool) []int64 {
	var out []int64
	for id, r := range d.work {
		if keep == nil || keep(r) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// minSeq is the lowest event seq with a deferred delivery; ok is false when none is deferred (writer).
func (d *deferredSet) minSeq() (seq int64, ok bool) {
	for _, r := range d.work {
		if !ok || r.seq < seq {
			seq, ok = r.seq, true
		}
	}
	return seq, ok
}

// rollback undoes the changes of the transaction that failed (writer).
func (d *deferredSet) rollback() {
	for i := len(d.changes) - 1; i >= 0; i-- {
		c := d.changes[i]
		if c.added {
			delete(d.work, c.id)
		} else {
			d.work[c.id] = c.row
		}
	}
	d.resetChanges()
}

// committed publishes the changes of the transaction that committed (writer).
func (d *deferredSet) committed() {
	if len(d.changes) == 0 {
		return
	}
	d.mu.Lock()
	for _, c := range d.changes {
		if c.added {
			d.seen[c.id] = c.row
		} else {
			delete(d.seen, c.id)
		}
	}
	if len(d.seen) == 0 && d.peak >= shrinkAfter {
		d.seen, d.work, d.peak = map[int64]deferredRow{}, map[int64]deferredRow{}, 0
	}
	d.mu.Unlock()
	d.resetChanges()
}

// resetChanges empties changes, letting go of the room a large transaction made it grow to.
func (d *deferredSet) resetChanges() {
	if cap(d.changes) > shrinkAfter {
		d.changes = nil
		return
	}
	d.changes = d.changes[:0]
}

// The methods below read what is committed, from any goroutine.

// any reports whether a delivery keep picks (nil: any) is deferred.
func (d *deferredSet) any(keep func(deferredRow) bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if keep == nil {
		return len(d.seen) > 0
	}
	for _, r := range d.seen {
		if keep(r) {
			return true
		}
	}
	return false
}

func (d *deferredSet) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.seen)
}

// counts adds the deferred deliveries per destination to into.
func (d *deferredSet) counts(into map[string]int64) {
	d.mu.Lock()
	for _, r := range d.seen {
		into[r.dest]++
	}
	d.mu.Unlock()
}

// expired returns the destinations among asked with a deferred delivery whose lease ended by now.
func (d *deferredSet) expired(asked []string, now int64) []string {
	var out []string
	d.mu.Lock()
	for _, r := range d.seen {
		if r.leaseEnd <= now && !slices.Contains(out, r.dest) && slices.Contains(asked, r.dest) {
			out = append(out, r.dest)
		}
	}
	d.mu.Unlock()
	return out
}

// fanout is events.fanout: the event's deliveries that were deferred at Append. To[i] is the destination of
// the delivery dfirst+i, or "" when that delivery's row was written at Append.
type fanout struct {
	Test bool     `json:"test,omitempty"`
	To   []string `json:"to"`
}

// writeDeferred writes, as Append would have, the rows of the deferred deliveries keep picks (nil: all).
func (s *Store) writeDeferred(ctx context.Context, tx *sql.Tx, keep func(deferredRow) bool) error {
	if len(s.deferred.work) == 0 {
		return nil
	}
	ins := s.txStmt(tx, s.stmts.insDeliveries[0])
	for _, id := range s.deferred.ids(keep) {
		r, ok := s.deferred.take(id)
		if !ok {
			continue
		}
		if _, err := ins.ExecContext(ctx, r.seq, r.eventID, r.created, r.created, boolInt(r.test), id, r.dest,
			string(store.Pending), r.leaseEnd, 1, "", 0, ""); err != nil {
			return fmt.Errorf("write deferred delivery %d: %w", id, err)
		}
	}
	return nil
}

// settle writes the rows of the deliveries deferred so far that keep picks (nil: all), so a read on the pool
// sees them. It writes nothing, and waits for no commit, when none is deferred.
func (s *Store) settle(ctx context.Context, keep func(deferredRow) bool) error {
	if !s.deferred.any(keep) {
		return nil
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error { return s.writeDeferred(ctx, tx, keep) })
}

// markEvery bounds how often the writer records the deferred mark.
const markEvery = 100 * time.Millisecond

// markKey is the row of marks that holds the lowest event seq that may have deferred deliveries: Open looks
// for deliveries to recover among the events from there on.
const markKey = "deferred_from"

// mark records, in tx and at most every markEvery, the lowest event seq that may still have a deferred
// delivery. Computed inside the transaction, it is right for whatever the transaction commits.
func (s *Store) mark(ctx context.Context, tx *sql.Tx) error {
	now := s.opts.Now()
	if now.Sub(s.markedAt) < markEvery {
		return nil
	}
	from, ok := s.deferred.minSeq()
	if !ok {
		var top sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT max(seq) FROM events`).Scan(&top); err != nil {
			return fmt.Errorf("deferred mark: %w", err)
		}
		from = top.Int64 + 1
	}
	if from == s.marked {
		s.markedAt = now
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO marks(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`,
		markKey, from); err != nil {
		return fmt.Errorf("deferred mark: %w", err)
	}
	s.markNext = from
	return nil
}

// recoverDeferred writes, at Open, the rows of deliveries that were deferred when the process ended without
// Close: the events from the mark on whose fanout names a delivery without a row. They are written pending and
// due now (their leases died with the process). It returns how many it wrote.
func recoverDeferred(db *sql.DB, now time.Time, log *slog.Logger) (int, error) {
	tx, err := db.Begin()
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var from int64
	if err := tx.QueryRow(`SELECT v FROM marks WHERE k = ?`, markKey).Scan(&from); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read the deferred mark: %w", err)
	}
	type ev struct {
		seq, received, first int64
		id                   string
		fo                   fanout
	}
	rows, err := tx.Query(`SELECT seq, id, received_at, dfirst, fanout FROM events WHERE seq >= ? AND fanout IS NOT NULL
		ORDER BY seq`, from)
	if err != nil {
		return 0, err
	}
	var evs []ev
	for rows.Next() {
		var e ev
		var blob []byte
		if err := rows.Scan(&e.seq, &e.id, &e.received, &e.first, &blob); err != nil {
			rows.Close()
			return 0, err
		}
		if err := json.Unmarshal(blob, &e.fo); err != nil {
			rows.Close()
			return 0, fmt.Errorf("event %s: fanout: %w", e.id, err)
		}
		evs = append(evs, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range evs {
		have := map[int64]int64{} // delivery id → the event seq of its row
		rows, err := tx.Query(`SELECT id, event_seq FROM deliveries WHERE id BETWEEN ? AND ?`, e.first, e.first+int64(len(e.fo.To))-1)
		if err != nil {
			return 0, err
		}
		for rows.Next() {
			var id, seq int64
			if err := rows.Scan(&id, &seq); err != nil {
				rows.Close()
				return 0, err
			}
			have[id] = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, err
		}
		for i, dest := range e.fo.To {
			id := e.first + int64(i)
			if dest == "" {
				continue
			}
			if seq, ok := have[id]; ok {
				if seq != e.seq {
					// Only an earlier version, run on this file after a crash, makes deliveries with ids it did
					// not know were taken (README: going back a version).
					log.Error("store: a delivery in flight at a crash cannot be recovered: an earlier version reused its id",
						"event_id", e.id, "destination", dest, "delivery_id", id)
				}
				continue
			}
			if _, err := tx.Exec(insDeliveriesSQL(1), e.seq, e.id, e.received, e.received, boolInt(e.fo.Test), id, dest,
				string(store.Pending), nanos(now), 0, "", 0, ""); err != nil {
				return 0, fmt.Errorf("recover deferred delivery %d: %w", id, err)
			}
			n++
		}
	}
	if _, err := tx.Exec(`INSERT INTO marks(k, v) SELECT ?, coalesce(max(seq), 0) + 1 FROM events WHERE true
		ON CONFLICT(k) DO UPDATE SET v = excluded.v`, markKey); err != nil {
		return 0, fmt.Errorf("deferred mark: %w", err)
	}
	return n, tx.Commit()
}

// addFanout is the migration step that adds events.fanout. Like addTraceparent it runs after schema. Events
// written before have no deferred deliveries, so the mark starts after them and Open never reads them.
func addFanout(db *sql.DB) error {
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pragma_table_info('events') WHERE name = 'fanout'`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		`ALTER TABLE events ADD COLUMN fanout BLOB`,
		`INSERT INTO marks(k, v) SELECT '` + markKey + `', coalesce(max(seq), 0) + 1 FROM events WHERE true
		   ON CONFLICT(k) DO UPDATE SET v = excluded.v`,
	} {
		if _, err := tx.Exec(q); err != nil {
			return fmt.Errorf("add events.fanout: %w", err)
		}
	}
	return tx.Commit()
}
