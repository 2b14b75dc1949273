package server

import (
	"sync"
	"sync/atomic"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server/payload"
)

// Records held for their schema (deliver=json). A record framed with a schema id the payload Set does not
// know yet is not decoded on the shared reader: the Set fetches the id on a goroutine of its own and answers
// *payload.Pending at once. The record is then held, and so is every later record of its topic-partition,
// until the id is known (the record goes as JSON) or given up at the hold bound (--schema-registry-hold; it
// goes unchanged, counted and logged). Other partitions and the reader itself never wait.
//
// Why the whole partition and not the record alone: MQTT subscribers rely on per-topic order, which is Kafka
// partition order here; and the reader's position (readPos) stays "fanned out up to here", so everything that
// builds on it is unchanged: a persistent session's saved position does not pass a held record (a crash or a
// hand-over replays it), a resume catches up to it, a shared subscription starts from it. The price is that
// the partition's other records wait with it, at most the hold bound once per unknown id.
//
// Memory: a partition holds at most maxHeld records; past that the oldest goes unchanged (counted, logged).
//
// Locks: heldMu, then matchMu (fanOut) — a held partition is released in order under heldMu, so the reader
// cannot fan out a newer record of it meanwhile. Only the reader creates a partition's entry; the releaser
// deletes it once it has fanned out the last record.

const maxHeld = 10000

type heldRecs struct {
	mu    sync.Mutex
	parts map[tp]*heldPart
	held  atomic.Int32  // len(parts), lowered only once a partition's last record is fanned out
	now   atomic.Int64  // records held now
	total atomic.Uint64 // records ever held
	lost  atomic.Uint64 // held records released unchanged because the partition held too many

	retained map[<-chan struct{}][]*kafkamux.Message // retained messages stored unchanged while their id is fetched
}

type heldPart struct {
	recs []heldRec
}

type heldRec struct {
	off  int64
	m    *kafkamux.Message
	skip bool // misrouted: only moves the reader's position (deliverRecord)
}

// admit decides what happens to record off of k on the reader: it returns the record to fan out now (m
// itself, or its JSON), or false when it is held. Runs on the shared reader's goroutine (the only one that
// hands on k's records); takes heldMu only while some partition is held.
func (srv *Server) admit(k tp, off int64, m *kafkamux.Message, skip bool) (*kafkamux.Message, bool) {
	h := &srv.held
	if h.held.Load() > 0 { // some partition is held: maybe k
		h.mu.Lock()
		if p := h.parts[k]; p != nil {
			if !skip && !m.Tombstone {
				srv.cfg.payload.Prefetch(m.Topic, m.Payload) // its own id, if unknown, is fetched meanwhile
			}
			p.recs = append(p.recs, heldRec{off: off, m: m, skip: skip})
			h.now.Add(1)
			h.total.Add(1)
			if len(p.recs) > maxHeld {
				srv.releaseHeldLocked(k, true)
			}
			h.mu.Unlock()
			return nil, false
		}
		h.mu.Unlock()
	}
	// k is not held, and only this goroutine can make it so: no releaser fans out k's records now.
	if skip {
		return m, true
	}
	out, pending := srv.deliverAsJSON(m)
	if pending == nil {
		return out, true
	}
	h.mu.Lock()
	if h.parts == nil {
		h.parts = make(map[tp]*heldPart)
	}
	h.parts[k] = &heldPart{recs: []heldRec{{off: off, m: m}}}
	h.held.Add(1)
	h.now.Add(1)
	h.total.Add(1)
	h.mu.Unlock()
	srv.warn("record held: its schema id is being fetched from the schema registry", "topic", m.Topic, "err", pending)
	go srv.awaitHeld(k, pending.Done)
	return nil, false
}

// awaitHeld releases k's held records each time the schema they wait for is known or given up, until none
// is left. Runs on a goroutine of its own.
func (srv *Server) awaitHeld(k tp, done <-chan struct{}) {
	for done != nil {
		<-done // closes at the latest at the hold bound, or when the payload Set closes
		srv.held.mu.Lock()
		done = srv.releaseHeldLocked(k, false)
		srv.held.mu.Unlock()
	}
}

// releaseHeldLocked fans out k's held records in order until one still waits for its schema, and returns
// what that one waits on; nil once none is left (k is no longer held). With force the first record goes
// even if it waits (unchanged). heldMu is held.
func (srv *Server) releaseHeldLocked(k tp, force bool) <-chan struct{} {
	h := &srv.held
	p := h.parts[k]
	for p != nil && len(p.recs) > 0 {
		r := p.recs[0]
		m := r.m
		if !r.skip {
			var pending *payload.Pending
			if m, pending = srv.deliverAsJSON(r.m); pending != nil {
				if !force {
					return pending.Done
				}
				h.lost.Add(1)
				srv.warn("held record delivered unchanged: its partition holds too many records", "topic", r.m.Topic, "held", len(p.recs))
			}
		}
		force = false
		p.recs[0] = heldRec{}
		p.recs = p.recs[1:]
		h.now.Add(-1)
		srv.fanOut(k, r.off, m, r.skip)
	}
	if p != nil {
		delete(h.parts, k)
		h.held.Add(-1) // after the last fan-out: the reader that sees 0 cannot overtake it
	}
	return nil
}

// deliverAsJSONWait is deliverAsJSON for goroutines that may wait (a session's replay, a shared
// subscription's group reader): while the record's schema id is fetched it waits, at most the hold bound.
func (srv *Server) deliverAsJSONWait(m *kafkamux.Message) *kafkamux.Message {
	for {
		out, pending := srv.deliverAsJSON(m)
		if pending == nil {
			return out
		}
		<-pending.Done
	}
}

// retainedAsJSON returns the retained message to store for m. While m's schema id is fetched, m is stored as
// it is and replaced by its JSON once known, if it is still the topic's retained message: one goroutine per id
// being fetched, however many retained messages wait for it (a retained topic read at start may hold many).
// Runs on the retained reader's goroutine; does not wait.
func (srv *Server) retainedAsJSON(m *kafkamux.Message) *kafkamux.Message {
	out, pending := srv.deliverAsJSON(m)
	if pending == nil {
		return out
	}
	w := &srv.held
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.retained == nil {
		w.retained = make(map[<-chan struct{}][]*kafkamux.Message)
	}
	if _, ok := w.retained[pending.Done]; !ok {
		go srv.awaitRetained(pending.Done)
	}
	w.retained[pending.Done] = append(w.retained[pending.Done], m)
	return m
}

// awaitRetained replaces the retained messages that waited for done by their JSON, if they are still their
// topics' retained messages. Runs on a goroutine of its own.
func (srv *Server) awaitRetained(done <-chan struct{}) {
	<-done
	w := &srv.held
	w.mu.Lock()
	msgs := w.retained[done]
	delete(w.retained, done)
	w.mu.Unlock()
	for _, m := range msgs {
		if js := srv.deliverAsJSONWait(m); js != m {
			srv.retained.Replace(m, js)
		}
	}
}

// PayloadHeld returns the records held for their schema now, ever, and released unchanged because their
// partition held too many (see contract_hold.go).
func (srv *Server) PayloadHeld() (now int64, total, lost uint64) {
	return srv.held.now.Load(), srv.held.total.Load(), srv.held.lost.Load()
}
