package server

import (
	"testing"
	"time"
)

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

// Lateness, what holding QoS 0 publishers looks at, is the shared reader's lag plus the longest delivery lag of
// a loop: a loop whose writes all wait behind a deep session queue makes the instance late, one without such a
// queue does not.
func TestLatenessAddsTheLongestDeliveryLag(t *testing.T) {
	const limit = int64(10 * time.Millisecond)
	srv := &Server{}
	srv.lag.limit = limit
	a, b := &loop{srv: srv}, &loop{srv: srv}
	a.dlag.limit, b.dlag.limit = limit, limit
	srv.order = []*loop{a, b}
	wall := time.Now().UnixNano()
	ms := int64(time.Millisecond)
	a.dlag.note(30*time.Millisecond, wall, readLagMinRecords) // a deep queue: a standing lag of 30 ms
	a.dlag.note(time.Millisecond, wall+int64(readLagWindow), 0)
	b.dlag.note(50*time.Millisecond, wall, 3) // late, but nothing queued behind: one slow client, not a queue
	b.dlag.note(time.Millisecond, wall+int64(readLagWindow), 0)
	now := wall + int64(readLagWindow) - wallEpoch
	if got := srv.lateness(now); got != 30*ms {
		t.Fatalf("lateness %v, want 30ms (loop a's delivery lag; b had no queue)", time.Duration(got))
	}
	HoldReadLag(srv, 5*time.Millisecond)
	if got := srv.lateness(now); got != 35*ms {
		t.Fatalf("lateness %v with the reader 5 ms behind, want 35ms", time.Duration(got))
	}
}

// Holding looks at a lag only while records keep coming: once every QoS 0 publisher is held, the records in
// flight run out, and the last window's lag, which nothing renews, must not hold them until it goes stale.
func TestLatenessForgetsALagOnceNoRecordComes(t *testing.T) {
	const limit = int64(10 * time.Millisecond)
	srv := &Server{}
	srv.lag.limit = limit
	a := &loop{srv: srv}
	a.dlag.limit = limit
	srv.order = []*loop{a}
	wall := time.Now().UnixNano()
	ms := int64(time.Millisecond)
	srv.lag.note(30*time.Millisecond, wall, readLagMinRecords) // the reader: a window with a standing lag of 30 ms
	srv.lag.note(time.Millisecond, wall+int64(readLagWindow), 0)
	a.dlag.note(20*time.Millisecond, wall, readLagMinRecords) // loop a: a standing delivery lag of 20 ms
	a.dlag.note(time.Millisecond, wall+int64(readLagWindow), 0)
	last := wall + int64(readLagWindow) - wallEpoch // when both noted their last record
	if got := srv.lateness(last + int64(readLagIdle)); got != 50*ms {
		t.Fatalf("lateness %v right after the last records, want 50ms", time.Duration(got))
	}
	later := last + int64(readLagIdle) + 1
	if got := srv.lateness(later); got != 0 {
		t.Fatalf("lateness %v after no record for %v, want 0", time.Duration(got), readLagIdle)
	}
	if got := srv.lag.age(later); got != 30*ms {
		t.Fatalf("the shedding's lag %v, want 30ms until it is stale (%v)", time.Duration(got), readLagStale)
	}
	// The reader notes a record again (inside its open window), less than readLagIdle after loop a's last write:
	// both lags count again.
	again := wall + 2*int64(readLagWindow) - ms
	srv.lag.note(40*time.Millisecond, again, readLagMinRecords)
	if got := srv.lateness(again - wallEpoch + ms); got != 50*ms {
		t.Fatalf("lateness %v once the reader noted a record again, want 50ms (the stored windows)", time.Duration(got))
	}
}
