-- A delivery that ends at its first attempt (the common case) keeps that attempt on its row of the log, as the
-- embedded store keeps it on its delivery row: one row written instead of two, and a quarter less WAL per
-- delivery. The attempts table holds every other attempt: those of deliveries that were tried again, and the
-- first attempt of a delivery while it is pending. A logged delivery moved back to the queue (Retry, Replay)
-- takes its first attempt into attempts with it.
ALTER TABLE delivery_log
  ADD COLUMN a1_at       bigint,
  ADD COLUMN a1_us       bigint,
  ADD COLUMN a1_code     integer,
  ADD COLUMN a1_error    text,
  ADD COLUMN a1_response bytea;
