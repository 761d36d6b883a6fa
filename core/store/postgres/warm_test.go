package postgres

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/core/store"
)

// TestPrewarmOpensWarmConnections: with Prewarm, Open leaves MaxConns connections in the pool, each with the
// hot statements prepared, and the store works on them as on any other.
func TestPrewarmOpensWarmConnections(t *testing.T) {
	const n = 4
	dsn, schema := testSchema(t)
	s := openNode(t, dsn, schema, func(o *Options) { o.MaxConns = n; o.Prewarm = true })
	if got := s.pool.Stat().TotalConns(); got != n {
		t.Fatalf("connections in the pool after Open: %d, want %d", got, n)
	}
	ctx := context.Background()
	// Every connection at once, so each is asked.
	conns := make([]*pgxpool.Conn, n)
	for i := range conns {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	if got := s.pool.Stat().TotalConns(); got != n {
		t.Errorf("connections while all %d are held: %d (one was made on demand)", n, got)
	}
	for i, c := range conns {
		rows, err := c.Query(ctx, `SELECT statement FROM pg_prepared_statements`)
		if err != nil {
			t.Fatal(err)
		}
		prepared, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hotStatements {
			if !slices.Contains(prepared, h.sql) {
				t.Errorf("connection %d: not prepared: %.40q…", i, h.sql)
			}
		}
		c.Release()
	}

	res, err := s.Append(ctx, []store.NewEvent{ev("warm-1", "")}, appendOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, delivered(res)); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Event(ctx, "warm-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Deliveries) != 2 {
		t.Fatalf("deliveries: %+v", rec.Deliveries)
	}
	for _, d := range rec.Deliveries {
		if d.Status != store.Delivered {
			t.Errorf("delivery %d: %s, want delivered", d.ID, d.Status)
		}
	}
}

// TestPrewarmRefusedNamesMaxConns: when PostgreSQL will not give a node all its connections, Open fails
// naming store.max_conns and the fix, and leaves none of its connections behind.
func TestPrewarmRefusedNamesMaxConns(t *testing.T) {
	dsn, schema := testSchema(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	role := "sluice_limited_" + strings.ToLower(randomID())
	// Three connections: the migration's, the presence lock's and one of the pool's fit; four of the pool's
	// do not.
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN CONNECTION LIMIT 3`,
		`CREATE SCHEMA ` + pgx.Identifier{schema}.Sanitize() + ` AUTHORIZATION ` + role,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Error(err)
		}
		if _, err := c.Exec(ctx, `DROP ROLE IF EXISTS `+role); err != nil {
			t.Error(err)
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)

	s, err := Open(ctx, Options{DSN: u.String(), Schema: schema, MaxConns: 4, Prewarm: true})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded with more connections than the role may have")
	}
	if !strings.Contains(err.Error(), "store.max_conns") || !strings.Contains(err.Error(), "max_connections") {
		t.Errorf("error does not name store.max_conns and max_connections: %v", err)
	}
	if errors.Is(err, ErrClosed) {
		t.Errorf("error: %v", err)
	}
	// A backend ends a moment after its client closes the connection: wait for the role's to go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, role).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections of the failed Open are still open", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
