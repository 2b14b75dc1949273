//go:build race

package kafkamux

// raceEnabled: the race detector is on. It changes what the heap holds (its own records of allocations), so
// heap sizes measured by a test do not hold.
const raceEnabled = true
