-- Today's layout: each delivery an event leases at birth is a row of deliveries (three index entries), inserted
-- with the event and deleted when its outcome moves it to delivery_log. One transaction of this script is the
-- append of a group of 8 events fanned out to 10 destinations, then the completion of their 80 deliveries in two
-- batches of 40, each in its own transaction, as the writers commit them.
\set g 8
WITH s AS (SELECT nextval('pgmodel.events_seq_seq') AS seq, (extract(epoch from clock_timestamp())*1e9)::bigint AS now FROM generate_series(1,:g)),
ev AS (INSERT INTO pgmodel.events (seq, id, topic, time, received_at, data) SELECT seq, 'evt_'||seq, 'user.created', now, now, '\x7b22757365725f6964223a2231323334227d'::bytea FROM s),
dl AS (INSERT INTO pgmodel.deliveries (id, event_seq, event_id, destination, status, next_at, leased, claim_token, claim_node, created_at, updated_at) SELECT (seq<<16)+k, seq, 'evt_'||seq, 'dst_'||k, 'pending', now, true, 7, 1, now, now FROM s, generate_series(0,9) k RETURNING destination),
cnt AS (INSERT INTO pgmodel.pending_counts (destination, shard, n) SELECT destination, :client_id, count(*) FROM dl GROUP BY destination ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n)
SELECT min(seq) AS lo, max(seq) AS hi, min(now) AS now FROM s
\gset
WITH mv AS (DELETE FROM pgmodel.deliveries d WHERE d.id = ANY(ARRAY(SELECT (seq<<16)+k FROM generate_series(:lo::bigint, :hi::bigint) seq, generate_series(0,4) k)) AND claim_token = 7 RETURNING *),
lg AS (INSERT INTO pgmodel.delivery_log (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, a1_at, a1_us, a1_code, a1_error, a1_response) SELECT id, event_seq, event_id, destination, 'delivered', 1, 0, created_at, :now, :now, 1000, 200, '', '\x'::bytea FROM mv)
INSERT INTO pgmodel.pending_counts (destination, shard, n) SELECT destination, :client_id, -count(*) FROM mv GROUP BY destination ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n;
WITH mv AS (DELETE FROM pgmodel.deliveries d WHERE d.id = ANY(ARRAY(SELECT (seq<<16)+k FROM generate_series(:lo::bigint, :hi::bigint) seq, generate_series(5,9) k)) AND claim_token = 7 RETURNING *),
lg AS (INSERT INTO pgmodel.delivery_log (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, a1_at, a1_us, a1_code, a1_error, a1_response) SELECT id, event_seq, event_id, destination, 'delivered', 1, 0, created_at, :now, :now, 1000, 200, '', '\x'::bytea FROM mv)
INSERT INTO pgmodel.pending_counts (destination, shard, n) SELECT destination, :client_id, -count(*) FROM mv GROUP BY destination ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n;
