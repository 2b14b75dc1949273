//go:build race

package server_test

// raceEnabled: the race detector is on. Its sync.Pool drops a quarter of what is put back on purpose, so a
// pooled object is allocated again now and then: allocation counts do not hold.
const raceEnabled = true
