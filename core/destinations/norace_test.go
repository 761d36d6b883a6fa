//go:build !race

package destinations_test

const raceEnabled = false
