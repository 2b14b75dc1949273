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
	waiting     []retainedWait // SUBSCRIBEs made before the index caught up; nil once it has
	waitDropped int            // requests refused because waiting was full
	since       time.Time      // when following began
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
func (srv *Server) onRetained(_ int32, _ int64, m *kafkamux.Message) {
	if m.Tombstone || len(m.Payload) == 0 || retained.Expired(m, time.Now()) {
		srv.retained.Remove(m.Topic, nil)
		return
	}
	retained.Detach(m)
	if srv.cfg.payload != nil {
		m = srv.held.Retained(m) // stored as subscribers get it (server/payload/hold.go)
	}
	srv.retained.Set(m)
}

// onRetainedCaughtUp runs once, on the reader goroutine (or in Start when the topic is empty), when the index
// holds every retained message that existed at Start: it marks the index ready and answers the SUBSCRIBEs that
// waited for it.
func (srv *Server) onRetainedCaughtUp() {
	r := &srv.retained
	r.waitMu.Lock()
	r.ready.Store(true)
	waits, dropped := r.waiting, r.waitDropped
	r.waiting = nil
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
	if !r.ready.Load() {
		r.waitMu.Lock()
		if !r.ready.Load() {
			if len(r.waiting) < maxRetainedWaits {
				r.waiting = append(r.waiting, retainedWait{sess: sess, filter: string(filter), granted: granted, subID: subID})
			} else {
				r.waitDropped++
			}
			r.waitMu.Unlock()
			return dst
		}
		r.waitMu.Unlock()
	}
	return r.Match(filter, dst)
}

// answerWaits queues the retained messages owed to subscriptions that waited for the index, and wakes their
// connections. Runs on the reader goroutine (or in Start); takes session locks, no retained lock.
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
