package server

import (
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Unrecorded connections (docs/sessions.md, "Unrecorded connections"). Every CONNECT writes an owner record
// "o:<id>" and reads it back (consistency.go, sessions/consistency.go): it is the signal that makes another instance disconnect the
// client's older connection [MQTT-3.1.4-3], and the fence of the CONNECT's decision. A CONNECT that asks for
// nothing to be kept — Clean Start (CleanSession) 1, no session expiry, no will — needs neither when its
// instance is the only one: there is no other instance to signal, and no state to decide on beyond what the
// instance holds itself. Such a connection is accepted on the loop at once, writes nothing to the sessions
// topic at its start or its end, and costs the embedded Kafka nothing.
//
// An instance is alone when, in a read of the whole sessions topic that started after its own heartbeat was
// stored, no other instance's heartbeat or owner record was read within deadAfter, and no such record has
// been read since. It stops being alone the moment the reader hands it any record of another instance (or a
// heartbeat of another process running with this instance's id, a misconfiguration that is logged), and
// when it could not read the topic for deadAfter (a lone instance cut off from Kafka cannot know who came).
// Why this keeps [MQTT-3.1.4-3] across instances:
//
//   - Two instances are never alone at once while both are alive: of two heartbeats, the one stored later is
//     followed by a read of the topic that finds the other (heartbeats come every heartbeatEvery, and
//     deadAfter is at least two of them). So of any two connections of one client on two instances, at least
//     one wrote its owner record.
//   - An instance that reads another instance's owner record of a client it holds on an unrecorded
//     connection disconnects that connection, whatever the epochs (ownerChanged): in log order the other
//     connection came last, as it would have if the unrecorded one had written its record. The reader
//     clears "alone" and looks the client up under the registry lock, and an unrecorded connection is
//     registered under the same lock only while "alone" is set: either the record's reader finds the
//     connection, or the connection was recorded.
//   - A client id this instance holds (on any connection) or whose records its index knows (a stored session,
//     a will, QoS 2 ids) is never connected unrecorded: its CONNECT takes the recorded path, which decides
//     takeovers, Session Present and the tombstones of a clean start on the sessions topic's log as before.
//
// What an unrecorded connection gives up: none of it is in Kafka, so if the instance dies, no other
// instance has anything to end for it — and nothing is owed (no will, no session).

// lone is an instance's view of whether it is alone. Its fields are atomics; alone is set and cleared
// under the server's regMu (see above).
type lone struct {
	alone     atomic.Bool
	until     atomic.Int64 // unix ns: alone no longer counts after it, unless a new read of the topic extends it
	foreignAt atomic.Int64 // unix ns when a record of another instance was last read
	hbStored  atomic.Int64 // unix ns when this instance's heartbeat was first stored; 0 = not yet
}

// noteForeign records that a record written by another instance was read: this instance is not alone. Runs on
// the reader goroutine before the record is acted on (ownerChanged).
func (srv *Server) noteForeign() {
	l := &srv.lone
	// Under regMu even when alone looks clear: a round of sessionsRead that checked foreignAt just before this
	// store may be about to set it (its check and set are one critical section, after or before this one).
	srv.regMu.Lock()
	l.foreignAt.Store(time.Now().UnixNano())
	l.alone.Store(false)
	srv.regMu.Unlock()
}

// sessionsRead runs after the sessions topic was read up to where it ended at start (unix ns, taken before
// the read began): if no other instance's record came within deadAfter before start, nor since, the instance
// is alone for deadAfter more. Runs on the processor goroutine.
func (srv *Server) sessionsRead(start int64) {
	l := &srv.lone
	dead := srv.cfg.deadAfter.Nanoseconds()
	hb := l.hbStored.Load()
	srv.regMu.Lock()
	if hb != 0 && hb < start && l.foreignAt.Load() < start-dead {
		l.until.Store(start + dead)
		l.alone.Store(true)
	}
	srv.regMu.Unlock()
}

// heartbeatStored runs on a Kafka callback goroutine when a heartbeat of this instance was stored. After the
// first, the topic is read once at once rather than at the processor's next round: an instance that starts
// into a reconnect storm is alone within a Kafka round trip, not a heartbeat interval.
func (srv *Server) heartbeatStored(err error) {
	if err != nil || !srv.lone.hbStored.CompareAndSwap(0, time.Now().UnixNano()) {
		return
	}
	go func() {
		start := time.Now().UnixNano()
		if srv.readSessionsUpTo(srv.runCtx) {
			srv.sessionsRead(start)
		}
	}()
}

// connectUnrecorded accepts pc at once, without an owner record, if it asks for nothing to be kept and this
// instance is alone and neither holds nor knows the client. It reports whether it did; if not, the caller
// takes the recorded path. Runs on the loop.
func (c *conn) connectUnrecorded(pc *pendingConnect) bool {
	srv := c.l.srv
	l := &srv.lone
	if !pc.clean || pc.expiry != 0 || c.will != nil || !l.alone.Load() || c.epoch >= l.until.Load() {
		return false
	}
	if _, known := srv.store.Lookup(pc.id); known {
		return false // a stored session, will or QoS 2 ids: the clean start is decided on the log
	}
	sess := &session{id: pc.id, c: c}
	srv.regMu.Lock()
	ok := l.alone.Load() && srv.sessions[pc.id] == nil
	if ok {
		c.unrecorded = true // read by ownerChanged after it takes regMu
		srv.sessions[pc.id] = sess
	}
	srv.regMu.Unlock()
	if !ok {
		return false
	}
	srv.metrics.unrecorded.Add(1)
	c.attached(sess)
	if srv.debugOn() {
		srv.debug("client connected", "client", pc.id, "remote", c.remoteAddr().String(), "version", pc.version,
			"session_present", false, "identity", c.certIdentity(), "recorded", false)
	}
	c.writeConnack(pc.version, false, mqttcodec.Success, &pc.props)
	return true
}
