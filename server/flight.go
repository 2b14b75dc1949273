package server

import "time"

// flight is a session's packet-id state: outbound QoS 1/2 messages in send order until the client completes
// them, and inbound QoS 2 ids waiting for PUBREL. It is allocated on the session's first QoS 1/2 exchange, so
// an idle session does not carry it. Every operation is O(1) amortised: a client may allow 65,535 messages in
// flight. The session lock is held for all of them.
type flight struct {
	out     []outFlight       // from out[head] on: entries in send order; done ones are skipped
	head    int               // first entry not yet compacted away
	base    uint64            // sequence number of out[0]
	ids     map[uint16]uint64 // outbound packet id → sequence number, while in flight
	pending int               // entries not yet done
	owed    int64             // unix ns when pending last went from 0 to 1: since then the client owes an ack
	acks    uint64            // acknowledgements the client sent (PUBACK, PUBREC, PUBCOMP), for stuck()
	nextID  uint16            // last outbound packet id handed out
	qos2In  map[uint16]struct{}

	// Held QoS 2 steps of a persistent session (hold): a delivery record computed after an entry was held
	// holds it; once Kafka acknowledged that record the step goes on the wire (sendHeld).
	heldPub  int      // held entries in state outPublished: queued deliveries wait behind them, keeping the order
	heldRel  int      // held entries in state outReleased
	saveSeq  uint32   // delivery records computed while entries were held (persist.go)
	durable  uint32   // the newest of them Kafka acknowledged
	flushed  uint32   // durable when sendHeld last looked
	wantSave bool     // an entry was held after the last record was computed
	saving   bool     // a record for held entries is on its way (startHeldSave); one at a time per session
	lastNeed uint32   // need of the entry last held in state outPublished
	savedAt  [2]int64 // unix ns when the last two records for held entries were started, older first
	gapTimer bool     // a timer will notify the connection when the next record may start (startHeldSave)
	saveErr  error    // Kafka failed a record holding entries: the connection is closed, they stay in flight
}

// flights returns the session's packet-id state, allocating it. s.mu is held.
func (s *session) flights() *flight {
	if s.fl == nil {
		s.fl = &flight{ids: make(map[uint16]uint64)}
	}
	return s.fl
}

// add records a message sent with packet id id (from allocID, or re-sent with its original id) in state st.
// s.mu is held.
func (f *flight) add(id uint16, d delivery, st outState) {
	if f.pending == 0 {
		f.owed = time.Now().UnixNano()
	}
	f.ids[id] = f.base + uint64(len(f.out))
	f.out = append(f.out, outFlight{id: id, state: st, d: d})
	f.pending++
}

// allocID returns an outbound packet id not in flight. The caller must add it or free it. s.mu is held.
func (f *flight) allocID() uint16 {
	for {
		f.nextID++
		if f.nextID == 0 {
			f.nextID = 1
		}
		if _, busy := f.ids[f.nextID]; !busy {
			f.ids[f.nextID] = ^uint64(0) // reserved until add
			return f.nextID
		}
	}
}

// free gives back an id from allocID that was not used.
func (f *flight) free(id uint16) { delete(f.ids, id) }

// find returns the in-flight entry of id, or nil.
func (f *flight) find(id uint16) *outFlight {
	seq, ok := f.ids[id]
	if !ok || seq < f.base+uint64(f.head) || seq >= f.base+uint64(len(f.out)) {
		return nil
	}
	return &f.out[seq-f.base]
}

// ack moves the in-flight message id from state want to next and reports whether it was found in state want.
// A held entry is not on the wire: the client cannot acknowledge it.
func (f *flight) ack(id uint16, want, next outState) bool {
	e := f.find(id)
	if e == nil || e.state != want || e.held {
		return false
	}
	if e.d.share != nil && want == outPublished {
		e.d.share.Completed(e.d.topic, e.d.part, e.d.off) // PUBACK or PUBREC: the client has it (server/share)
	}
	f.acks++
	e.state = next
	if next == outDone {
		f.drop(e)
		f.compact()
	}
	return true
}

// drop marks an entry done and forgets its packet id and delivery; the caller compacts. s.mu is held.
func (f *flight) drop(e *outFlight) {
	f.unhold(e)
	delete(f.ids, e.id)
	e.state, e.d = outDone, delivery{}
	f.pending--
}

// compact drops done entries from the head, and moves the live ones down once the dead prefix is large.
func (f *flight) compact() {
	for f.head < len(f.out) && f.out[f.head].state == outDone {
		f.out[f.head] = outFlight{}
		f.head++
	}
	switch {
	case f.head == len(f.out):
		f.base += uint64(len(f.out))
		f.out, f.head = f.out[:0], 0
		if cap(f.out) > 1024 {
			f.out = nil // give back a burst's memory
		}
	case f.head >= 1024 && f.head >= len(f.out)/2:
		n := copy(f.out, f.out[f.head:])
		clear(f.out[n:])
		f.base += uint64(f.head)
		f.out, f.head = f.out[:n], 0
	}
}

// hold keeps entry e — a PUBLISH not yet sent, or a PUBREL — off the wire until the session's next delivery
// record, which holds it, is in Kafka: an instance that dies after sending it leaves a record from which the
// session resumes elsewhere with the same packet id and DUP, or with the PUBREL [MQTT-4.4.0-1]; without it the
// message would come again as a new one, or its PUBLISH after the receiver had released the id. s.mu is held.
func (f *flight) hold(e *outFlight) {
	if e.held {
		return
	}
	e.held, e.need = true, f.saveSeq+1
	if e.state == outPublished {
		f.heldPub++
		f.lastNeed = e.need
	} else {
		f.heldRel++
	}
	f.wantSave = true
}

// holdBehind keeps entry e — a QoS 1 PUBLISH queued behind a held one — off the wire until the PUBLISH last held
// goes: it needs no delivery record of its own, only its place in the order [MQTT-4.6.0-6], so the record that
// lets that one go lets it go too, and a session's queue moves into flight at once instead of one held
// PUBLISH per record. f.heldPub > 0 (so f.lastNeed is a record still to come); s.mu is held.
func (f *flight) holdBehind(e *outFlight) {
	e.held, e.need = true, f.lastNeed
	f.heldPub++
}

// unhold takes e off the held entries. s.mu is held.
func (f *flight) unhold(e *outFlight) {
	if !e.held {
		return
	}
	e.held = false
	if e.state == outPublished {
		f.heldPub--
	} else {
		f.heldRel--
	}
}

// each calls fn for every entry not done, in send order.
func (f *flight) each(fn func(*outFlight)) {
	for i := f.head; i < len(f.out); i++ {
		if f.out[i].state != outDone {
			fn(&f.out[i])
		}
	}
}

// pendingOut counts outbound messages still waiting for the client. s.mu is held.
func (s *session) pendingOut() int {
	if s.fl == nil {
		return 0
	}
	return s.fl.pending
}

// qos2InCount counts inbound QoS 2 messages waiting for PUBREL. s.mu is held.
func (s *session) qos2InCount() int {
	if s.fl == nil {
		return 0
	}
	return len(s.fl.qos2In)
}

// ack is flight.ack on a session that may have no flight state yet. s.mu is held.
func (s *session) ack(id uint16, want, next outState) bool {
	return s.fl != nil && s.fl.ack(id, want, next)
}

// hasState reports whether id is in flight in state st. s.mu is held.
func (s *session) hasState(id uint16, st outState) bool {
	if s.fl == nil {
		return false
	}
	e := s.fl.find(id)
	return e != nil && e.state == st
}
