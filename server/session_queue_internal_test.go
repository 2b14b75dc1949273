package server

import "testing"

// A full session queue disconnects a QoS 1/2 subscriber only when it is stuck or twice the queue behind: a
// burst one fetch hands on faster than the loop writes must not end a client that keeps acknowledging.
func TestSessionQueueBoundBySlownessNotByBurst(t *testing.T) {
	const limit = 10
	fill := func(t *testing.T, s *session, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, dropped := s.enqueue(delivery{qos: 1}, limit); dropped {
				t.Fatalf("delivery %d dropped", i+1)
			}
		}
	}

	t.Run("nothing owed: twice the queue, then 0x97", func(t *testing.T) {
		s := &session{c: &conn{}}
		fill(t, s, 2*limit)
		if _, dropped := s.enqueue(delivery{qos: 1}, limit); !dropped || !s.overflowed {
			t.Fatal("a session twice the queue behind was not marked to be disconnected")
		}
	})

	t.Run("owes an ack for longer than stuckAfter: 0x97 at the queue bound", func(t *testing.T) {
		s := &session{c: &conn{}}
		s.flights().add(1, delivery{qos: 1}, outPublished)
		s.fl.owed -= int64(stuckAfter) + 1
		fill(t, s, limit)
		if _, dropped := s.enqueue(delivery{qos: 1}, limit); !dropped || !s.overflowed {
			t.Fatal("a client that stopped acknowledging kept queueing past the bound")
		}
	})

	t.Run("acknowledged since: keeps queueing", func(t *testing.T) {
		s := &session{c: &conn{}}
		fl := s.flights()
		fl.add(1, delivery{qos: 1}, outPublished)
		fl.add(2, delivery{qos: 1}, outPublished)
		fl.owed -= int64(stuckAfter) + 1
		if !fl.ack(1, outPublished, outDone) {
			t.Fatal("ack not found")
		}
		fill(t, s, 2*limit)
		if s.overflowed {
			t.Fatal("a client that acknowledges was marked to be disconnected")
		}
	})

	t.Run("QoS 0 and offline sessions: dropped at the bound", func(t *testing.T) {
		s := &session{c: &conn{}}
		fill(t, s, limit)
		if _, dropped := s.enqueue(delivery{qos: 0}, limit); !dropped || s.overflowed {
			t.Fatal("a QoS 0 delivery past the bound was not dropped, or disconnected its client")
		}
		off := &session{}
		fill(t, off, limit)
		if c, dropped := off.enqueue(delivery{qos: 1}, limit); !dropped || c != nil {
			t.Fatal("an offline session queued past its bound")
		}
	})
}
