package server

import (
	"sync"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server/share"
)

// delivery is one message waiting to be sent to a session, with the options of the matching subscriptions
// already folded together. Values (not pointers) live in the session's queue, so queueing allocates nothing.
type delivery struct {
	msg    *kafkamux.Message // shared, read-only
	qos    byte              // min(published, granted)
	retain bool              // RETAIN flag to send
	topic  uint16            // Kafka topic of the record: 0 = the messages topic, else a routed one (routing.go); fits in padding
	part   int32             // partition of the record in that topic
	off    int64             // its offset; -1 for a retained message (not a position in the messages topic)
	// A replayed message the client had in flight before: re-sent with its packet id (and DUP), or only its
	// PUBREL when the client had already sent PUBREC [MQTT-4.4.0-1].
	resendID uint16
	released bool
	live     bool         // handed on by the shared reader as it arrived (not a replay): its write stage is measured (stages.go)
	subIDs   []uint32     // subscription identifiers of the matching subscriptions (v5)
	share    *share.Group // the share group it was delivered for (server/share); nil for a non-shared subscription
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
	// held: a persistent session's QoS 2 step not on the wire yet — its PUBLISH (state outPublished) or its
	// PUBREL (outReleased) waits until a delivery record holding it is in Kafka (flight.hold).
	held bool
	need uint32 // the delivery record that holds it: flight.saveSeq when it was held, plus one
	d    delivery
}

// session is the MQTT session of one client id. It outlives its connection when the client asked for a
// persistent session. mu guards every field below it; it is held briefly, never across blocking calls, and
// is taken after the registry lock when both are needed (see LOCKS.md).
type session struct {
	id string

	// saveMu orders the session's delivery records: one is computed and handed to Kafka at a time, so they
	// reach the log in the order they were computed (persist.go). Taken before matchMu and mu; never on a loop.
	saveMu sync.Mutex

	mu         sync.Mutex
	c          *conn              // attached connection, nil while offline
	subs       map[string]subOpts // filter → options; the trie holds the same entries
	queue      ring               // deliveries not yet sent
	fl         *flight            // packet-id state; nil until the session's first QoS 1/2 exchange
	expiry     uint32             // seconds the session outlives its connection; 0 = ends with it
	overflowed bool               // a QoS>0 delivery found the queue full while connected
	ackSeen    uint64             // fl.acks when stuck() last looked, and when it changed (unix ns)
	ackSeenAt  int64
	ended      bool       // removed from the registry; nothing may be queued any more
	resuming   bool       // replaying from stored offsets: live records skip it (guarded by matchMu too)
	ps         *persisted // Kafka-side state of a persistent session; nil for one that ends with its connection

	// matchGen and matchIdx are scratch for folding several matching subscriptions into one delivery; only
	// the goroutine holding Server.matchMu touches them.
	matchGen uint64
	matchIdx int32
}

// enqueue adds d to the session's queue. It runs on a Kafka reader goroutine and must not block. It returns the
// connection to wake, if any, and whether d was dropped because the queue is full.
func (s *session) enqueue(d delivery, limit int) (*conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, false
	}
	if s.queue.len() >= limit {
		if d.qos > 0 && s.c != nil {
			// A client that keeps acknowledging is slower than this burst, not gone: it may hold up to twice
			// the queue while it catches up (the reader hands on a whole fetch at once, faster than a loop
			// writes). One that owes an ack it has not sent for stuckAfter, or that falls twice the queue
			// behind, does not keep up at QoS>0; it is disconnected with 0x97 rather than losing messages it
			// was promised. The session keeps what is queued.
			if s.queue.len() < 2*limit && !s.stuck(time.Now().UnixNano()) {
				s.queue.push(d)
				return s.c, false
			}
			s.overflowed = true
			return s.c, true
		}
		return nil, true
	}
	s.queue.push(d)
	return s.c, false
}

// stuckAfter is how long a client may owe an acknowledgement without sending any before a full session queue
// counts as the client not reading any more (enqueue).
const stuckAfter = 3 * time.Second

// stuck reports whether the client owes acknowledgements and has sent none for stuckAfter: since its oldest
// owed message went out, and since it was last seen acknowledging. now is unix ns. s.mu is held.
func (s *session) stuck(now int64) bool {
	f := s.fl
	if f == nil || f.pending == 0 {
		return false // nothing owed: the queue waits for the loop, not for the client
	}
	if f.acks != s.ackSeen {
		s.ackSeen, s.ackSeenAt = f.acks, now
	}
	return now-max(f.owed, s.ackSeenAt) > int64(stuckAfter)
}

// ring is a growable FIFO of deliveries.
type ring struct {
	buf        []delivery
	head, size int32
}

func (r *ring) len() int { return int(r.size) }

func (r *ring) push(d delivery) {
	if int(r.size) == len(r.buf) {
		n := 2 * len(r.buf)
		if n == 0 {
			n = 4
		}
		nb := make([]delivery, n)
		for i := range r.size {
			nb[i] = r.buf[(int(r.head)+int(i))%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(int(r.head)+int(r.size))%len(r.buf)] = d
	r.size++
}

func (r *ring) front() *delivery { return &r.buf[r.head] }

// at returns the i-th queued delivery (0 = front).
func (r *ring) at(i int) *delivery { return &r.buf[(int(r.head)+i)%len(r.buf)] }

func (r *ring) pop() {
	r.buf[r.head] = delivery{}
	r.head = int32((int(r.head) + 1) % len(r.buf))
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
