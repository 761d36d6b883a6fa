package embedded

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPingFailsWhenWritesFail: Ping (what /readyz asks) fails once the database stops taking writes, as on a
// full or read-only disk, and when the store is closed.
func TestPingFailsWhenWritesFail(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping on a healthy store: %v", err)
	}
	// The writer's connection stops accepting changes: every write fails as SQLite's do on a read-only disk.
	if _, err := s.wdb.ExecContext(ctx, "PRAGMA query_only = 1"); err != nil {
		t.Fatal(err)
	}
	err = s.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "write") {
		t.Fatalf("Ping with a store that cannot write: %v", err)
	}
	if _, err := s.wdb.ExecContext(ctx, "PRAGMA query_only = 0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after writes work again: %v", err)
	}
	s.Close()
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed store succeeded")
	}
}
