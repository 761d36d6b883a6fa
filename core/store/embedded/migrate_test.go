package embedded

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
)

// oldSchemas are the deliveries tables of earlier versions: the first one, and the one before retry_base.
var oldSchemas = map[string]string{
	"v1": `CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL,
		destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
		leased INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '')`,
	"v2": `CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, event_id TEXT NOT NULL,
		destination TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
		leased INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '',
		ordering_key TEXT NOT NULL DEFAULT '', ordering_block INTEGER NOT NULL DEFAULT 0)`,
}

func TestMigrateOldDatabase(t *testing.T) {
	for name, deliveries := range oldSchemas {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{
				`CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT '',
					time INTEGER NOT NULL, received_at INTEGER NOT NULL, correlation_id TEXT NOT NULL DEFAULT '', metadata BLOB, scope BLOB, data BLOB NOT NULL)`,
				`CREATE INDEX events_received ON events(received_at)`,
				deliveries,
				`CREATE TABLE attempts (delivery_id INTEGER NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL, duration_us INTEGER NOT NULL,
					status_code INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', response BLOB, PRIMARY KEY (delivery_id, n)) WITHOUT ROWID`,
				`INSERT INTO events (seq, id, topic, time, received_at, data) VALUES (1, 'old', 'case.created', 1, 1, '{}')`,
				`INSERT INTO deliveries (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, last_error)
					VALUES (1, 1, 'old', 'd', 'failed', 2, 0, 1, 1, 'http 400')`,
			} {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Close()

			s := open(t, dir)
			d, err := s.Delivery(ctx, 1)
			if err != nil || d.Status != store.Failed || d.RetryBase != 0 || d.Test || d.LastError != "http 400" {
				t.Fatalf("old delivery after upgrade: %+v %v", d, err)
			}
			if d, err := s.Retry(ctx, 1, time.Now()); err != nil || d.RetryBase != 2 {
				t.Fatalf("retry after upgrade: %+v %v", d, err)
			}
			if jobs, err := s.Claim(ctx, "d", time.Now(), time.Minute, 10); err != nil || len(jobs) != 1 || jobs[0].Delivery.RetryBase != 2 || jobs[0].Event.ID != "old" {
				t.Fatalf("claim after upgrade: %+v %v", jobs, err)
			}
			// Event ids became unique per tenant: the tenant-less "old" does not hold the id for acme.
			if res := mustAppend(t, s, []store.NewEvent{{Event: newEvent("old"), Destinations: []string{"d2"}}}); res[0].Duplicate || res[0].Err != nil {
				t.Fatalf("acme's event old after upgrade: %+v, want a new event", res[0])
			}
			if rec, err := s.TenantEvent(ctx, "", "old"); err != nil || len(rec.Deliveries) != 1 {
				t.Fatalf("the tenant-less old after upgrade: %+v %v", rec, err)
			}
			res := mustAppend(t, s, []store.NewEvent{{Event: newEvent("new"), Destinations: []string{"d"}, Test: true}})
			if list, err := s.ListDeliveries(ctx, store.DeliveryFilter{Destinations: []string{"d"}}); err != nil || len(list) != 2 || !list[0].Test || list[0].ID != res[0].Deliveries[0].ID {
				t.Fatalf("list after upgrade: %+v %v", list, err)
			}
			if err := s.PutDestination(ctx, store.DestinationRecord{ID: "i", Name: "n", Type: "webhook"}); err != nil {
				t.Fatalf("destinations table after upgrade: %v", err)
			}
			if err := s.SetDestinationState(ctx, store.DestinationState{Name: "n"}); err != nil {
				t.Fatalf("destination_states table after upgrade: %v", err)
			}
			s.Close()
			// Opening an up-to-date database again changes nothing.
			s = open(t, dir)
			if got, err := s.Destinations(ctx); err != nil || len(got) != 1 {
				t.Fatalf("second open: %v %v", got, err)
			}
		})
	}
}
