//go:build !race

package dispatch

const raceScale = 1
