package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server/retained"
)

// Retained messages live in Kafka: the compacted retained topic (offload writes every RETAIN=1 PUBLISH to it,
// an empty payload as a tombstone) is the one source of truth. Each instance reads the whole topic from its
// start when it starts (FollowFrom), keeps following it, and answers SUBSCRIBEs from an in-memory index built
// from it, so a restart forgets nothing and a retained message published on one instance reaches subscribers
// of every other.
//
// Readiness: Start does not wait for the index to load. Until the reader has caught up with the end of the
// retained topic as it was at Start, the retained part of a SUBSCRIBE is held back: the SUBACK goes out at once
// and the subscription takes live messages at once, while the request (session, filter, granted QoS,
// subscription id) waits in a bounded list. When the index has caught up, the reader answers every waiting
// request from the now complete index, on its own goroutine, before it applies any later retained record.
// So no subscriber misses a retained message it is owed, Start stays fast, and a Kafka that is slow or
// unreachable at start delays retained messages instead of the listener. (Waiting in Start with a timeout
// would block the listener on Kafka and still need this path once the timeout expired.) The price: a live
// message on the topic may reach such a subscriber before the held-back retained one, and an unsubscribe
// made meanwhile does not cancel it.
//
// Only the retained topic feeds the index: a record on the messages topic with the retain header (from a
// Kafka producer) is delivered live but not retained; to retain from Kafka, write to the retained topic.
// Once loaded, the index trails Kafka by the reader's fetch latency, as live delivery does.
//
// Read your own writes: a client that has its PUBACK for a retained message and then subscribes on the same
// instance is owed that message [MQTT-3.3.1-6], even if the reader has not applied it yet. Kafka's
// acknowledgement of each retained record this instance writes notes its offset (offload's
// OnRetainedWritten, before the PUBACK); while the index has not applied every noted offset, the retained
// part of a SUBSCRIBE waits in the same list as during loading and is answered by the reader once it has, or
// after SessionsReadWait at the latest, from the index as it is then (a reader that cannot keep up must not
// hold subscriptions forever). Instances do not see each other's acknowledgements: across instances a
// retained message reaches a subscriber once that instance's reader has read it (docs/sessions.md).
//
// Known window: a retained PUBLISH is two records, one on each topic, read independently. If the reader
// applies the retained one before it reaches the messages one (they arrive in different fetches, usually a
// millisecond apart; up to FetchMaxWait while an instance starts, see kafkamux FollowFrom), a SUBSCRIBE that
// lands in between gets the message twice: from the index with RETAIN=1, then live. The old design fed the
// index from the messages topic and had no such window, but lost everything on restart.
//
// Index: package server/retained keeps the messages by topic and matches filters against them (its package
// comment gives their memory cost and how expired ones are dropped); deliver.go also drops expired messages
// at send time.
//
// Locks: the index's own lock (RW) guards the trie: the reader goroutine writes, loops read (and write to drop
// expired messages). waitMu guards the waiting list. The two are never held together, no other lock is held
// while either is taken, and answerWaits takes session locks (in enqueue) holding neither.

// retainedStore is the instance's index of retained messages.
type retainedStore struct {
	retained.Index // the messages (server/retained)

	ready       atomic.Bool
	waitMu      sync.Mutex
	waiting     []retainedWait // SUBSCRIBEs made before the index caught up or while it lacks own writes
	waitDropped int            // requests refused because waiting was full
	since       time.Time      // when following began

	// Own writes (waitMu): per partition of the retained topic, the offset of the last retained record of
	// this instance that Kafka acknowledged and the reader has not applied yet (an entry goes once it has),
	// and the offset of the last record the reader applied. ownBehind mirrors len(own) for the loops' fast
	// path; ownTimer bounds a wait for own writes.
	own       map[int32]int64
	applied   map[int32]int64
	ownBehind atomic.Int32
	ownTimer  *time.Timer
}

// maxRetainedWaits bounds the SUBSCRIBEs whose retained part waits for the index to load (each costs about 64
// bytes plus the filter). Past it the retained part of further ones is dropped, with a warning: a Kafka that
// cannot be read must not let clients that subscribe in a loop grow memory without bound.
const maxRetainedWaits = 1 << 16

// retainedSlowLoad is how long the index may take to load before a warning is logged.
const retainedSlowLoad = 30 * time.Second

// retainedWait is the retained part of one subscription, held until the index is complete.
type retainedWait struct {
	sess    *session
	filter  string
	granted byte
	subID   uint32
}

// retainedFollow says how Start follows the retained topic: from its start into the index, with
// onRetainedCaughtUp once the past is loaded. Start does not wait for that (see the file comment).
func (srv *Server) retainedFollow() kafkamux.FollowSpec {
	srv.retained.since = time.Now()
	time.AfterFunc(retainedSlowLoad, func() {
		if !srv.retained.ready.Load() {
			srv.cfg.log.Warn("retained messages still loading from Kafka; subscriptions wait for theirs",
				"loaded", srv.RetainedCount(), "after", retainedSlowLoad)
		}
	})
	return kafkamux.FollowSpec{Topic: srv.kafka.RetainedTopic(), Start: kafkamux.FromStart, Handler: srv.onRetained,
		CaughtUp: srv.onRetainedCaughtUp}
}

// RetainedReady reports whether the retained index has caught up with the retained topic as it was when the
// server started. Before that, SUBSCRIBEs get their SUBACK at once and their retained messages once it has.
func (srv *Server) RetainedReady() bool { return srv.retained.ready.Load() }

// RetainedCount returns the number of retained messages in the index, expired ones not yet removed included.
func (srv *Server) RetainedCount() int { return srv.retained.Count() }

// onRetained applies one record of the retained topic to the index: a tombstone or an empty payload clears the
// topic [MQTT-3.3.1-6] [MQTT-3.3.1-7], anything else replaces its retained message [MQTT-3.3.1-5]. Runs on the
// shared reader's goroutine and must not block. m is this handler's alone (nothing else reads the retained
// topic), so it is trimmed in place before it is stored.
func (srv *Server) onRetained(partition int32, offset int64, m *kafkamux.Message) {
	if m.Tombstone || len(m.Payload) == 0 || retained.Expired(m, time.Now()) {
		srv.retained.Remove(m.Topic, nil)
	} else {
		retained.Detach(m)
		if srv.cfg.payload != nil {
			m = srv.held.Retained(m) // stored as subscribers get it (server/payload/hold.go)
		}
		srv.retained.Set(m)
	}
	srv.answerWaits(srv.retained.applied1(partition, offset))
}

// retainedWritten notes a retained record of this instance that Kafka acknowledged (offload's
// OnRetainedWritten): until the reader has applied it, SUBSCRIBEs wait for their retained messages. Runs on a
// Kafka callback goroutine.
func (srv *Server) retainedWritten(partition int32, offset int64) {
	r := &srv.retained
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	if a, ok := r.applied[partition]; ok && a >= offset {
		return // the reader was first
	}
	if cur, ok := r.own[partition]; !ok || offset > cur {
		if r.own == nil {
			r.own = make(map[int32]int64)
		}
		r.own[partition] = offset
		r.ownBehind.Store(int32(len(r.own)))
	}
}

// applied1 records that the reader applied the record at offset of partition, and returns the waiting
// requests to answer now: those made after loading, once no own write is left unapplied. Reader goroutine.
func (r *retainedStore) applied1(partition int32, offset int64) []retainedWait {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	if r.applied == nil {
		r.applied = make(map[int32]int64)
	}
	r.applied[partition] = offset
	if own, ok := r.own[partition]; ok && offset >= own {
		delete(r.own, partition)
		r.ownBehind.Store(int32(len(r.own)))
	}
	if len(r.own) > 0 || len(r.waiting) == 0 || !r.ready.Load() {
		return nil
	}
	return r.takeWaits()
}

// takeWaits empties the waiting list and stops the own-writes timer. waitMu held.
func (r *retainedStore) takeWaits() []retainedWait {
	waits := r.waiting
	r.waiting = nil
	if r.ownTimer != nil {
		r.ownTimer.Stop()
		r.ownTimer = nil
	}
	return waits
}

// ownWaitExpired answers the requests that waited SessionsReadWait for own writes the reader has not applied,
// from the index as it is. Runs on the timer's goroutine.
func (srv *Server) ownWaitExpired() {
	r := &srv.retained
	r.waitMu.Lock()
	if !r.ready.Load() { // still loading: onRetainedCaughtUp answers them
		r.ownTimer = nil
		r.waitMu.Unlock()
		return
	}
	waits := r.takeWaits()
	r.waitMu.Unlock()
	if len(waits) > 0 {
		srv.cfg.log.Warn("retained messages this instance wrote are not read back in time; subscriptions get the retained messages read so far",
			"subscriptions", len(waits), "waited", srv.cfg.sessionsWait)
	}
	srv.answerWaits(waits)
}

// onRetainedCaughtUp runs once, on the reader goroutine (or in Start when the topic is empty), when the index
// holds every retained message that existed at Start: it marks the index ready and answers the SUBSCRIBEs that
// waited for it.
func (srv *Server) onRetainedCaughtUp() {
	r := &srv.retained
	r.waitMu.Lock()
	r.ready.Store(true)
	var waits []retainedWait
	if len(r.own) == 0 {
		waits = r.takeWaits()
	} else if r.ownTimer == nil { // own writes after Start not applied yet: they wait for those too
		r.ownTimer = time.AfterFunc(srv.cfg.sessionsWait, srv.ownWaitExpired)
	}
	dropped := r.waitDropped
	r.waitMu.Unlock()
	srv.cfg.log.Info("retained messages loaded from Kafka", "messages", srv.RetainedCount(),
		"took", time.Since(r.since).Round(time.Millisecond), "waiting_subscriptions", len(waits))
	if dropped > 0 {
		srv.cfg.log.Warn("retained messages were not sent to some subscriptions made while they loaded",
			"subscriptions", dropped)
	}
	srv.answerWaits(waits)
}

// retainedFor appends to dst the retained messages owed to a new subscription of sess to filter, or, while
// the index is still loading, holds the request and appends nothing (see the file comment). Runs on the loop;
// filter borrows from the read buffer.
func (srv *Server) retainedFor(sess *session, filter []byte, granted byte, subID uint32, dst []*kafkamux.Message) []*kafkamux.Message {
	r := &srv.retained
	if !r.ready.Load() || r.ownBehind.Load() > 0 {
		r.waitMu.Lock()
		if ready := r.ready.Load(); !ready || len(r.own) > 0 {
			if len(r.waiting) < maxRetainedWaits {
				r.waiting = append(r.waiting, retainedWait{sess: sess, filter: string(filter), granted: granted, subID: subID})
			} else {
				r.waitDropped++
			}
			if ready && r.ownTimer == nil {
				r.ownTimer = time.AfterFunc(srv.cfg.sessionsWait, srv.ownWaitExpired)
			}
			r.waitMu.Unlock()
			return dst
		}
		r.waitMu.Unlock()
	}
	return r.Match(filter, dst)
}

// answerWaits queues the retained messages owed to subscriptions that waited for the index, and wakes their
// connections. Runs on the reader goroutine (or in Start, or on ownWaitExpired's timer); takes session locks,
// no retained lock.
func (srv *Server) answerWaits(waits []retainedWait) {
	var msgs []*kafkamux.Message
	for i := range waits {
		w := &waits[i]
		msgs = srv.retained.Match(bytesOf(w.filter), msgs[:0])
		var subIDs []uint32
		if w.subID != 0 {
			subIDs = []uint32{w.subID} // shared by the deliveries below, which only read it
		}
		var wake *conn
		for _, m := range msgs {
			d := delivery{msg: m, qos: min(m.QoS, w.granted), retain: true, subIDs: subIDs}
			c, dropped := w.sess.enqueue(d, srv.cfg.sessionQueue)
			if dropped {
				srv.metrics.dropped(dropQueueFull)
			}
			if c != nil {
				wake = c
			}
		}
		if wake != nil {
			wake.l.notify(wake)
		}
		waits[i] = retainedWait{}
	}
}
