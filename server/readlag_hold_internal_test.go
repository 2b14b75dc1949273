package server

import "testing"

// A connection held before a QoS 0 PUBLISH has sent a whole packet Ferry has not read: keep-alive does not end
// it, however long ago its last packet was handled [MQTT-3.1.2-24]; it is checked again later.
func TestHeldConnectionNotTimedOut(t *testing.T) {
	const now = 1_000_000
	l := &loop{srv: &Server{}, now: now}
	l.wheel.init(now)
	c := &conn{l: l, phase: phaseConnected, keepAlive: 10, lastRead: now - 100, q0Held: true}
	c.checkTimeout()
	if c.closed {
		t.Fatal("a held connection was closed by keep-alive")
	}
	if c.wheelAt <= now {
		t.Fatalf("held connection rescheduled at %d, want after %d", c.wheelAt, now)
	}
}
