package config

import (
	"net/url"
	"strings"
)

// maxStoreConns bounds store.max_conns: PostgreSQL's own default max_connections is 100, shared by every node.
const maxStoreConns = 1000

// validatePostgres checks the postgres driver's keys. Messages never repeat the DSN: it holds a password.
func (l *loader) validatePostgres(s Store) {
	dsn := strings.TrimSpace(s.DSN)
	switch {
	case dsn == "":
		l.errorf("store.dsn", "is required for the postgres store: postgres://user:${PGPASSWORD}@host:5432/db")
	case strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil || u.Host == "" {
			l.errorf("store.dsn", "is not a valid PostgreSQL URL: use postgres://user:password@host:5432/db (escape special characters in the password)")
		}
	case strings.Contains(dsn, "://"):
		l.errorf("store.dsn", "must be a postgres:// URL or a key=value connection string")
	case !strings.Contains(dsn, "="):
		l.errorf("store.dsn", "must be a postgres:// URL or a key=value connection string such as \"host=db dbname=sluice\"")
	}
	if s.MaxConns < 0 || s.MaxConns > maxStoreConns {
		l.errorf("store.max_conns", "must be between 1 and %d (0 takes the default, 20)", maxStoreConns)
	}
}
