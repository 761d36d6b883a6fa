-- A delivery leased at birth is written once: its event's fanouts row carries it (and the event's other
-- deliveries leased at birth) until it ends, instead of a deliveries row inserted at intake and deleted at its
-- outcome. An event goes this way when it has two or more deliveries, all leased at birth, none with an ordering
-- key, none born skipped, and it is not a test send; any other event's deliveries are rows of deliveries as before.
--
-- Entry i of dests (1-based) is the delivery whose id is event_seq << 16 | (i - 1); it is open (pending, under
-- the fanout's lease) while open[i]. The holder's completions close entries (their log rows, or a deliveries
-- row for one that will be retried), counting remaining down, and delete the row with the last. Anything else
-- that must act on an open entry — a retry by hand, a skip, a released or expired lease — first spills the row:
-- its open entries become deliveries rows exactly as intake would have written them (pending, leased under the
-- same token until the same time), and the row goes, in one statement. The holder's completions then find
-- them as rows.
CREATE TABLE fanouts (
  event_seq   bigint PRIMARY KEY,
  event_id    text NOT NULL,
  created_at  bigint NOT NULL,
  dests       text[] NOT NULL,
  open        boolean[] NOT NULL,
  remaining   integer NOT NULL, -- how many are open
  claim_token bigint NOT NULL,
  claim_node  bigint NOT NULL,
  lease_until bigint NOT NULL
) WITH (fillfactor = 50);

-- Expired leases are spilled by whichever node finds them first.
CREATE INDEX fanouts_lease ON fanouts (lease_until);

-- The open entries as deliveries rows (the columns of deliveries), for reads.
CREATE VIEW fanout_deliveries AS
  SELECT (f.event_seq << 16) + (o.i - 1) AS id, f.event_seq, f.event_id, o.destination, 'pending'::text AS status,
    0 AS attempts, f.lease_until AS next_at, true AS leased, f.claim_token, f.claim_node, f.created_at,
    f.created_at AS updated_at, ''::text AS last_error, ''::text AS ordering_key, false AS ordering_block,
    0 AS retry_base, false AS test
  FROM fanouts f CROSS JOIN LATERAL unnest(f.dests, f.open) WITH ORDINALITY AS o(destination, is_open, i)
  WHERE o.is_open;
