// Package storetest is the conformance suite every store driver passes: the contract of store.Store, run
// against the driver's real database. A driver is done when
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, storetest.Features{}, func(t *testing.T, now func() time.Time) storetest.Target {
//			dir := t.TempDir() // or a fresh schema/database, dropped with t.Cleanup
//			open := func(t *testing.T) store.Store {
//				s, err := mydriver.Open(dir, mydriver.Options{Now: now})
//				if err != nil {
//					t.Fatal(err)
//				}
//				return s
//			}
//			return storetest.Target{Store: open(t), Reopen: open}
//		})
//	}
//
// passes under go test -race. Each case opens a fresh, empty store; the suite closes what it opens. The
// driver must take every time it stamps (received_at, created_at, updated_at, a new delivery's due time)
// from now: the suite moves that clock by hand, so no case sleeps or depends on the wall clock. Its times
// are UTC and whole microseconds, so a driver that keeps microseconds compares equal.
//
// Cases (subtests, in this order): Append, Dedupe, Durable, Claim, Lease, Complete, ReleaseLeases, NextDue,
// SkipPending, Ordering, ListEvents, ListDeliveries, Retry, Replay, Prune, PendingCounts, Destinations,
// DestinationStates, Subscriptions, Concurrent, ConcurrentDedupe, PingClose. A case whose feature the
// driver lacks (Features) is skipped with the reason, never passed silently.
//
// What stays with the driver's own tests: its file or schema layout, migrations, its commit machinery,
// failure injection (a disk that stops taking writes) and crash tests (kill -9 while appending).
//
// storetest imports core/store and core/event only; it is imported only by tests.
//
// May import: core/event, core/store.
// Must not import: net/http.
package storetest
