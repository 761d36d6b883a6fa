//go:build race

package dispatch

// raceScale shrinks the heaviest store-bound tests under the race detector, which slows the pure-Go SQLite
// engine about tenfold; the full size runs in every build without -race (make bench, go test).
const raceScale = 5
