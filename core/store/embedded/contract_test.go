package embedded

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/core/store/storetest"
)

// TestContract runs the store conformance suite against a fresh embedded store in a temporary directory.
func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Features{Short: raceEnabled}, func(t *testing.T, now func() time.Time) storetest.Target {
		dir := t.TempDir()
		open := func(t *testing.T) store.Store {
			s, err := Open(dir, Options{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return storetest.Target{Store: open(t), Reopen: open}
	})
}

// TestReplayCaseCrossesBatches keeps the suite's Replay case meaningful here: its "over 500 in one call"
// check crosses more than one of this driver's replay transactions.
func TestReplayCaseCrossesBatches(t *testing.T) {
	if replayBatch > 500 {
		t.Fatalf("replayBatch is %d: the suite's Replay case (over 500 requeued in one call) no longer spans batches", replayBatch)
	}
}
