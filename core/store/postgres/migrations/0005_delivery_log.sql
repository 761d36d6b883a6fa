-- Finished deliveries leave the hot queue table (DESIGN §5: "the hot delivery-queue table stays small"), so
-- vacuum and the claim scans only ever see what is still to do. delivery_log holds them, range-partitioned by
-- day of created_at (a delivery's created_at is its event's received_at: the partition key of events and
-- attempts), so a day of the log is made ahead and dropped whole with that day's events and attempts.
--
-- A delivery moves when it ends: the completion that finishes it deletes it from deliveries and inserts it here,
-- in the same statement. What else finishes rows (born skipped at intake, SkipPending, rows finished before this
-- migration) is moved by the leader in small batches. A failed delivery with an ordering key stays in deliveries:
-- it is what holds its key back under ordering on_failure: block (Claim looks for it there).
-- Retry and Replay of a logged delivery move it back to deliveries, pending, under its own id.
CREATE TABLE delivery_log (
  id             bigint NOT NULL,
  event_seq      bigint NOT NULL,
  event_id       text NOT NULL,
  destination    text NOT NULL,
  status         text NOT NULL,
  attempts       integer NOT NULL DEFAULT 0,
  next_at        bigint NOT NULL,
  created_at     bigint NOT NULL,
  updated_at     bigint NOT NULL,
  last_error     text NOT NULL DEFAULT '',
  ordering_key   text NOT NULL DEFAULT '',
  ordering_block boolean NOT NULL DEFAULT false,
  retry_base     integer NOT NULL DEFAULT 0,
  test           boolean NOT NULL DEFAULT false,
  PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX delivery_log_event ON delivery_log (event_seq);
CREATE INDEX delivery_log_dest ON delivery_log (destination, id);
CREATE INDEX delivery_log_failed ON delivery_log (id) WHERE status = 'failed';

-- The log has a partition for every day events has one (the partitions of today and the days ahead included).
DO $$
DECLARE
  day constant bigint := 86400000000000;
  r record;
  d bigint;
BEGIN
  FOR r IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events'::regclass AND NOT i.inhdetachpending AND c.relname ~ '^events_p[0-9]{8}$'
  LOOP
    d := (extract(epoch FROM to_date(substr(r.relname, 9), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC') * 1e9)::bigint;
    EXECUTE format('CREATE TABLE %I PARTITION OF delivery_log FOR VALUES FROM (%s) TO (%s)',
      'delivery_log_p' || substr(r.relname, 9), d, d + day);
  END LOOP;
END $$;

-- What the leader's mover looks for: finished rows that do not belong in deliveries. Its predicate is repeated,
-- word for word, by the mover's query (movablePred) so the planner uses it.
CREATE INDEX deliveries_movable ON deliveries (id)
  WHERE status = 'delivered' OR status = 'skipped' OR (status = 'failed' AND ordering_key = '');
