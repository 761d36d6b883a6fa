package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/core/store"
	_ "modernc.org/sqlite" // the database/sql driver "sqlite"
)

// DefaultLinger is the writer's default Options.Linger.
const DefaultLinger = 500 * time.Microsecond

// FileName is the database file inside store.path.
const FileName = "sluice.db"

// Options tune the store.
type Options struct {
	Logger *slog.Logger
	// MaxGroup bounds how many queued operations share one commit.
	MaxGroup int
	// Linger is how long the writer waits for more operations to join a commit when the previous commit was
	// shared by several (under load); 0 takes DefaultLinger, a negative value commits at once.
	Linger time.Duration
	Now    func() time.Time
}

// Store is the embedded store.
type Store struct {
	wdb  *sql.DB // exactly one connection: the writer
	rdb  *sql.DB // read-only pool
	opts Options
	ops  chan *op
	wg   sync.WaitGroup

	closeOnce sync.Once
	closed    chan struct{}
	stopped   chan struct{} // closed when the writer has returned

	stmts stmts

	commits, grouped atomic.Int64
	commitNanos      atomic.Int64 // nanoseconds the writer spent in commit

	// The writer's statements bound to the transaction in progress: an operation asks txStmt instead of
	// tx.Stmt, so a group of operations binds each statement once. Only the writer goroutine touches these.
	curTx   *sql.Tx
	txStmts []boundStmt
	// nextID is the id the next delivery gets (see Append); only the writer makes deliveries. A transaction
	// rolled back puts it back to where the transaction found it.
	nextID int64

	// deferred holds the deliveries whose rows are not written yet (deferred.go).
	deferred deferredSet
	// The deferred mark (see mark): the value committed last, the value the transaction in progress writes (0:
	// none), and when it was last checked. Only the writer touches these.
	marked, markNext int64
	markedAt         time.Time
}

type boundStmt struct{ db, tx *sql.Stmt }

// txStmt returns st bound to tx, once per transaction of the writer.
func (s *Store) txStmt(tx *sql.Tx, st *sql.Stmt) *sql.Stmt {
	if tx != s.curTx {
		return tx.Stmt(st)
	}
	for _, b := range s.txStmts {
		if b.db == st {
			return b.tx
		}
	}
	b := boundStmt{db: st, tx: tx.Stmt(st)}
	s.txStmts = append(s.txStmts, b)
	return b.tx
}

// Stats reports how many commits (fsyncs) the writer made and how many operations they carried; their ratio
// is the group-commit factor.
func (s *Store) Stats() (commits, ops int64) { return s.commits.Load(), s.grouped.Load() }

// CommitTime implements store.CommitCounter.
func (s *Store) CommitTime() time.Duration { return time.Duration(s.commitNanos.Load()) }

var (
	_ store.Store         = (*Store)(nil)
	_ store.CommitCounter = (*Store)(nil)
)

type op struct {
	fn   func(ctx context.Context, tx *sql.Tx) error
	done chan error
	// app, when set, holds the events of an Append, which go in before any fn of the group runs.
	app *appendWork
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL: the WAL is fsynced at every commit, so a commit that returned survives power loss.
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(OFF)")
	q.Add("_pragma", "temp_store(MEMORY)")
	if readOnly {
		// Readers answer point lookups; a small cache each keeps memory flat however large the backlog.
		q.Add("_pragma", "cache_size(-4096)")
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "cache_size(-32768)")
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = 512
	}
	if opts.Linger == 0 {
		opts.Linger = DefaultLinger
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store.path %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	wdb, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, err
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	if err := migrate(wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: upgrade schema: %w", path, err)
	}
	if _, err := wdb.Exec(schema); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: create schema: %w", path, err)
	}
	if err := upgrade(wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: upgrade data: %w", path, err)
	}
	// An upgrade may have rebuilt a table without its indexes.
	if _, err := wdb.Exec(schema); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: create schema: %w", path, err)
	}
	// After the upgrades, which may rebuild events from its original definition.
	if err := addTraceparent(wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: upgrade schema: %w", path, err)
	}
	if err := addDeliveryRanges(wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: upgrade schema: %w", path, err)
	}
	if err := addFanout(wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: upgrade schema: %w", path, err)
	}
	// Earlier versions indexed events by received_at for retention, which now walks by seq (Prune). A
	// database an earlier version opened again (which recreates the index) loses it again here.
	if _, err := wdb.Exec(`DROP INDEX IF EXISTS events_received`); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: upgrade schema: %w", path, err)
	}
	recovered, err := recoverDeferred(wdb, opts.Now(), opts.Logger)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: recover deliveries: %w", path, err)
	}
	if recovered > 0 {
		opts.Logger.Info("store: wrote the rows of deliveries in flight when the process last stopped", "deliveries", recovered)
	}
	// Every delivery has a row now, so the highest id is the last one made.
	var top sql.NullInt64
	if err := wdb.QueryRow(`SELECT max(id) FROM deliveries`).Scan(&top); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("store %s: next delivery id: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		wdb.Close()
		return nil, err
	}
	rdb.SetMaxOpenConns(4)
	rdb.SetMaxIdleConns(4)
	s := &Store{wdb: wdb, rdb: rdb, opts: opts, ops: make(chan *op, 4096), closed: make(chan struct{}),
		stopped: make(chan struct{}), nextID: top.Int64 + 1, deferred: newDeferredSet()}
	if err := s.stmts.prepare(wdb, rdb); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// migrate adds the columns later versions introduced to a database an earlier version created. Each column
// is checked on its own, so a database of any earlier version is brought up to date in one pass; the new
// tables and indexes come from schema, which runs after this.
func migrate(db *sql.DB) error {
	rows, err := db.Query(`SELECT name FROM pragma_table_info('deliveries')`)
	if err != nil {
		return err
	}
	cols := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		cols[name] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(cols) == 0 {
		return nil // a new database: schema creates it whole
	}
	for _, c := range []struct{ name, def string }{
		{"ordering_key", "TEXT NOT NULL DEFAULT ''"},
		{"ordering_block", "INTEGER NOT NULL DEFAULT 0"},
		{"retry_base", "INTEGER NOT NULL DEFAULT 0"},
		{"test", "INTEGER NOT NULL DEFAULT 0"},
		// The first attempt on the delivery row. Rows written before keep theirs in attempts (a1_at NULL), where
		// the reads still find them: nothing is moved.
		{"a1_at", "INTEGER"},
		{"a1_us", "INTEGER"},
		{"a1_code", "INTEGER"},
		{"a1_error", "TEXT"},
		{"a1_response", "BLOB"},
	} {
		if cols[c.name] {
			continue
		}
		if _, err := db.Exec(`ALTER TABLE deliveries ADD COLUMN ` + c.name + ` ` + c.def); err != nil {
			return fmt.Errorf("add deliveries.%s: %w", c.name, err)
		}
	}
	return nil
}

// eventsHas reports whether the events table has the column name (the migration steps below add columns).
func eventsHas(db *sql.DB, name string) (bool, error) {
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pragma_table_info('events') WHERE name = ?`, name).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

// addTraceparent is the migration step that adds events.traceparent (the W3C trace context an event arrived
// with, forwarded to receivers). It runs after schema, on new and old databases alike, and is a step of its own
// so it does not touch the tables schema creates. The column is nullable: most events carry no trace context.
func addTraceparent(db *sql.DB) error {
	if has, err := eventsHas(db, "traceparent"); err != nil || has {
		return err
	}
	if _, err := db.Exec(`ALTER TABLE events ADD COLUMN traceparent TEXT`); err != nil {
		return fmt.Errorf("add events.traceparent: %w", err)
	}
	return nil
}

// addDeliveryRanges is the migration step that gives each event the ids of its deliveries (events.dfirst and
// dlast, NULL for an event without any) in place of the index deliveries_event, which cost every delivery a
// B-tree insert. An event's deliveries are made together, so their ids are consecutive, and reads find them by
// a rowid range (still checking event_seq, so a range spanning another event's rows is harmless). Like
// addTraceparent it runs after schema. It fills the ranges of events written before, using the index while it
// is there, then drops it; a database an earlier version opened again (which recreates the index) is brought
// back the same way.
func addDeliveryRanges(db *sql.DB) error {
	var idx int
	hasCols, err := eventsHas(db, "dfirst")
	if err != nil {
		return err
	}
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'deliveries_event'`).Scan(&idx); err != nil {
		return err
	}
	if hasCols && idx == 0 {
		return nil
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var steps []string
	if !hasCols {
		steps = append(steps, `ALTER TABLE events ADD COLUMN dfirst INTEGER`, `ALTER TABLE events ADD COLUMN dlast INTEGER`)
	}
	if !hasCols || idx > 0 {
		// Fill the ranges of the events written before (with the index, if the database has it, else by one
		// sort of the table), then drop the index if there is one.
		steps = append(steps, `UPDATE events SET dfirst = r.a, dlast = r.b
			FROM (SELECT event_seq, min(id) AS a, max(id) AS b FROM deliveries GROUP BY event_seq) AS r
			WHERE r.event_seq = events.seq AND events.dfirst IS NULL`,
			`DROP INDEX IF EXISTS deliveries_event`)
	}
	for _, q := range steps {
		if _, err := tx.Exec(q); err != nil {
			return fmt.Errorf("events' delivery id ranges: %w", err)
		}
	}
	return tx.Commit()
}

// version is the data version (PRAGMA user_version) this build writes:
//
//	1: deliveries and destination states are keyed by the destination's id, not its name.
//	2: event ids are unique per tenant, not across tenants.
//	3: API destination names are unique per tenant, not across tenants.
const version = 3

// upgrade rewrites the data of a database an earlier version wrote, one version step at a time, each in one
// transaction with its version bump. A database schema just created has nothing to rewrite.
func upgrade(db *sql.DB) error {
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v >= version {
		return nil
	}
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if v < 1 {
		// Earlier versions keyed an API destination's deliveries and state by its name, so a new destination
		// reusing a deleted one's name inherited its history. Rows of live API destinations move to their id;
		// rows of names no longer known stay under the name, which no API destination id can equal.
		for _, q := range []string{
			`UPDATE deliveries SET destination = (SELECT id FROM destinations WHERE name = deliveries.destination)
			   WHERE destination IN (SELECT name FROM destinations)`,
			`UPDATE destination_states SET name = (SELECT id FROM destinations WHERE destinations.name = destination_states.name)
			   WHERE name IN (SELECT name FROM destinations)`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("key deliveries by destination id: %w", err)
			}
		}
	}
	if v < 2 {
		// events.id was UNIQUE across tenants, so one tenant's id blocked (or deduplicated against) another's.
		// SQLite cannot drop a column constraint: rebuild the table; Open recreates its indexes.
		for _, q := range []string{
			strings.Replace(eventsTable, "CREATE TABLE IF NOT EXISTS events (", "CREATE TABLE events_v2 (", 1),
			`INSERT INTO events_v2 (seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data)
			   SELECT seq, id, topic, tenant, time, received_at, correlation_id, metadata, scope, data FROM events`,
			`DROP TABLE events`,
			`ALTER TABLE events_v2 RENAME TO events`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("make event ids unique per tenant: %w", err)
			}
		}
	}
	if v < 3 {
		for _, q := range []string{
			strings.Replace(destinationsTable, "CREATE TABLE IF NOT EXISTS destinations (", "CREATE TABLE destinations_v3 (", 1),
			`INSERT INTO destinations_v3 (id, name, tenant, type, spec, retiring, created_at, updated_at)
			   SELECT id, name, tenant, type, spec, retiring, created_at, updated_at FROM destinations`,
			`DROP TABLE destinations`,
			`ALTER TABLE destinations_v3 RENAME TO destinations`,
		} {
			if _, err := tx.Exec(q); err != nil {
				return fmt.Errorf("make destination names unique per tenant: %w", err)
			}
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, version)); err != nil {
		return err
	}
	return tx.Commit()
}

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("store is closed")

// write queues fn for the next group commit and waits until that commit is durable.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.writeOp(ctx, &op{fn: fn})
}

// writeOp queues o for the next group commit and waits until that commit is durable.
func (s *Store) writeOp(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	select {
	case s.ops <- o:
	case <-s.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the commit's outcome is what the caller must learn: wait for it regardless of ctx. An
	// operation queued after the writer drained the queue at Close would wait forever: when the writer has
	// returned, take the outcome if it left one, else the store is closed.
	select {
	case err := <-o.done:
		return err
	case <-s.stopped:
		select {
		case err := <-o.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// writer is the only goroutine that writes. It takes every operation queued, runs each in its own savepoint
// (so one failing operation does not undo the others), and commits them together: one fsync for all.
func (s *Store) writer() {
	defer s.wg.Done()
	defer close(s.stopped)
	ctx := context.Background()
	group := make([]*op, 0, s.opts.MaxGroup)
	busy := false
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.closed:
			// Drain what is queued so no caller waits forever.
			for {
				select {
				case o := <-s.ops:
					o.done <- ErrClosed
					continue
				default:
				}
				break
			}
			// What is still deferred gets its row, so the database holds every delivery as a row.
			if s.deferred.size() > 0 {
				if _, err := s.runTx(ctx, []*op{{fn: func(ctx context.Context, tx *sql.Tx) error {
					return s.writeDeferred(ctx, tx, nil)
				}}}); err != nil {
					s.opts.Logger.Error("store: write deferred deliveries at close", "err", err)
				}
			}
			return
		}
		group = append(group[:0], first)
		var linger <-chan time.Time
		var timer *time.Timer
		if busy && s.opts.Linger > 0 {
			// The last commit was shared: more writers are about to queue. Waiting a moment for them makes
			// fewer, fuller commits (fewer WAL writes and fsyncs per event) at a small cost in latency.
			timer = time.NewTimer(s.opts.Linger)
			linger = timer.C
		}
	fill:
		for len(group) < s.opts.MaxGroup {
			select {
			case o := <-s.ops:
				group = append(group, o)
				continue
			default:
			}
			if linger == nil {
				break
			}
			select {
			case o := <-s.ops:
				group = append(group, o)
			case <-linger:
				break fill
			}
		}
		if timer != nil {
			timer.Stop()
		}
		busy = len(group) > 1
		t0 := time.Now()
		s.commit(ctx, group)
		s.commitNanos.Add(int64(time.Since(t0)))
	}
}

// commit runs a group in one transaction. Operations are written to be re-runnable: if one fails, the
// transaction is rolled back and each operation runs again in its own, so one bad operation cannot fail its
// neighbours (and the common, all-good case pays for no savepoints).
func (s *Store) commit(ctx context.Context, group []*op) {
	if len(group) > 1 {
		errs, err := s.runTx(ctx, group)
		if err == nil && errors.Join(errs...) == nil {
			s.commits.Add(1)
			s.grouped.Add(int64(len(group)))
			for _, o := range group {
				o.done <- nil
			}
			return
		}
	}
	for _, o := range group {
		errs, err := s.runTx(ctx, []*op{o})
		if err == nil {
			err = errs[0]
			s.commits.Add(1)
			s.grouped.Add(1)
		}
		o.done <- err
	}
}

// runTx runs ops in one transaction and commits it unless one failed. err is a begin or commit failure.
func (s *Store) runTx(ctx context.Context, ops []*op) (errs []error, err error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: begin: %w", err)
	}
	s.curTx, s.txStmts = tx, s.txStmts[:0]
	startID := s.nextID
	s.markNext = 0
	undo := func() {
		s.nextID = startID
		s.deferred.rollback()
	}
	defer func() { s.curTx = nil }()
	errs = make([]error, len(ops))
	failed := false
	if err := s.insertEvents(ctx, tx, ops); err != nil {
		// Not one operation's fault that can be told: each runs again alone (commit).
		for i, o := range ops {
			if o.app != nil {
				errs[i] = err
			}
		}
		_ = tx.Rollback()
		undo()
		return errs, nil
	}
	for i, o := range ops {
		if errs[i] = o.fn(ctx, tx); errs[i] != nil {
			failed = true
			if len(ops) > 1 {
				break
			}
		}
	}
	if !failed {
		if err := s.mark(ctx, tx); err != nil {
			for i := range errs {
				errs[i] = err
			}
			failed = true
		}
	}
	if failed {
		_ = tx.Rollback()
		undo()
		return errs, nil
	}
	if err := tx.Commit(); err != nil {
		undo()
		return nil, fmt.Errorf("store: commit: %w", err)
	}
	s.deferred.committed()
	if s.markNext != 0 {
		s.marked, s.markedAt = s.markNext, s.opts.Now()
	}
	return errs, nil
}

func (s *Store) closeDBs() {
	s.stmts.close()
	s.rdb.Close()
	s.wdb.Close()
}

// Close stops the writer after the commit in progress and closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.wg.Wait()
		s.closeDBs()
	})
	return nil
}

// Ping checks that the store is usable: the database answers a read, and a small durable write goes through
// the writer (readiness checks call it every few seconds; it shares group commits with appends).
func (s *Store) Ping(ctx context.Context) error {
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)").Scan(&n); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	// A durable write through the writer, as an append makes: it fails when the disk is full or read-only,
	// the file is locked by another process, or the writer is wedged (ctx ends first).
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO health(k, at) VALUES('ping', ?) ON CONFLICT(k) DO UPDATE SET at = excluded.at`,
			s.opts.Now().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func marshalMap(m map[string]string) []byte {
	if len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(m)
	return b
}

func unmarshalMap(b []byte) map[string]string {
	if len(b) == 0 {
		return nil
	}
	var m map[string]string
	_ = json.Unmarshal(b, &m)
	return m
}

// placeholders returns "?,?,?" for n values.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}
