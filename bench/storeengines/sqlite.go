package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite"
)

// sqlitePragmas are applied to every connection through the DSN (modernc's
// _pragma parameter), so the writer connection and the reader pool all get
// them. synchronous is per-connection, which is why it must be in the DSN.
var sqlitePragmas = []string{
	"busy_timeout(5000)",           // readers/writer wait instead of SQLITE_BUSY
	"journal_mode(WAL)",            // readers never block the writer; commit = WAL append
	"synchronous(FULL)",            // WAL is fsynced at EVERY commit (durable ack)
	"cache_size(-65536)",           // 64 MiB page cache per connection
	"temp_store(MEMORY)",           // sorts/temp b-trees in memory
	"wal_autocheckpoint(1000)",     // default: checkpoint when WAL > 1000 pages (~4 MiB)
	"journal_size_limit(67108864)", // truncate WAL back to <= 64 MiB after checkpoints
	"foreign_keys(OFF)",
}

const sqliteSchema = `
CREATE TABLE IF NOT EXISTS events(
  id     TEXT PRIMARY KEY,
  seq    INTEGER NOT NULL,
  topic  TEXT NOT NULL,
  tenant TEXT NOT NULL,
  time   INTEGER NOT NULL,
  body   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries(
  id          INTEGER PRIMARY KEY,
  event_id    TEXT NOT NULL,
  destination TEXT NOT NULL,
  status      TEXT NOT NULL,
  next_at     INTEGER NOT NULL,
  attempts    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, status, next_at);
`

// sqliteBGCheckpoint: when > 0, wal_autocheckpoint is disabled and a
// background goroutine runs PRAGMA wal_checkpoint(PASSIVE) at this interval
// on its own connection, keeping checkpoint work off the commit path.
var sqliteBGCheckpoint time.Duration

type sqliteStore struct {
	stopCk chan struct{}
	ckDone chan struct{}
	ckRuns atomic.Int64
	db     *sql.DB   // reader pool
	wdb    *sql.DB   // writer: exactly one connection
	wconn  *sql.Conn // the single writer connection
	insEv  *sql.Stmt
	insDel *sql.Stmt
	upd    *sql.Stmt
	gw     *groupWriter
	seq    int64
	dueQ   *sql.Stmt
	dueQB  *sql.Stmt
}

func sqliteDSN(path string) string {
	q := url.Values{}
	q.Set("_txlock", "immediate")
	for _, p := range sqlitePragmas {
		q.Add("_pragma", p)
	}
	return "file:" + path + "?" + q.Encode()
}

func setSQLiteAutocheckpoint(pages int) {
	for i, p := range sqlitePragmas {
		if strings.HasPrefix(p, "wal_autocheckpoint(") {
			sqlitePragmas[i] = fmt.Sprintf("wal_autocheckpoint(%d)", pages)
		}
	}
}

func openSQLite(dir string, maxBatch int) (*sqliteStore, error) {
	path := filepath.Join(dir, "sluice.db")
	ctx := context.Background()
	wdb, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return nil, err
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wconn, err := wdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := wconn.ExecContext(ctx, sqliteSchema); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	s := &sqliteStore{wdb: wdb, wconn: wconn}
	if err := wconn.QueryRowContext(ctx, "SELECT coalesce(max(seq),0) FROM events").Scan(&s.seq); err != nil {
		return nil, err
	}
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = wconn.PrepareContext(ctx, q)
		return st
	}
	s.insEv = prep(`INSERT INTO events(id, seq, topic, tenant, time, body) VALUES(?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING`)
	s.insDel = prep(`INSERT INTO deliveries(event_id, destination, status, next_at, attempts) VALUES(?,?,?,?,0)`)
	s.upd = prep(`UPDATE deliveries SET status = 'delivered', attempts = attempts + 1 WHERE id = ?`)
	if err != nil {
		return nil, err
	}
	s.db, err = sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return nil, err
	}
	s.db.SetMaxOpenConns(4)
	s.dueQ, err = s.db.Prepare(`SELECT id, event_id, next_at, attempts FROM deliveries
		WHERE destination = ? AND status = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?`)
	if err != nil {
		return nil, err
	}
	s.dueQB, err = s.db.Prepare(`SELECT d.id, d.event_id, d.next_at, d.attempts, e.body
		FROM deliveries d JOIN events e ON e.id = d.event_id
		WHERE d.destination = ? AND d.status = 'pending' AND d.next_at <= ? ORDER BY d.next_at LIMIT ?`)
	if err != nil {
		return nil, err
	}
	s.gw = newGroupWriter(maxBatch, s.apply)
	if sqliteBGCheckpoint > 0 {
		s.stopCk, s.ckDone = make(chan struct{}), make(chan struct{})
		go s.checkpointer(path)
	}
	return s, nil
}

func (s *sqliteStore) checkpointer(path string) {
	defer close(s.ckDone)
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	t := time.NewTicker(sqliteBGCheckpoint)
	defer t.Stop()
	for {
		select {
		case <-s.stopCk:
			return
		case <-t.C:
			var busy, logFrames, ckpt int
			if err := db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &ckpt); err == nil {
				s.ckRuns.Add(1)
			}
		}
	}
}

// apply runs in the single writer goroutine: ONE transaction for everything
// queued, one COMMIT (= one WAL fsync with synchronous=FULL).
func (s *sqliteStore) apply(batch []*request) (err error) {
	ctx := context.Background()
	if _, err = s.wconn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_, _ = s.wconn.ExecContext(ctx, "ROLLBACK")
		}
	}()
	for _, r := range batch {
		for _, e := range r.evs {
			s.seq++
			e.Seq = s.seq
			res, err := s.insEv.ExecContext(ctx, e.ID, e.Seq, e.Topic, e.Tenant, e.Time, e.Data)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue // duplicate event id: dedupe via the PRIMARY KEY index
			}
			for i := range e.Deliv {
				d := &e.Deliv[i]
				res, err := s.insDel.ExecContext(ctx, e.ID, d.Dest, d.Status, d.NextAt)
				if err != nil {
					return err
				}
				d.ID, _ = res.LastInsertId()
			}
		}
		for _, id := range r.marks {
			res, err := s.upd.ExecContext(ctx, id)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return fmt.Errorf("delivery %d not found", id)
			}
		}
	}
	_, err = s.wconn.ExecContext(ctx, "COMMIT")
	return err
}

func (s *sqliteStore) Append(evs []*Event) error       { return s.gw.submit(evs, nil) }
func (s *sqliteStore) MarkDelivered(ids []int64) error { return s.gw.submit(nil, ids) }
func (s *sqliteStore) Commits() int64                  { return s.gw.commits.Load() }
func (s *sqliteStore) Fsyncs() (int64, int64, bool)    { return 0, 0, false }

func (s *sqliteStore) Due(dest string, now int64, limit int, bodies bool) (int, error) {
	st := s.dueQ
	if bodies {
		st = s.dueQB
	}
	rows, err := st.Query(dest, now, limit)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	var id, nextAt, attempts int64
	var evID string
	var body []byte
	for rows.Next() {
		if bodies {
			err = rows.Scan(&id, &evID, &nextAt, &attempts, &body)
		} else {
			err = rows.Scan(&id, &evID, &nextAt, &attempts)
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

func (s *sqliteStore) Verify() ([]string, error) {
	ctx := context.Background()
	var jm, ver string
	var syncMode, ckpt int
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&jm); err != nil {
		return nil, err
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
		return nil, err
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&ckpt); err != nil {
		return nil, err
	}
	if err := s.wconn.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&ver); err != nil {
		return nil, err
	}
	var plan []string
	rows, err := s.db.Query(`EXPLAIN QUERY PLAN SELECT d.id, d.event_id, d.next_at, d.attempts, e.body
		FROM deliveries d JOIN events e ON e.id = d.event_id
		WHERE d.destination = 'dest-0' AND d.status = 'pending' AND d.next_at <= 1 ORDER BY d.next_at LIMIT 100`)
	if err == nil {
		for rows.Next() {
			var a, b, c int
			var detail string
			if rows.Scan(&a, &b, &c, &detail) == nil {
				plan = append(plan, detail)
			}
		}
		rows.Close()
	}
	info := []string{
		"sqlite_version=" + ver,
		fmt.Sprintf("writer conn: journal_mode=%s synchronous=%d (2=FULL) wal_autocheckpoint=%d", jm, syncMode, ckpt),
		"pragmas(all conns): " + strings.Join(sqlitePragmas, ", "),
		fmt.Sprintf("background PASSIVE checkpoint interval: %v (0 = off, autocheckpoint in the committing connection)", sqliteBGCheckpoint),
		"due query plan: " + strings.Join(plan, " | "),
	}
	if !strings.EqualFold(jm, "wal") || syncMode < 2 {
		return info, fmt.Errorf("sqlite not durable: journal_mode=%s synchronous=%d", jm, syncMode)
	}
	return info, nil
}

func (s *sqliteStore) Close() error {
	s.gw.close()
	if s.stopCk != nil {
		close(s.stopCk)
		<-s.ckDone
	}
	for _, st := range []*sql.Stmt{s.insEv, s.insDel, s.upd, s.dueQ, s.dueQB} {
		st.Close()
	}
	s.db.Close()
	s.wconn.Close()
	return s.wdb.Close()
}
