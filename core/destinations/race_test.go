//go:build race

package destinations_test

// raceEnabled says the race detector runs: heavy tests shrink, and heap figures (its bookkeeping inflates
// them) are only logged.
const raceEnabled = true
