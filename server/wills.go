package server

import (
	"context"
	"errors"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/sessions"
)

// Wills are decided by the sessions topic's log (server/sessions, wills.go); this file writes a connection's
// claims and publishes the wills this instance won.

func newWillRec(epoch int64, w *willMsg) *sessions.WillRec {
	m := w.msg
	r := &sessions.WillRec{V: sessionkey.Version, Epoch: epoch, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		Delay: w.delay, ContentType: m.ContentType, ResponseTopic: m.ResponseTopic, Correlation: m.CorrelationData,
		Expiry: w.expiry}
	if m.HasPayloadFormat {
		pf := m.PayloadFormat
		r.PayloadFormat = &pf
	}
	for _, u := range m.UserProps {
		r.User = append(r.User, [2]string{u.Key, u.Value})
	}
	return r
}

// endConnection writes the end record of a connection: the claim that decides its will. A will due at once
// (now non-nil) is written as pending first (sessions.Store.ClaimEnd). Runs on the loop.
func (srv *Server) endConnection(id string, epoch int64, expiry uint32, willDue bool, now *sessions.WillRec) {
	srv.store.ClaimEnd(id, srv.store.EndRecord(epoch, expiry, willDue), now)
}

// claimTakenOverWill claims the end of connection c, whose session another connection took, when its will is
// due at once: a will of delay 0 (a new connection within the delay cancels a delayed one [MQTT-3.1.3-9]),
// unless the client sent DISCONNECT. MQTT 5 publishes it on a takeover (§3.1.4); a 3.1.1 connection's will is
// claimed only if its socket closed without DISCONNECT first (kicked false: it closed before the takeover
// reached its loop). The first end record of the epoch decides, as always, so a will is claimed by the holder
// and by a CONNECT that gave up waiting for it (claimMissedWill) at most once. Runs on c's loop.
func (c *conn) claimTakenOverWill(kicked bool) {
	w := c.will
	if w == nil || c.disconnect || w.delay != 0 || (kicked && c.version < mqttcodec.Version5) || c.sess == nil {
		return
	}
	c.will = nil // once
	sess := c.sess
	sess.mu.Lock()
	expiry := sess.expiry
	sess.mu.Unlock()
	c.l.srv.store.ClaimEnd(sess.id, c.l.srv.store.EndRecord(c.epoch, expiry, true), newWillRec(c.epoch, w))
}

// claimMissedWill runs on the loop of a CONNECT that stopped waiting for the instance holding the client's
// previous connection o to hand the session over (HandoffTimeout): that instance may be dead, and if so
// nobody ends o — the partition processor looks only at the newest connection. A will of delay 0 stored for o
// was due when o broke; it is claimed here with an end record of o's epoch, and published from this instance
// if the claim is the first (a holder that was only slow claims it too: claimTakenOverWill).
func (srv *Server) claimMissedWill(id string, o *sessions.OwnerRec, prev *sessions.Stored) {
	w := prev.Will
	if w == nil || w.Epoch != o.Epoch || w.Delay != 0 {
		return
	}
	srv.store.ClaimEnd(id, srv.store.EndRecord(o.Epoch, o.Expiry, true), w)
}

// connectionEnded runs on the reader goroutine for the first end record of an epoch and round. If this
// instance wrote it and a will is due, the will is published: at once if it was due at once (its pending
// record, wills_pending.go), else made due at once when its delay has passed, unless the client came back
// within it (claimDelayedWill).
func (srv *Server) connectionEnded(id string, end *sessions.OwnerRec) {
	if end.Instance != srv.store.Instance || !end.Will {
		return
	}
	if end.Now {
		srv.publishPendingOf(id, end)
		return
	}
	if due, w := srv.store.WillDueAt(id, end); w != nil {
		time.AfterFunc(time.Until(due), func() { srv.claimDelayedWill(id, end, w, due) })
	}
}

// claimDelayedWill makes delayed will w, which this instance's end record end won, due at once now that its
// delay (due) has passed, unless the client connected again within it (sessions.Store.DelayedClaim): a claim
// of the next round with the will as pending, published by whoever the log says won it — this instance, or a
// CONNECT of the client that came after the delay and claimed it too. The will is the one the index held when
// end was read: a later CONNECT replaces or deletes "w:". The decision is taken once the sessions topic has
// been read up to its end; if it cannot be read, it is tried again a second later. Runs on a timer goroutine.
func (srv *Server) claimDelayedWill(id string, end *sessions.OwnerRec, w *sessions.WillRec, due time.Time) {
	if srv.runCtx.Err() != nil {
		return // stopping: the end record stays in Kafka for the next processor, or this instance's restart
	}
	if !srv.readSessionsUpTo(srv.runCtx) {
		time.AfterFunc(time.Second, func() { srv.claimDelayedWill(id, end, w, due) })
		return
	}
	if rec := srv.store.DelayedClaim(id, end, due); rec != nil {
		srv.store.ClaimEnd(id, rec, w)
	}
}

// heartbeats writes this instance's heartbeat every heartbeatEvery. Runs on its own goroutine until ctx ends;
// the heartbeat is tombstoned at the end. Nothing else runs here, so a slow Kafka read cannot delay a
// heartbeat into a false death.
func (srv *Server) heartbeats(ctx context.Context) {
	t := time.NewTicker(srv.cfg.heartbeatEvery)
	defer t.Stop()
	for {
		srv.store.PutThen(sessionkey.Instance, srv.store.Instance, srv.heartbeat(), srv.heartbeatStored) // with the advertised address (redirect.go)
		select {
		case <-ctx.Done():
			srv.store.Put(sessionkey.Instance, srv.store.Instance, nil)
			return
		case <-t.C:
		}
	}
}

// processor acts for dead instances on the partitions this instance processes, every heartbeatEvery. Runs
// on its own goroutine until ctx ends.
//
// The bound on noticing a death (docs/sessions.md, "Instance death"): an instance's last heartbeat is read
// about when it dies; it counts as dead deadAfter later, which the next round (at most heartbeatEvery after)
// notices. So the end of its connections is claimed within deadAfter + heartbeatEvery of its death, plus the
// Kafka round trips of the round (read the partitions up to their end, write the claim, read it back).
func (srv *Server) processor(ctx context.Context) {
	t := time.NewTicker(srv.cfg.heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		if srv.readSessionsUpTo(ctx) {
			srv.sessionsRead(start.UnixNano()) // alone.go
			srv.processPartitions(start, time.Now())
		}
	}
}

// readSessionsUpTo waits, at most SessionsReadWait, until the sessions topic has been read up to where it
// ended when called: what a will or expiry decision is taken on (read your writes). It reports false, and
// logs, if that could not be done. Blocks: never on an event loop or the reader goroutine.
func (srv *Server) readSessionsUpTo(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, srv.cfg.sessionsWait)
	defer cancel()
	if err := srv.kafka.ReadUpTo(ctx, srv.kafka.SessionsTopic()); err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			srv.warn("deciding no will or expiry now: the sessions topic could not be read up to its end", "err", err)
		}
		return false
	}
	return true
}

// processPartitions claims and expires what the sessions topic, read up to where it ended at start, says is
// due on the partitions this instance processes (sessions.Store.Due). Runs on the processor goroutine.
func (srv *Server) processPartitions(start, now time.Time) {
	claims, expired := srv.store.Due(start, now)
	for _, c := range claims {
		srv.claim(c)
	}
	for _, e := range expired {
		srv.regMu.Lock()
		_, local := srv.sessions[e.ID]
		srv.regMu.Unlock()
		if !local {
			srv.metrics.sessionsExpired.Add(1)
			srv.store.Forget(e.ID, e.Epoch, true) // nothing of it stays in Kafka
		}
	}
}

// claim writes claim c (sessions.Store.ClaimEnd) and, for a connection whose marker owed its will, the
// marker's tombstone after it (sessions/conns.go).
func (srv *Server) claim(c sessions.Claim) {
	srv.store.ClaimEnd(c.ID, c.Rec, c.Now)
	if c.Unmark {
		srv.store.UnmarkConn(c.ID, c.Rec.Epoch)
	}
	if c.EndOwner {
		srv.store.EndOwner(c.ID, c.Rec.Epoch)
	}
}

// recoverOwnConnections ends the connections a previous run of this instance (same InstanceID) held when it
// stopped without a goodbye, before serving: a will due is published after its delay (the first end record of
// the epoch decides, as for any death). It also takes over the wills that run had won and not yet published
// (sessions.Store.OwnOpen). Runs once in Start, after the sessions topic is loaded.
func (srv *Server) recoverOwnConnections(now time.Time) {
	st := srv.store
	ends, pending, won := st.OwnOpen(now)
	for _, e := range ends {
		srv.claim(e)
	}
	for _, e := range append(pending, won...) {
		srv.connectionEnded(e.ID, e.Rec)
	}
	if len(pending)+len(won) > 0 {
		srv.cfg.log.Info("took over the pending wills of this instance's previous run", "instance", st.Instance,
			"delayed", len(pending), "due_at_once", len(won))
	}
	if len(ends) > 0 {
		srv.cfg.log.Info("ended the connections of this instance's previous run", "instance", st.Instance, "connections", len(ends))
	}
}
