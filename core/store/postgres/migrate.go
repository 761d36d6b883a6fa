package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one versioned schema step, embedded in the binary.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// ErrSchemaTooNew is returned when the database was migrated by a newer Sluice than this one: running against
// it could corrupt what the newer version wrote.
var ErrSchemaTooNew = errors.New("database schema is newer than this sluice knows")

// Migrations returns the embedded migrations in order.
func Migrations() []Migration {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		panic(err) // embedded at build time
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			panic("postgres: migration " + name + " is not named NNNN_name.sql")
		}
		b, err := migrationFS.ReadFile("migrations/" + name)
		if err != nil {
			panic(err)
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(name, ".sql"), SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// migrateLock is taken (per schema) while migrations are read or applied, so nodes starting together apply
// each migration once and none reads a half-applied schema.
const migrateLock = `SELECT pg_advisory_lock(hashtext('sluice.migrate.' || current_schema()))`
const migrateUnlock = `SELECT pg_advisory_unlock(hashtext('sluice.migrate.' || current_schema()))`

// migrate applies the migrations the database lacks (none with dryRun) and returns them. It refuses a database
// that has a migration this binary does not know.
func migrate(ctx context.Context, conn *pgx.Conn, dryRun bool) ([]Migration, error) {
	if _, err := conn.Exec(ctx, migrateLock); err != nil {
		return nil, fmt.Errorf("take the migration lock: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), migrateUnlock) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS sluice_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("create sluice_migrations: %w", err)
	}
	applied := map[int]bool{}
	maxApplied := 0
	rows, err := conn.Query(ctx, `SELECT version FROM sluice_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read sluice_migrations: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		applied[v], maxApplied = true, max(maxApplied, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read sluice_migrations: %w", err)
	}
	all := Migrations()
	if known := all[len(all)-1].Version; maxApplied > known {
		return nil, fmt.Errorf("%w: the database is at migration %d, this binary knows up to %d; run the newer sluice (or restore a backup taken before it migrated)",
			ErrSchemaTooNew, maxApplied, known)
	}
	var todo []Migration
	for _, m := range all {
		if !applied[m.Version] {
			todo = append(todo, m)
		}
	}
	if dryRun {
		return todo, nil
	}
	for _, m := range todo {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO sluice_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("apply migration %s: %w", m.Name, err)
		}
	}
	return todo, nil
}

// Migrate applies the migrations the database at opts.DSN lacks (with dryRun, only lists them) and returns
// them. It is what `sluice migrate` runs; Open does the same at start.
func Migrate(ctx context.Context, opts Options, dryRun bool) ([]Migration, error) {
	cfg, err := opts.poolConfig()
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, unavailable(fmt.Errorf("store: connect: %w", err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := ensureSchema(ctx, conn, opts.Schema); err != nil {
		return nil, err
	}
	return migrate(ctx, conn, dryRun)
}

func ensureSchema(ctx context.Context, conn *pgx.Conn, schema string) error {
	if schema == "" {
		return nil
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		// Several nodes creating it at once race on the catalog; one wins, which is all that is needed.
		var exists bool
		if err2 := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err2 != nil || !exists {
			return fmt.Errorf("create schema %s: %w", schema, err)
		}
	}
	return nil
}
