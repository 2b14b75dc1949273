package server

import "github.com/ferrymq/ferry/mqttcodec"

// The newest CONNECT of a client wins [MQTT-3.1.4-3] (docs/sessions.md, "The newest CONNECT wins").
//
// A recorded CONNECT decides on the sessions topic (consistency.go) and may wait for the previous holder's
// hand-over before it is answered; meanwhile a newer CONNECT of the same client can arrive, here or on another
// instance, and its owner record lands after the older one's. "Newer" is by epoch, as everywhere in the
// sessions topic: the index keeps the owner record of the newest epoch. Before, the older CONNECT was accepted
// when its wait ended whatever had been read since: on this instance it took the newer connection over (the
// newer client got DISCONNECT 0x8E, the older CONNACK), across instances both stayed connected.
//
// So every recorded CONNECT is listed here until it is answered (srv.deciding), and every connected owner
// record read — and every CONNECT's own, when it decides — marks the older CONNECTs of its client listed
// here as superseded (conn.newer). A superseded CONNECT is refused when its own wait ends, never accepted;
// not at once, because a newer CONNECT waits for it (for its end, sessions.Store.Decide), and the older one's
// end must come after the hand-over the older one waited for, so that the newer one resumes from it. Marking
// and the registry lookup that decides a hand-over (ownerChanged) happen under the registry lock, as does the
// check that decides the refusal (completeConnect), so a CONNECT is either refused, or registered with its
// session before the newer record's reader looks for it — then it is accepted and taken over at once, as any
// connection: its CONNACK, then DISCONNECT 0x8E. The one exception, a newer record read between that check and
// attach (the same loop task, microseconds), is the same: accepted, then handed over (attach, lateTakeover).

// deciding registers c, a recorded CONNECT of client id, until it is answered. Runs on c's loop, before its
// owner record is written.
func (srv *Server) addDeciding(id string, c *conn) {
	c.connectID = id
	srv.regMu.Lock()
	srv.deciding[id] = append(srv.deciding[id], c)
	srv.regMu.Unlock()
}

// dropDecidingLocked removes c from the CONNECTs of client id being decided. srv.regMu is held.
func (srv *Server) dropDecidingLocked(id string, c *conn) {
	l := srv.deciding[id]
	for i, x := range l {
		if x == c {
			if len(l) == 1 {
				delete(srv.deciding, id)
				return
			}
			srv.deciding[id] = append(l[:i:i], l[i+1:]...)
			return
		}
	}
}

// supersedeLocked notes that a connection of client id at epoch is in the sessions topic: every CONNECT of
// the client being decided here with an older epoch is superseded. srv.regMu is held.
func (srv *Server) supersedeLocked(id string, epoch int64) {
	for _, x := range srv.deciding[id] {
		if x.epoch < epoch && x.newer < epoch {
			x.newer = epoch
		}
	}
}

// decidingLocked reports whether the CONNECT of client id at epoch is being decided here. srv.regMu is held.
func (srv *Server) decidingLocked(id string, epoch int64) bool {
	for _, x := range srv.deciding[id] {
		if x.epoch == epoch {
			return true
		}
	}
	return false
}

// supersededBy returns the epoch of a newer connection of client id than c, the CONNECT being answered: one
// read in the sessions topic while c was decided, or one this instance holds. 0: none, c may be accepted.
// Runs on c's loop.
func (srv *Server) supersededBy(id string, c *conn) int64 {
	srv.regMu.Lock()
	defer srv.regMu.Unlock()
	newer := c.newer
	if s := srv.sessions[id]; s != nil {
		s.mu.Lock()
		if s.c != nil && s.c.epoch > c.epoch {
			newer = max(newer, s.c.epoch)
		}
		s.mu.Unlock()
	}
	return newer
}

// refuseSuperseded answers CONNECT c of client id, superseded by a newer CONNECT of the client (epoch newer)
// before it was accepted. It is refused, never accepted: it takes nothing over and writes nothing but its
// marker's tombstone when it closes (endSession), which ends the wait of a newer CONNECT for it. A v5 client is
// told why with CONNACK 0x83 Implementation specific error ("the CONNECT is valid but is not accepted") and a
// reason string: 0x8E Session taken over is a DISCONNECT reason, not a CONNACK one [MQTT-3.2.2-8], and a
// DISCONNECT may only follow a successful CONNACK [MQTT-3.14.0-1] — which would announce a session this
// CONNECT never took. A v3 client's connection is closed without CONNACK: no v3 return code applies
// [MQTT-3.2.2-6 v3.1.1]. Runs on c's loop.
func (c *conn) refuseSuperseded(id string, newer int64) {
	if c.closed || c.phase != phaseLoading {
		return
	}
	srv := c.l.srv
	srv.debug("refusing CONNECT: a newer CONNECT of the client came meanwhile", "client", id, "epoch", c.epoch,
		"newer_epoch", newer)
	if c.version == mqttcodec.Version5 {
		c.refuseConnect(c.version, mqttcodec.ImplementationSpecificError, "a newer connection of this client id took the session over")
		return
	}
	srv.metrics.connectRefused(mqttcodec.ImplementationSpecificError)
	c.will = nil // never accepted: no will
	c.close()
}

// lateTakeover hands over sess, just attached to c, to a newer connection of the client (epoch newer) whose
// owner record was read between the CONNECT's check and its attach (newest.go, above): as ownerChanged would
// have, had it found the session. Runs on its own goroutine (a hand-over saves the delivery state, which takes
// matchMu: not on the loop).
func (srv *Server) lateTakeover(sess *session, c *conn, newer int64) {
	sess.mu.Lock()
	held := sess.c == c
	sess.mu.Unlock()
	if !held {
		return // gone meanwhile: ended, or taken over here
	}
	srv.debug("handing over a connection a newer CONNECT superseded while it attached", "client", sess.id, "epoch", c.epoch,
		"newer_epoch", newer)
	srv.metrics.takeovers.Add(1)
	srv.handOver(sess, c, newer)
}
