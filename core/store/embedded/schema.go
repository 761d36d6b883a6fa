package embedded

// schema is applied at every open; statements are idempotent.
//
// Times are unix nanoseconds. A pending delivery is due when next_at <= now; a claim leases it by moving next_at
// to the lease's end and setting leased, so due-scans touch only claimable rows and the partial index holds
// only pending work.
const schema = `
CREATE TABLE IF NOT EXISTS events (
  seq            INTEGER PRIMARY KEY,
  id             TEXT NOT NULL UNIQUE,
  topic          TEXT NOT NULL,
  tenant         TEXT NOT NULL DEFAULT '',
  time           INTEGER NOT NULL,
  received_at    INTEGER NOT NULL,
  correlation_id TEXT NOT NULL DEFAULT '',
  metadata       BLOB,
  scope          BLOB,
  data           BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
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
  ordering_block INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_seq);
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
`
