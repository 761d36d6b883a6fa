package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// pgSchema makes a schema for this test and returns a DSN whose search path is it; the schema is dropped at
// the end.
func pgSchema(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("SLUICE_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("SLUICE_TEST_PG_DSN is not set (source .ci/services/postgres.sh to run the PostgreSQL tests)")
	}
	schema := "sluice_cmd_" + strings.ToLower(rand.Text()[:12])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Error(err)
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

func TestMigrateCommand(t *testing.T) {
	dsn := pgSchema(t)
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	cfg := fmt.Sprintf("auth:\n  keys: [{name: a, key: k1, role: admin}]\nstore: {driver: postgres, dsn: %q}\n", dsn)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("migrate", "--config", file, "--dry-run")
	if code != 0 || !strings.Contains(out, "would apply 0001_init") || !strings.Contains(out, "would apply 0005_delivery_log") {
		t.Fatalf("dry run: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCmd("migrate", "--config", file)
	if code != 0 || !strings.Contains(out, "applied 0001_init") {
		t.Fatalf("migrate: %d %q %q", code, out, errOut)
	}
	code, out, _ = runCmd("migrate", "--config", file, "--dry-run")
	if code != 0 || !strings.Contains(out, "schema is up to date") {
		t.Fatalf("dry run after migrate: %d %q", code, out)
	}
}
