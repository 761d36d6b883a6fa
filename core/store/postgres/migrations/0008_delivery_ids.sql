-- A delivery's id is made from its event's: seq << 16 | its place in the event's fan-out (so an event fans out to
-- at most 65,536 destinations). An event's deliveries are then one range of the primary key, in deliveries and in
-- delivery_log alike, and deliveries_event and delivery_log_event go: two of the seven index entries a delivery
-- wrote, and an eighth of the WAL of a fan-out. A delivery's event is also known from its id alone.
--
-- Ids made before this migration stay as they are. New events are numbered from first_seq, the first seq whose
-- range lies above every delivery id made so far; the events before it are found through partial indexes on
-- event_seq (deliveries_event_before, delivery_log_event_before) until retention has removed them. A database
-- that holds no delivery yet has no such index.
--
-- id loses its identity default: a node of an older version still running against this database cannot make a
-- delivery whose id a new one may also make (its appends fail instead, and the publisher is answered 503).
CREATE TABLE delivery_ids (
  one       boolean PRIMARY KEY DEFAULT true CHECK (one),
  first_seq bigint NOT NULL
);

DO $$
DECLARE
  last_id  bigint;
  next_seq bigint;
  first    bigint;
BEGIN
  SELECT coalesce(greatest((SELECT max(id) FROM deliveries), (SELECT max(id) FROM delivery_log),
    (SELECT max(delivery_id) FROM attempts)), 0) INTO last_id;
  SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM events_seq_seq INTO next_seq;
  first := greatest(next_seq, (last_id >> 16) + 1);
  IF first > next_seq THEN
    PERFORM setval('events_seq_seq', first, false);
  END IF;
  INSERT INTO delivery_ids (one, first_seq) VALUES (true, first);
  IF last_id > 0 THEN
    EXECUTE format('CREATE INDEX deliveries_event_before ON deliveries (event_seq) WHERE event_seq < %s', first);
    EXECUTE format('CREATE INDEX delivery_log_event_before ON delivery_log (event_seq) WHERE event_seq < %s', first);
  END IF;
END $$;

DROP INDEX deliveries_event;
DROP INDEX delivery_log_event;
ALTER TABLE deliveries ALTER COLUMN id DROP IDENTITY;
