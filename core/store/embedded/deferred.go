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

// deferredSet is the deferred deliveries by id. Only the writer changes it, inside its transactions; other
// goroutines read it. Each entry says where it stands: a delivery deferred in the transaction in progress is
// invisible to readers until that commits, and one taken (written) in it stays visible to them until then, so
// a read never finds a delivery neither deferred nor written. A transaction rolled back is undone from its
// list of changes.
type deferredSet struct {
	mu   sync.Mutex
	rows map[int64]deferredEntry

	changes []deferredChange // writer only: the changes of the transaction in progress
	peak    int              // writer only: the most entries at once since rows was made
}

type deferredEntry struct {
	deferredRow
	state deferredState
}

type deferredState uint8

const (
	live   deferredState = iota // deferred, as committed
	adding                      // deferred by the transaction in progress
	taking                      // committed as deferred, taken by the transaction in progress
)

// forWriter reports whether the writer, inside its transaction, sees the entry as deferred.
func (e deferredEntry) forWriter() bool { return e.state != taking }

// forReaders reports whether other goroutines, which see only what is committed, see it as deferred.
func (e deferredEntry) forReaders() bool { return e.state != adding }

type deferredChange struct {
	id   int64
	prev deferredEntry
	had  bool
}

func newDeferredSet() deferredSet { return deferredSet{rows: map[int64]deferredEntry{}} }

// put defers id (writer).
func (d *deferredSet) put(id int64, r deferredRow) {
	d.mu.Lock()
	prev, had := d.rows[id]
	d.rows[id] = deferredEntry{deferredRow: r, state: adding}
	n := len(d.rows)
	d.mu.Unlock()
	d.changes = append(d.changes, deferredChange{id: id, prev: prev, had: had})
	d.peak = max(d.peak, n)
}

// shrinkAfter is how many entries at once make the map worth replacing once it is empty: a Go map keeps the
// room it grew to, and a burst would otherwise hold it for good.
const shrinkAfter = 1024

// take removes id and returns its row, if it is deferred (writer).
func (d *deferredSet) take(id int64) (deferredRow, bool) {
	d.mu.Lock()
	e, had := d.rows[id]
	if !had || !e.forWriter() {
		d.mu.Unlock()
		return deferredRow{}, false
	}
	if e.state == adding {
		delete(d.rows, id) // never committed: readers never saw it
	} else {
		d.rows[id] = deferredEntry{deferredRow: e.deferredRow, state: taking}
	}
	d.mu.Unlock()
	d.changes = append(d.changes, deferredChange{id: id, prev: e, had: true})
	return e.deferredRow, true
}

// holds reports whether id is deferred (writer).
func (d *deferredSet) holds(id int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.rows[id]
	return ok && e.forWriter()
}

// size is how many entries there are, whatever their state (writer).
func (d *deferredSet) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.rows)
}

// ids returns the deferred deliveries keep picks (nil: all), in id order (writer).
func (d *deferredSet) ids(keep func(deferredRow) bool) []int64 {
	var out []int64
	d.mu.Lock()
	for id, e := range d.rows {
		if e.forWriter() && (keep == nil || keep(e.deferredRow)) {
			out = append(out, id)
		}
	}
	d.mu.Unlock()
	slices.Sort(out)
	return out
}

// minSeq is the lowest event seq with a deferred delivery; ok is false when none is deferred (writer).
func (d *deferredSet) minSeq() (seq int64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.rows {
		if e.forWriter() && (!ok || e.seq < seq) {
			seq, ok = e.seq, true
		}
	}
	return seq, ok
}

// rollback undoes the changes of the transaction that failed (writer).
func (d *deferredSet) rollback() {
	d.mu.Lock()
	for i := len(d.changes) - 1; i >= 0; i-- {
		c := d.changes[i]
		if c.had {
			d.rows[c.id] = c.prev
		} else {
			delete(d.rows, c.id)
		}
	}
	d.mu.Unlock()
	d.resetChanges()
}

// committed settles the changes of the transaction that committed (writer).
func (d *deferredSet) committed() {
	if len(d.changes) == 0 {
		return
	}
	d.mu.Lock()
	for _, c := range d.changes {
		switch e, ok := d.rows[c.id]; {
		case !ok:
		case e.state == adding:
			e.state = live
			d.rows[c.id] = e
		case e.state == taking:
			delete(d.rows, c.id)
		}
	}
	if len(d.rows) == 0 && d.peak >= shrinkAfter {
		d.rows, d.peak = map[int64]deferredEntry{}, 0
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

// The methods below see what is committed, from any goroutine.

// any reports whether a delivery keep picks (nil: any) is deferred.
func (d *deferredSet) any(keep func(deferredRow) bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.rows {
		if e.forReaders() && (keep == nil || keep(e.deferredRow)) {
			return true
		}
	}
	return false
}

// newest returns the id of the n-th newest deferred delivery keep picks; ok is false when keep picks fewer than n.
func (d *deferredSet) newest(keep func(deferredRow) bool, n int) (id int64, ok bool) {
	if n <= 0 {
		return 0, false
	}
	// The n largest ids seen so far, smallest first: a min-heap.
	top := make([]int64, 0, n)
	d.mu.Lock()
	for id, e := range d.rows {
		if !e.forReaders() || !keep(e.deferredRow) {
			continue
		}
		switch {
		case len(top) < n:
			top = append(top, id)
			for i := len(top) - 1; i > 0 && top[(i-1)/2] > top[i]; i = (i - 1) / 2 {
				top[i], top[(i-1)/2] = top[(i-1)/2], top[i]
			}
		case id > top[0]:
			top[0] = id
			for i := 0; ; {
				c := 2*i + 1
				if c >= n {
					break
				}
				if c+1 < n && top[c+1] < top[c] {
					c++
				}
				if top[i] <= top[c] {
					break
				}
				top[i], top[c] = top[c], top[i]
				i = c
			}
		}
	}
	d.mu.Unlock()
	if len(top) < n {
		return 0, false
	}
	return top[0], true
}

// len is how many deliveries are deferred.
func (d *deferredSet) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range d.rows {
		if e.forReaders() {
			n++
		}
	}
	return n
}

// counts adds the deferred deliveries per destination to into.
func (d *deferredSet) counts(into map[string]int64) {
	d.mu.Lock()
	for _, e := range d.rows {
		if e.forReaders() {
			into[e.dest]++
		}
	}
	d.mu.Unlock()
}

// expired returns the destinations among asked with a deferred delivery whose lease ended by now.
func (d *deferredSet) expired(asked []string, now int64) []string {
	var out []string
	d.mu.Lock()
	for _, e := range d.rows {
		if e.forReaders() && e.leaseEnd <= now && !slices.Contains(out, e.dest) && slices.Contains(asked, e.dest) {
			out = append(out, e.dest)
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
	if s.deferred.size() == 0 {
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
	if has, err := eventsHas(db, "fanout"); err != nil || has {
		return err
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
