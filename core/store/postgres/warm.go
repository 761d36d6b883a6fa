package postgres

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A connection's first statements are slow: PostgreSQL starts a backend for it, and that backend reads the
// catalog entries of every table, index, partition, type and function a statement names the first time it
// parses, plans and runs it. The append statement alone took 60 ms to parse on a fresh backend of a loaded
// two-core machine. A pool that makes its connections on demand pays this in the first second of load, as
// a node starts or fails over, one cold connection after another: a node publishing 4,000 events/s from its
// start answered its first half-second of them in 100–200 ms (accept p99 of a 15 s run 130 ms, 2–3 ms at the
// median). With Options.Prewarm the pool opens every connection in Open and warms each before it is used.

// hotStatements are the statements of the hot path: prepared on every warm connection (pgx runs a statement
// prepared under its own text as that prepared statement) and run once on empty input, which reads their
// catalog entries and writes nothing.
var hotStatements = []struct {
	sql  string
	args []any
}{
	{`SELECT txid_current()`, nil},
	{appendSQL, []any{texts, texts, texts, int8s, texts, byteas, byteas, byteas, texts, int64(0), int64(0), int8s, texts,
		int8s, bools, int8s, texts, bools, bools, texts, int64(0), int4s, bools}},
	{completeSQL, []any{int8s, texts, int4s, int8s, texts, int8s, int64(0), int64(0), int4s, int8s, int8s, int4s, byteas}},
	{fanCompleteSQL, []any{int8s, texts, int4s, int8s, texts, int8s, int64(0), int64(0), int4s, int8s, int8s, int4s, byteas}},
	{fanRenewSQL, []any{int8s, int8s, int8s, int64(0), int64(0)}},
	{claimSQL, []any{"", int64(0), 0, int64(0), int64(0), int64(0)}},
	{renewSQL, []any{int8s, int8s, int8s, int64(0), int64(0)}},
}

// Empty arrays of each element type the hot statements take.
var (
	texts  = []string{}
	int8s  = []int64{}
	int4s  = []int32{}
	bools  = []bool{}
	byteas = [][]byte{}
)

// warm prepares and runs the hot statements on a new connection (pgxpool's AfterConnect).
func warm(ctx context.Context, c *pgx.Conn) error {
	for _, h := range hotStatements {
		if _, err := c.Prepare(ctx, h.sql, h.sql); err != nil {
			return fmt.Errorf("prepare the hot statements: %w", err)
		}
		// txid_current would assign a transaction id: preparing it is enough.
		if h.args == nil {
			continue
		}
		if _, err := c.Exec(ctx, h.sql, h.args...); err != nil {
			return fmt.Errorf("warm the hot statements: %w", err)
		}
	}
	return nil
}

// fillPool opens n connections of pool at once (each warmed by warm) and returns them to it, where MinConns
// keeps them. It fails when PostgreSQL refuses one, naming what to change.
func fillPool(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conns := make([]*pgxpool.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { conns[i], errs[i] = pool.Acquire(ctx) })
	}
	wg.Wait()
	var first error
	for i, c := range conns {
		if c != nil {
			c.Release()
		}
		if first == nil && errs[i] != nil {
			first = errs[i]
		}
	}
	if first != nil {
		return unavailable(fmt.Errorf("store: open the %d connections of store.max_conns: %w (lower store.max_conns, or raise PostgreSQL's max_connections)", n, first))
	}
	return nil
}
