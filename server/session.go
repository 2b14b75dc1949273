package server

import (
	"sync"
	"time"

	"github.com/ferrymq/ferry/offload"
)

// delivery is one message waiting to be sent to a session, with the options of the matching subscriptions
// already folded together. Values (not pointers) live in the session's queue, so queueing allocates nothing.
type delivery struct {
	msg    *offload.Message // shared, read-only
	qos    byte             // min(published, granted)
	retain bool             // RETAIN flag to send
	subIDs []uint32         // subscription identifiers of the matching subscriptions (v5)
}

// outState is the progress of one outbound QoS 1/2 message.
type outState uint8

const (
	outPublished outState = iota // PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2)
	outReleased                  // QoS 2: PUBREL sent, waiting for PUBCOMP
	outDone                      // acknowledged; removed lazily from the head of the list
)

type outFlight struct {
	id    uint16
	state outState
	d     delivery
}

// session is the MQTT session of one client id. It outlives its connection when the client asked for a
// persistent session. mu guards every field below it; it is held briefly, never across blocking calls, and
// is taken after the registry lock when both are needed (see LOCKS.md).
type session struct {
	id string

	mu         sync.Mutex
	c          *conn              // attached connection, nil while offline
	subs       map[string]subOpts // filter → options; the trie holds the same entries
	queue      ring               // deliveries not yet sent
	inflight   []outFlight        // outbound QoS>0 in send order
	inUse      map[uint16]struct{}
	nextID     uint16
	qos2In     map[uint16]struct{} // inbound QoS 2 ids with PUBREC sent, waiting for PUBREL
	expiry     uint32              // seconds the session outlives its connection; 0 = ends with it
	offlineAt  time.Time           // when the last connection ended
	dropped    uint64              // QoS 0 deliveries dropped because the queue was full
	overflowed bool                // a QoS>0 delivery found the queue full while connected
	ended      bool                // removed from the registry; nothing may be queued any more

	expireTimer *time.Timer // runs while offline with a finite expiry
	willTimer   *time.Timer // runs while a delayed will waits

	// matchGen and matchIdx are scratch for folding several matching subscriptions into one delivery; only
	// the goroutine holding Server.matchMu touches them.
	matchGen uint64
	matchIdx int
}

// enqueue adds d to the session's queue. It runs on a Kafka reader goroutine and must not block. It returns the
// connection to wake, if any.
func (s *session) enqueue(d delivery, limit int) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil
	}
	if s.queue.len() >= limit {
		if d.qos == 0 {
			s.dropped++
			return nil
		}
		if s.c != nil {
			// The client does not keep up at QoS>0; it is disconnected with 0x97 rather than losing messages
			// it was promised. The session keeps what is queued.
			s.overflowed = true
			return s.c
		}
		s.dropped++
		return nil
	}
	s.queue.push(d)
	return s.c
}

// allocID returns a free outbound packet id. s.mu is held.
func (s *session) allocID() uint16 {
	if s.inUse == nil {
		s.inUse = make(map[uint16]struct{})
	}
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, busy := s.inUse[s.nextID]; !busy {
			s.inUse[s.nextID] = struct{}{}
			return s.nextID
		}
	}
}

// ack marks the in-flight message id as having reached want→next and reports whether it was found in the
// expected state. s.mu is held.
func (s *session) ack(id uint16, want, next outState) bool {
	for i := range s.inflight {
		f := &s.inflight[i]
		if f.id == id && f.state == want {
			f.state = next
			if next == outDone {
				delete(s.inUse, id)
				f.d = delivery{}
				s.compactInflight()
			}
			return true
		}
	}
	return false
}

// compactInflight drops acknowledged entries from the head of the in-flight list. s.mu is held.
func (s *session) compactInflight() {
	n := 0
	for n < len(s.inflight) && s.inflight[n].state == outDone {
		n++
	}
	if n == 0 {
		return
	}
	if n == len(s.inflight) {
		s.inflight = s.inflight[:0]
		return
	}
	// Acks that arrive out of order leave done entries behind the head; drop them too when the list is
	// compacted, keeping send order.
	k := 0
	for _, f := range s.inflight[n:] {
		if f.state != outDone {
			s.inflight[k] = f
			k++
		}
	}
	clear(s.inflight[k:])
	s.inflight = s.inflight[:k]
}

// pendingOut counts outbound messages still waiting for the client. s.mu is held.
func (s *session) pendingOut() int {
	n := 0
	for i := range s.inflight {
		if s.inflight[i].state != outDone {
			n++
		}
	}
	return n
}

// ring is a growable FIFO of deliveries.
type ring struct {
	buf        []delivery
	head, size int
}

func (r *ring) len() int { return r.size }

func (r *ring) push(d delivery) {
	if r.size == len(r.buf) {
		n := 2 * len(r.buf)
		if n == 0 {
			n = 4
		}
		nb := make([]delivery, n)
		for i := 0; i < r.size; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = d
	r.size++
}

func (r *ring) front() *delivery { return &r.buf[r.head] }

func (r *ring) pop() {
	r.buf[r.head] = delivery{}
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	if r.size == 0 {
		r.head = 0
		if len(r.buf) > 64 {
			r.buf = nil // give back a burst's memory
		}
	}
}

func (r *ring) clear() {
	for r.size > 0 {
		r.pop()
	}
	r.buf = nil
}
