package postgres

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/storetest"
)

// TestContract runs the store conformance suite, each case on a schema of its own.
func TestContract(t *testing.T) {
	testDSN(t)
	storetest.Run(t, storetest.Features{Short: testing.Short()}, func(t *testing.T, now func() time.Time) storetest.Target {
		dsn, schema := testSchema(t)
		open := func(t *testing.T) store.Store {
			// LeaseTTL < 0: leases end exactly where asked (the suite moves its clock by hand; renewals run on
			// real time and are tested apart).
			s, err := Open(context.Background(), Options{DSN: dsn, Schema: schema, MaxConns: 8, Now: now, LeaseTTL: -1,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return storetest.Target{Store: open(t), Reopen: open}
	})
}
