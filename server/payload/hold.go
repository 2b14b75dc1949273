package payload

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/ferrymq/ferry/kafkamux"
)

// Records held for their schema (deliver=json). A record framed with a schema id the Set does not know yet is
// not decoded on the reader: the Set fetches the id on a goroutine of its own and answers *Pending at once.
// The record is then held, and so is every later record of its topic-partition, until the id is known (the
// record goes as JSON) or given up at the hold bound (--schema-registry-hold; it goes unchanged, counted and
// logged). Other partitions and the reader itself never wait.
//
// Why the whole partition and not the record alone: MQTT subscribers rely on per-topic order, which is Kafka
// partition order here; and the reader's position (the server's readPos) stays "fanned out up to here", so
// everything that builds on it is unchanged: a persistent session's saved position does not pass a held
// record (a crash or a hand-over replays it), a resume catches up to it, a shared subscription starts from it.
// The price is that the partition's other records wait with it, at most the hold bound once per unknown id.
//
// Memory: a partition holds at most MaxHeld records; past that the oldest goes unchanged (counted, logged).
//
// Locks: Held.mu, then whatever Host.FanOut takes (the server's matchMu) — a held partition is released in
// order under Held.mu, so the reader cannot fan out a newer record of it meanwhile. Only the reader creates a
// partition's entry; the releaser deletes it once it has fanned out the last record.

// MaxHeld bounds the records one partition holds.
const MaxHeld = 10000

// Host is what a Held needs of the server: K is its key of a topic-partition.
type Host[K comparable] interface {
	// FanOut hands record off of k on to its subscribers (m as it is to be delivered), or only moves the
	// reader's position past it (skip). Called on the reader's goroutine, or on a releaser with Held.mu held.
	FanOut(k K, off int64, m *kafkamux.Message, skip bool)
	// ReplaceRetained stores m as the retained message of its topic if old still is.
	ReplaceRetained(old, m *kafkamux.Message)
	Warn(msg string, args ...any) // rate-limited
}

// Held turns records of deliver=json rules into JSON for their readers, holding the partitions whose next
// record waits for its schema id (see the comment above). Safe for concurrent use.
type Held[K comparable] struct {
	set  *Set
	host Host[K]

	mu    sync.Mutex
	parts map[K]*heldPart
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
	skip bool // only moves the reader's position (Host.FanOut)
}

// NewHeld returns the Held of set's deliver=json rules.
func NewHeld[K comparable](set *Set, host Host[K]) *Held[K] { return &Held[K]{set: set, host: host} }

// JSON returns the record to deliver for m: m itself, or, when m's topic has a deliver=json rule, a copy
// whose payload is the record's JSON (content type application/json, payload format UTF-8). m is shared with
// the recent-record cache and is not modified. A record that cannot be decoded is delivered unchanged,
// counted and logged. While m's schema id is fetched it returns m and the *Pending to wait on. Never waits;
// runs on a reader goroutine (shared, retained, a group's) or a replay's.
func (h *Held[K]) JSON(m *kafkamux.Message) (*kafkamux.Message, *Pending) {
	if m.Tombstone {
		return m, nil
	}
	js, err := h.set.DeliverJSON(m.Topic, m.Payload)
	var pending *Pending
	switch {
	case errors.Is(err, ErrNoRule):
		return m, nil
	case errors.As(err, &pending):
		return m, pending
	case err != nil:
		h.host.Warn("record delivered as it is: deliver=json cannot decode it", "topic", m.Topic, "err", err)
		return m, nil
	}
	cp := *m
	cp.Payload, cp.ContentType, cp.PayloadFormat, cp.HasPayloadFormat = js, "application/json", 1, true
	return &cp, nil
}

// JSONWait is JSON for goroutines that may wait (a session's replay, a shared subscription's group reader):
// while the record's schema id is fetched it waits, at most the hold bound.
func (h *Held[K]) JSONWait(m *kafkamux.Message) *kafkamux.Message {
	for {
		out, pending := h.JSON(m)
		if pending == nil {
			return out
		}
		<-pending.Done
	}
}

// Admit decides what happens to record off of k on the reader: it returns the record to fan out now (m
// itself, or its JSON), or false when it is held. Runs on the reader's goroutine (the only one that hands on
// k's records); takes Held.mu only while some partition is held.
func (h *Held[K]) Admit(k K, off int64, m *kafkamux.Message, skip bool) (*kafkamux.Message, bool) {
	if h.held.Load() > 0 { // some partition is held: maybe k
		h.mu.Lock()
		if p := h.parts[k]; p != nil {
			if !skip && !m.Tombstone {
				h.set.Prefetch(m.Topic, m.Payload) // its own id, if unknown, is fetched meanwhile
			}
			p.recs = append(p.recs, heldRec{off: off, m: m, skip: skip})
			h.now.Add(1)
			h.total.Add(1)
			if len(p.recs) > MaxHeld {
				h.releaseLocked(k, true)
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
	out, pending := h.JSON(m)
	if pending == nil {
		return out, true
	}
	h.mu.Lock()
	if h.parts == nil {
		h.parts = make(map[K]*heldPart)
	}
	h.parts[k] = &heldPart{recs: []heldRec{{off: off, m: m}}}
	h.held.Add(1)
	h.now.Add(1)
	h.total.Add(1)
	h.mu.Unlock()
	h.host.Warn("record held: its schema id is being fetched from the schema registry", "topic", m.Topic, "err", pending)
	go h.await(k, pending.Done)
	return nil, false
}

// await releases k's held records each time the schema they wait for is known or given up, until none is
// left. Runs on a goroutine of its own.
func (h *Held[K]) await(k K, done <-chan struct{}) {
	for done != nil {
		<-done // closes at the latest at the hold bound, or when the Set closes
		h.mu.Lock()
		done = h.releaseLocked(k, false)
		h.mu.Unlock()
	}
}

// releaseLocked fans out k's held records in order until one still waits for its schema, and returns what
// that one waits on; nil once none is left (k is no longer held). With force the first record goes even if it
// waits (unchanged). h.mu is held.
func (h *Held[K]) releaseLocked(k K, force bool) <-chan struct{} {
	p := h.parts[k]
	for p != nil && len(p.recs) > 0 {
		r := p.recs[0]
		m := r.m
		if !r.skip {
			var pending *Pending
			if m, pending = h.JSON(r.m); pending != nil {
				if !force {
					return pending.Done
				}
				h.lost.Add(1)
				h.host.Warn("held record delivered unchanged: its partition holds too many records", "topic", r.m.Topic, "held", len(p.recs))
			}
		}
		force = false
		p.recs[0] = heldRec{}
		p.recs = p.recs[1:]
		h.now.Add(-1)
		h.host.FanOut(k, r.off, m, r.skip)
	}
	if p != nil {
		delete(h.parts, k)
		h.held.Add(-1) // after the last fan-out: the reader that sees 0 cannot overtake it
	}
	return nil
}

// Retained returns the retained message to store for m. While m's schema id is fetched, m is stored as it is
// and replaced by its JSON once known (Host.ReplaceRetained), if it is still the topic's retained message: one
// goroutine per id being fetched, however many retained messages wait for it (a retained topic read at start
// may hold many). Runs on the retained reader's goroutine; does not wait.
func (h *Held[K]) Retained(m *kafkamux.Message) *kafkamux.Message {
	out, pending := h.JSON(m)
	if pending == nil {
		return out
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.retained == nil {
		h.retained = make(map[<-chan struct{}][]*kafkamux.Message)
	}
	if _, ok := h.retained[pending.Done]; !ok {
		go h.awaitRetained(pending.Done)
	}
	h.retained[pending.Done] = append(h.retained[pending.Done], m)
	return m
}

// awaitRetained replaces the retained messages that waited for done by their JSON, if they are still their
// topics' retained messages. Runs on a goroutine of its own.
func (h *Held[K]) awaitRetained(done <-chan struct{}) {
	<-done
	h.mu.Lock()
	msgs := h.retained[done]
	delete(h.retained, done)
	h.mu.Unlock()
	for _, m := range msgs {
		if js := h.JSONWait(m); js != m {
			h.host.ReplaceRetained(m, js)
		}
	}
}

// Stats returns the records held now, ever, and released unchanged because their partition held too many.
func (h *Held[K]) Stats() (now int64, total, lost uint64) {
	return h.now.Load(), h.total.Load(), h.lost.Load()
}
