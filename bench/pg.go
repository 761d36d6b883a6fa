package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgSchema makes a fresh schema for one run and returns a DSN whose search path is it, and a func dropping it.
func pgSchema(dsn string) (string, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := "sluice_bench_" + strings.ToLower(rand.Text()[:12])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, fmt.Errorf("connect to -pg-dsn: %w", err)
	}
	defer conn.Close(ctx)
	if err := vacuumCatalog(ctx, conn); err != nil {
		return "", nil, err
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create schema %s: %w", schema, err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			conn.Close(ctx)
		}
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema, drop, nil
}

// vacuumCatalog vacuums the system catalogs that schemas made and dropped leave dead rows in. Each -pg run
// makes a schema of some sixty tables, partitions and indexes and drops it, and so do the tests; with
// autovacuum off (as on the machines these figures come from), pg_attribute held 500,000 dead rows for 3,700
// live ones after a day of it, and every run started on a larger catalog than the one before: a drift that
// favoured whichever binary ran first in an A/B round. Each run now starts on a vacuumed catalog. A role that may
// not vacuum a catalog is warned by the server and the catalog is skipped.
func vacuumCatalog(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT relname FROM pg_stat_sys_tables WHERE schemaname = 'pg_catalog' AND n_dead_tup > 1000`)
	if err != nil {
		return fmt.Errorf("read the catalog's dead rows: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read the catalog's dead rows: %w", err)
	}
	for _, n := range names {
		if _, err := conn.Exec(ctx, `VACUUM pg_catalog.`+pgx.Identifier{n}.Sanitize()); err != nil {
			return fmt.Errorf("vacuum pg_catalog.%s: %w", n, err)
		}
	}
	return nil
}

// pgStats are PostgreSQL's own counters over a publishing period: how many transactions committed (an
// autocommitted statement is one), how much WAL was written, and what its backends waited on.
type pgStats struct {
	conn             *pgx.Conn
	xact0, wal0      int64
	waits, queries   map[string]int
	cpu0             map[int]time.Duration
	samples, backend int
	stop             chan struct{}
	done             chan struct{}
}

// startPGStats reads the counters now and, when sample is set, samples the wait events of the database's
// active backends every 50 ms until end.
func startPGStats(dsn string, sample bool) (*pgStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	p := &pgStats{conn: conn, waits: map[string]int{}, queries: map[string]int{}, cpu0: pgCPU(), stop: make(chan struct{}), done: make(chan struct{})}
	if p.xact0, p.wal0, err = p.counters(ctx); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	if !sample {
		close(p.done)
		return p, nil
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			rows, err := conn.Query(context.Background(), `SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU'),
				regexp_replace(left(query, 48), '\s+', ' ', 'g')
				FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()`)
			if err != nil {
				continue
			}
			p.samples++
			for rows.Next() {
				var w, q string
				if rows.Scan(&w, &q) == nil {
					p.waits[w]++
					p.queries[q]++
					p.backend++
				}
			}
			rows.Close()
		}
	}()
	return p, nil
}

func (p *pgStats) counters(ctx context.Context) (xact, wal int64, err error) {
	err = p.conn.QueryRow(ctx, `SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		(SELECT pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint`).Scan(&xact, &wal)
	return
}

// end stops sampling and reports per event (events > 0) on stderr.
func (p *pgStats) end(name string, events int64) {
	if p.stop != nil {
		select {
		case <-p.done:
		default:
			close(p.stop)
		}
	}
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer p.conn.Close(ctx)
	// pg_stat_database is flushed by each backend at most every 500 ms (PG 15 stats): let it settle.
	time.Sleep(time.Second)
	xact, wal, err := p.counters(ctx)
	if err != nil || events <= 0 {
		return
	}
	var cpu time.Duration
	for pid, t := range pgCPU() {
		cpu += t - p.cpu0[pid] // a backend started since counts from 0; one that ended is lost
	}
	fmt.Fprintf(os.Stderr, "%s: PostgreSQL per accepted event: %.2f commits, %.0f WAL bytes (whole cluster), %.0f µs CPU (local server processes)\n", name,
		float64(xact-p.xact0)/float64(events), float64(wal-p.wal0)/float64(events), cpu.Seconds()*1e6/float64(events))
	if p.samples == 0 {
		return
	}
	type kv struct {
		k string
		n int
	}
	var ws []kv
	for k, n := range p.waits {
		ws = append(ws, kv{k, n})
	}
	slices.SortFunc(ws, func(a, b kv) int { return b.n - a.n })
	var b strings.Builder
	for i, w := range ws {
		if i == 8 {
			break
		}
		fmt.Fprintf(&b, " %s %.2f", w.k, float64(w.n)/float64(p.samples))
	}
	fmt.Fprintf(os.Stderr, "%s: PostgreSQL active backends on average %.2f:%s\n", name, float64(p.backend)/float64(p.samples), b.String())
	ws = ws[:0]
	for k, n := range p.queries {
		ws = append(ws, kv{k, n})
	}
	slices.SortFunc(ws, func(a, b kv) int { return b.n - a.n })
	for i, w := range ws {
		if i == 10 {
			break
		}
		fmt.Fprintf(os.Stderr, "%s:   %.2f active in %q\n", name, float64(w.n)/float64(p.samples), w.k)
	}
}

// pgCPU is the CPU time of each local PostgreSQL server process (the database runs on this machine in the
// documented setup; elsewhere this finds none).
func pgCPU() map[int]time.Duration {
	out := map[int]time.Duration{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || !strings.HasPrefix(string(b), "postgres") {
			continue
		}
		out[pid] = cpuTime(pid)
	}
	return out
}
