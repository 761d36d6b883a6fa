package store

import (
	"context"
	"log/slog"
	"time"
)

// RetentionOptions tune RunRetention. Zero fields take their defaults.
type RetentionOptions struct {
	// Every is how often a pruning round starts (default 1m).
	Every time.Duration
	// Batch is how many events one Prune call (one small write transaction) may delete (default 500).
	Batch int
	// Pause is the wait between batches of a round (default 10ms), so intake and completions get the writer
	// between them however large the backlog of old events.
	Pause time.Duration
	// Logger receives one info line per round that removed something (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock the cutoff is taken from (default time.Now).
	Now func() time.Time
	// OnPruned, if set, is called after each batch that deleted something, with how many events it deleted
	// (for metrics).
	OnPruned func(n int)
}

// Partitioned is implemented by a store that keeps events in time partitions (postgres: one a day). Its Prune
// drops a partition lying wholly before the cutoff at once (and may then return more than the limit), so
// RunRetention moves each round's cutoff back to the start of the partition it falls in: events go with their
// partition, up to one partition's span after the retention, instead of row by row behind it.
type Partitioned interface {
	PartitionFloor(t time.Time) time.Time
}

// RunRetention deletes events received more than retention ago, with their deliveries and attempts, until ctx
// ends. It prunes once at start (a node that was down for a while catches up at once) and then every
// opts.Every; a round prunes batch after batch, pausing between them, until a batch comes back short. A
// retention of zero (or less) keeps everything: RunRetention returns at once.
//
// On a shared store (Leader) only the leading node prunes.
//
// Events that still have a pending delivery are kept (Prune's contract); they go in a later round, once final.
func RunRetention(ctx context.Context, st Store, retention time.Duration, opts RetentionOptions) {
	if retention <= 0 {
		return
	}
	if opts.Every <= 0 {
		opts.Every = time.Minute
	}
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.Pause <= 0 {
		opts.Pause = 10 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tick := time.NewTicker(opts.Every)
	defer tick.Stop()
	lead, shared := st.(Leader)
	for {
		if !shared || lead.Leading() {
			pruneRound(ctx, st, retention, opts)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pruneRound runs one round of RunRetention.
func pruneRound(ctx context.Context, st Store, retention time.Duration, opts RetentionOptions) {
	// One cutoff per round: events arriving at the boundary while the round runs wait for the next one,
	// rather than keeping the round going forever.
	cutoff := opts.Now().Add(-retention)
	if p, ok := st.(Partitioned); ok {
		cutoff = p.PartitionFloor(cutoff)
	}
	total := 0
	defer func() {
		if total > 0 {
			opts.Logger.Info("retention: removed old events", "events", total, "received_before", cutoff.UTC().Format(time.RFC3339))
		}
	}()
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		n, err := st.Prune(ctx, cutoff, opts.Batch)
		if err != nil {
			if ctx.Err() == nil {
				opts.Logger.Warn("retention: prune failed; trying again next round", "err", err)
			}
			return
		}
		total += n
		if n > 0 && opts.OnPruned != nil {
			opts.OnPruned(n)
		}
		if n < opts.Batch {
			return
		}
		pause.Reset(opts.Pause)
		select {
		case <-ctx.Done():
			return
		case <-pause.C:
		}
	}
}
