-- Pending deliveries per destination, kept by the writes that change them, so PendingCounts (metrics scrapes)
-- never counts rows. Each group-commit writer adds its deltas to a row of its own (shard), so writers on all
-- nodes never wait on one another's counter row; the leader folds the shards into shard 0 now and then.
CREATE TABLE pending_counts (
  destination text NOT NULL,
  shard       bigint NOT NULL,
  n           bigint NOT NULL,
  PRIMARY KEY (destination, shard)
);
INSERT INTO pending_counts (destination, shard, n)
  SELECT destination, 0, count(*) FROM deliveries WHERE status = 'pending' GROUP BY destination;
