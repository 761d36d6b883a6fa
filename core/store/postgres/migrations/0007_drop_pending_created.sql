-- Retention asks whether any delivery of a day is still pending before it drops the day. It asked by
-- created_at, through an index that every delivery paid for at its insert (one entry of six) and that served
-- nothing else. It now asks by the day's range of event seqs, through deliveries_event, which every delivery
-- already has.
DROP INDEX deliveries_pending_created;
