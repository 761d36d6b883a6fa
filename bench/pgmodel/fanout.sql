-- A layout not built: the deliveries an event leases at birth are one row of fanouts (the destinations in an
-- array, a lease and a count of entries still open), and a delivery gets a row only for its outcome (in
-- delivery_log) or a retry (in deliveries). The same appends and completions as rows.sql: a batch that leaves
-- entries open counts them down (an update that changes no indexed column), the batch that closes the last one
-- deletes the row.
\set g 8
WITH s AS (SELECT nextval('pgmodel.events_seq_seq') AS seq, (extract(epoch from clock_timestamp())*1e9)::bigint AS now FROM generate_series(1,:g)),
ev AS (INSERT INTO pgmodel.events (seq, id, topic, time, received_at, data) SELECT seq, 'evt_'||seq, 'user.created', now, now, '\x7b22757365725f6964223a2231323334227d'::bytea FROM s),
fo AS (INSERT INTO pgmodel.fanouts (event_seq, node, token, lease_until, dests, remaining) SELECT seq, 1, 7, now + 30000000000, ARRAY['dst_0','dst_1','dst_2','dst_3','dst_4','dst_5','dst_6','dst_7','dst_8','dst_9'], 10 FROM s),
cnt AS (INSERT INTO pgmodel.pending_counts (destination, shard, n) SELECT 'dst_'||k, :client_id, :g FROM generate_series(0,9) k ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n)
SELECT min(seq) AS lo, max(seq) AS hi, min(now) AS now FROM s
\gset
WITH f AS (UPDATE pgmodel.fanouts f SET remaining = remaining - 5 WHERE f.event_seq BETWEEN :lo AND :hi AND f.token = 7 AND f.remaining > 5 RETURNING event_seq, dests),
u AS (SELECT f.event_seq AS seq, k, f.dests[k+1] AS destination FROM f, generate_series(0,4) k),
lg AS (INSERT INTO pgmodel.delivery_log (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, a1_at, a1_us, a1_code, a1_error, a1_response) SELECT (seq<<16)+k, seq, 'evt_'||seq, destination, 'delivered', 1, 0, :now, :now, :now, 1000, 200, '', '\x'::bytea FROM u)
INSERT INTO pgmodel.pending_counts (destination, shard, n) SELECT destination, :client_id, -count(*) FROM u GROUP BY destination ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n;
WITH f AS (DELETE FROM pgmodel.fanouts f WHERE f.event_seq BETWEEN :lo AND :hi AND f.token = 7 AND f.remaining = 5 RETURNING event_seq, dests),
u AS (SELECT f.event_seq AS seq, k, f.dests[k+1] AS destination FROM f, generate_series(5,9) k),
lg AS (INSERT INTO pgmodel.delivery_log (id, event_seq, event_id, destination, status, attempts, next_at, created_at, updated_at, a1_at, a1_us, a1_code, a1_error, a1_response) SELECT (seq<<16)+k, seq, 'evt_'||seq, destination, 'delivered', 1, 0, :now, :now, :now, 1000, 200, '', '\x'::bytea FROM u)
INSERT INTO pgmodel.pending_counts (destination, shard, n) SELECT destination, :client_id, -count(*) FROM u GROUP BY destination ON CONFLICT (destination, shard) DO UPDATE SET n = pending_counts.n + excluded.n;
