package embedded

// schema is applied at every open; statements are idempotent.
//
// Times are unix nanoseconds. A pending delivery is due when next_at <= now; a claim leases it by moving next_at
// to the lease's end and setting leased, so due-scans touch only claimable rows and the partial index holds
// only pending work.
//
// Indexes are chosen with Append's cost in mind: each one is another B-tree insert per event or delivery.
//   - events_topic, events_tenant and deliveries_dest serve the admin lists (newest first by seq/id, so the
//     key ends in it and a list with a LIMIT walks the index backwards and stops early).
//   - events_tenant is partial: a single-tenant install (no tenants) pays nothing for it; tenant-less events
//     are listed by walking the table, where they are dense.
//   - deliveries_failed is partial: new rows are pending, so it costs Append nothing and Complete only on a
//     failure, yet lists "what failed" without walking every delivered row.
//   - A delivery's first attempt is kept on its row (a1_*, NULL until tried), not in attempts: most deliveries
//     succeed at once, and completing one is then a single row write (an insert, for a deferred delivery),
//     with no attempts row and its B-tree insert. attempts holds the later attempts (n >= 2), and the first ones of rows written before this
//     layout (their a1_at is NULL).
//   - No index on deliveries.created_at: time bounds of lists and replays are filters on the walk above.
//   - No index on events.received_at: retention walks events by seq, which grows with received_at, up to a
//     bound it finds by bisection (Prune). The index cost every event a B-tree insert and a page rewritten per
//     commit (about 11% of the bytes written per event of a fan-out of 1) for that one reader.
//   - A delivery leased at birth has no row until it completes (see deferred.go), so it never enters
//     deliveries_due: events.fanout names it meanwhile, and marks keeps where Open starts looking for such
//     deliveries after a crash. events.fanout and events.traceparent, dfirst and dlast are added by the
//     migration steps in embedded.go, not here.
//   - No index on deliveries.event_seq: an event's deliveries are made together with consecutive ids, which
//     the event row keeps (dfirst, dlast: see addDeliveryRanges), so they are a rowid range.
const schema = eventsTable + `
CREATE UNIQUE INDEX IF NOT EXISTS events_id_tenant ON events(id, tenant);` + rest

// eventsTable is the events table. An event id is unique per tenant (events_id_tenant, which by leading with
// the id also finds an id across tenants).
const eventsTable = `
CREATE TABLE IF NOT EXISTS events (
  seq            INTEGER PRIMARY KEY,
  id             TEXT NOT NULL,
  topic          TEXT NOT NULL,
  tenant         TEXT NOT NULL DEFAULT '',
  time           INTEGER NOT NULL,
  received_at    INTEGER NOT NULL,
  correlation_id TEXT NOT NULL DEFAULT '',
  metadata       BLOB,
  scope          BLOB,
  data           BLOB NOT NULL
);`

const rest = `
CREATE INDEX IF NOT EXISTS events_topic ON events(topic, seq);
CREATE INDEX IF NOT EXISTS events_tenant ON events(tenant, seq) WHERE tenant != '';
CREATE TABLE IF NOT EXISTS deliveries (
  id          INTEGER PRIMARY KEY,
  event_seq   INTEGER NOT NULL,
  event_id    TEXT NOT NULL,
  destination TEXT NOT NULL,
  status      TEXT NOT NULL,
  attempts    INTEGER NOT NULL DEFAULT 0,
  next_at     INTEGER NOT NULL,
  leased      INTEGER NOT NULL DEFAULT 0,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  last_error  TEXT NOT NULL DEFAULT '',
  ordering_key   TEXT NOT NULL DEFAULT '',
  ordering_block INTEGER NOT NULL DEFAULT 0,
  retry_base     INTEGER NOT NULL DEFAULT 0,
  test           INTEGER NOT NULL DEFAULT 0,
  a1_at          INTEGER,
  a1_us          INTEGER,
  a1_code        INTEGER,
  a1_error       TEXT,
  a1_response    BLOB
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dest ON deliveries(destination, id);
CREATE INDEX IF NOT EXISTS deliveries_failed ON deliveries(id) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS deliveries_order_pending ON deliveries(destination, ordering_key, id)
  WHERE status = 'pending' AND ordering_key != '';
CREATE INDEX IF NOT EXISTS deliveries_order_failed ON deliveries(destination, ordering_key, id)
  WHERE status = 'failed' AND ordering_key != '';
CREATE TABLE IF NOT EXISTS attempts (
  delivery_id INTEGER NOT NULL,
  n           INTEGER NOT NULL,
  at          INTEGER NOT NULL,
  duration_us INTEGER NOT NULL,
  status_code INTEGER NOT NULL DEFAULT 0,
  error       TEXT NOT NULL DEFAULT '',
  response    BLOB,
  PRIMARY KEY (delivery_id, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (
  k  TEXT PRIMARY KEY,
  at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (
  k TEXT PRIMARY KEY,
  v INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
  name           TEXT PRIMARY KEY,
  correlation_id TEXT NOT NULL,
  tenant         TEXT NOT NULL DEFAULT '',
  url            TEXT NOT NULL,
  topics         BLOB NOT NULL,
  secret         TEXT NOT NULL DEFAULT '',
  created_at     INTEGER NOT NULL,
  expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
` + destinationsTable + `
CREATE UNIQUE INDEX IF NOT EXISTS destinations_tenant_name ON destinations(tenant, name);
CREATE TABLE IF NOT EXISTS destination_states (
  name       TEXT PRIMARY KEY,
  enabled    INTEGER NOT NULL,
  reason     TEXT NOT NULL DEFAULT '',
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
`

// destinationsTable holds API destinations. Names are unique per tenant (destinations_tenant_name), so a
// tenant never learns another's names from a clash.
const destinationsTable = `
CREATE TABLE IF NOT EXISTS destinations (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  tenant     TEXT NOT NULL DEFAULT '',
  type       TEXT NOT NULL,
  spec       BLOB,
  retiring   BLOB,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);`
