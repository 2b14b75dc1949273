package server

import (
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/sessions"
)

// Read your writes (docs/sessions.md, "Consistency"; server/sessions, consistency.go): a CONNECT decides on
// the sessions index just before its own owner record, read back.

// connectSession finds the client's session once the sessions partition has been read up to the CONNECT's own
// owner record: on this instance, in the sessions topic, or new. If another instance holds the client, the
// CONNACK waits until that instance has handed the session over, or until the hand-off times out. The
// connection reads no packet meanwhile; the loop is never blocked. Runs on the loop.
func (c *conn) connectSession(pc *pendingConnect) error {
	srv := c.l.srv
	c.phase = phaseLoading // no packet is read until the session is here
	// Marked (sessions/conns.go): a session that may be handed over, or resumed from; and a connection with a
	// will, which its marker carries until a claim of its end is written ("Owed wills"), whatever its session.
	c.marked = pc.expiry > 0 || !pc.clean || c.will != nil
	srv.addDeciding(pc.id, c) // until answered: a newer CONNECT's record supersedes it (newest.go)
	srv.store.AwaitOwnRecord(pc.id, c.epoch, srv.cfg.sessionsWait, func(prev *sessions.Stored, err error) {
		if err != nil {
			c.runOnLoop(func() { c.connectUnavailable(pc, err) })
			return
		}
		srv.decideConnect(c, pc, prev)
	})
	if c.marked {
		var will *sessions.WillRec // owed until the connection's end is claimed (sessions/conns.go)
		if c.will != nil {
			will = newWillRec(c.epoch, c.will)
			if pc.expiry == 0 {
				// The session ends with the connection, so the will is due when it ends [MQTT-3.1.3-9]: the
				// marker says so to whoever claims it for a dead holder (an expiry of 0 cannot be raised later
				// [MQTT-3.14.2-2]).
				will.Delay = 0
			}
		}
		srv.store.MarkConn(pc.id, c.epoch, will) // before the owner record: a trace compaction keeps
	}
	// Every instance reads it: the takeover signal, and this CONNECT's fence.
	srv.store.WriteOwnRecord(pc.id, &sessions.OwnerRec{V: sessionkey.Version, Instance: srv.store.Instance, Epoch: c.epoch,
		Connected: true, At: time.Now().UnixMilli(), Expiry: pc.expiry})
	return nil
}

// decideConnect takes the CONNECT's decision on prev, the sessions index just before its own owner record.
// Runs on the reader goroutine; must not block.
func (srv *Server) decideConnect(c *conn, pc *pendingConnect, prev *sessions.Stored) {
	o := prev.Owner
	if o != nil && o.Connected && o.Epoch > c.epoch {
		// A newer CONNECT of the client came first in the log: it wins, this one is refused (newest.go); its
		// marker's tombstone, when it closes, stops a CONNECT waiting for it.
		c.runOnLoop(func() { c.refuseSuperseded(pc.id, o.Epoch) })
		return
	}
	srv.regMu.Lock()
	srv.supersedeLocked(pc.id, c.epoch) // an older CONNECT of the client still deciding here is refused (newest.go)
	_, local := srv.sessions[pc.id]
	deciding := o != nil && o.Connected && o.Instance == srv.store.Instance && srv.decidingLocked(pc.id, o.Epoch)
	srv.regMu.Unlock()
	d := srv.store.Decide(prev, c.epoch, local, deciding)
	if srv.debugOn() { // what each decision saw: the trail of a window (docs/sessions.md, "Compaction")
		var de int64
		if prev.Deliv != nil {
			de = prev.Deliv.Epoch
		}
		srv.debug("deciding a CONNECT", "client", pc.id, "epoch", c.epoch, "owner_epoch", sessions.EpochOf(o),
			"owner_connected", o != nil && o.Connected, "delivery_epoch", de, "marked_epoch", d.Marked, "local", local,
			"wait", d.From != 0)
	}
	if d.From != 0 {
		held := d.Held
		if !held {
			srv.debug("sessions view lacks the owner record of a connection its delivery record or marker names; waiting for a hand-over",
				"client", pc.id, "from_epoch", d.From, "owner_epoch", sessions.EpochOf(o))
		}
		// Registered here, on the reader goroutine, before the reader can hand on the hand-over's record.
		// A clean start waits too: the previous instance's last writes (a SUBSCRIBE acknowledged just before
		// the client moved) come before its hand-over record, so the tombstones of this clean start come
		// after them and no discarded subscription is resurrected by a late write.
		srv.store.AwaitHandoff(pc.id, c.epoch, d.From, srv.cfg.handoffTimeout, func(snap *sessions.Stored) {
			c.runOnLoop(func() {
				if c.closed || c.phase != phaseLoading {
					return
				}
				// No hand-over and no end of o in time (wills.go). A tombstone of o's marker is an end: its holder
				// wrote it after o's end record, which decided the will, and which compaction can remove before
				// this reader gets there (a session that ends with its connection tombstones the owner key next).
				if held && (snap.Deliv == nil || snap.Deliv.Epoch != c.epoch) && snap.Ended[0] < o.Epoch && snap.ConnEnded < o.Epoch {
					srv.claimMissedWill(pc.id, o, prev)
				}
				c.completeConnect(pc, prev, snap)
			})
		})
		return
	}
	c.runOnLoop(func() {
		if !c.closed && c.phase == phaseLoading {
			c.completeConnect(pc, prev, prev)
		}
	})
}

// completeConnect writes or cancels the will, attaches the session and answers CONNACK, then reads on. prev
// is the view the decision was taken on, snap the session to resume from. Runs on the loop.
func (c *conn) completeConnect(pc *pendingConnect, prev, snap *sessions.Stored) {
	srv := c.l.srv
	if newer := srv.supersededBy(pc.id, c); newer != 0 {
		c.refuseSuperseded(pc.id, newer) // [MQTT-3.1.4-3] the newest CONNECT wins (newest.go)
		return
	}
	if cl := srv.store.DueBefore(pc.id, prev, c.epoch); cl != nil {
		srv.claim(*cl) // a delayed will due before this CONNECT is published, not cancelled [MQTT-3.1.3-9]
	}
	switch {
	case c.will != nil:
		pc.will = newWillRec(c.epoch, c.will) // written by finishConnect, which holds the CONNACK for it
	case prev.Will != nil:
		srv.store.Put(sessionkey.Will, pc.id, nil) // an earlier connection's will is cancelled by this one [MQTT-3.1.3-9]
	}
	srv.store.UnmarkOlder(pc.id, c.epoch, prev, snap) // the client's earlier connections are over (sessions/conns.go)
	c.finishConnect(pc, snap)
	c.service()
}

// connectUnavailable answers a CONNECT whose decision could not be taken on a complete view of the sessions
// topic in time: 0x88 Server Unavailable, v3 return code 3. Runs on the loop.
func (c *conn) connectUnavailable(pc *pendingConnect, err error) {
	if c.closed || c.phase != phaseLoading {
		return
	}
	srv := c.l.srv
	srv.warn("refusing CONNECT: the client's sessions partition could not be read in time", "err", err,
		"wait", srv.cfg.sessionsWait)
	c.refuseConnect(pc.version, mqttcodec.ServerUnavailable, "")
}
