package destinations

import (
	"context"
	"time"
)

// Internals the external tests reach.

// SubscriptionName is subscriptionName.
var SubscriptionName = subscriptionName

// ExpireRuns ends the per-run subscriptions whose time is up now, as the sweeper does.
func (m *Manager) ExpireRuns(ctx context.Context) { m.runs.expire(ctx) }

// Built is how many API destinations the manager has built from stored records.
func (m *Manager) Built() int64 { return m.built.Load() }

// SetSyncGap makes Watch wait on gap between two Syncs. Call before Watch.
func (m *Manager) SetSyncGap(gap func(took time.Duration) <-chan time.Time) { m.syncGap = gap }
