package server

import (
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/throttle"
)

// A flood of one kind of connection event logs at most eventBurst lines a second; the first line of the next
// second says how many were left out, and other kinds are not affected.
func TestEventLimiter(t *testing.T) {
	e := throttle.Limiter{Window: time.Second, Burst: eventBurst} // as New sets Server.events
	t0 := time.Unix(1000, 0)
	let := 0
	for i := 0; i < 500; i++ {
		if ok, _ := e.AllowAt("client connected", t0.Add(time.Duration(i)*time.Millisecond)); ok {
			let++
		}
	}
	if let != eventBurst {
		t.Fatalf("%d lines let through in one second, want %d", let, eventBurst)
	}
	if ok, _ := e.AllowAt("client disconnected", t0.Add(600*time.Millisecond)); !ok {
		t.Fatal("another kind of event was held back")
	}
	ok, n := e.AllowAt("client connected", t0.Add(1100*time.Millisecond))
	if !ok || n != 500-eventBurst {
		t.Fatalf("next second: allowed %v, suppressed_before %d, want true, %d", ok, n, 500-eventBurst)
	}
}
