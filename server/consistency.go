package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Read your writes (docs/sessions.md, "Consistency"). An instance decides nothing about a client at CONNECT —
// session present, takeover, subscriptions and offsets restored, in-flight ids, a will cancelled — before it
// has read the client's sessions partition at least up to where that partition ended when the CONNECT
// arrived. The fence is the CONNECT's own owner record "o:<id>", which every CONNECT writes anyway (it is the
// takeover signal): it is appended after everything the partition held when the CONNECT arrived, so once the
// shared sessions reader hands it back, the index has seen all of that. The decision is taken on the view
// just before that record (in log order), which every instance reads the same way. It costs no Kafka request
// of its own and no connection: the CONNACK waits for one produce and the reader's next fetch, and concurrent
// CONNECTs share both (the producer batches, the reader reads every partition in one fetch).
//
// Because the CONNACK of a CONNECT goes out only once its owner record is in the log, a client that moves to
// another instance after a CONNACK finds that record there: the other instance sees the client connected and
// waits for the hand-over, whose final delivery record comes after everything the first instance wrote for
// the session (one producer, one partition: in order) — subscriptions made just before the move included.
//
// The wait is bounded (SessionsReadWait). If the record cannot be written or read back in time, the CONNECT
// is answered 0x88 Server Unavailable (v3: return code 3), never with a session decided on a partial view.

// errSessionsWait is the error of a CONNECT whose owner record was not read back within SessionsReadWait.
var errSessionsWait = errors.New("the sessions topic was not read up to the CONNECT's own record in time")

type fenceKey struct {
	id    string
	epoch int64
}

// fence is a CONNECT waiting to read its own owner record back. done is nil once the CONNECT was answered
// without it (timeout): the entry stays until the record is read, so the connection it announced is ended.
type fence struct {
	done  func(prev *stored, err error)
	timer *time.Timer
}

// awaitOwnRecord registers the fence of a CONNECT before its owner record is written. done runs once: on the
// reader goroutine with the index's view of the client just before the record (it must not block), or with
// an error on a Kafka callback or timer goroutine if the record failed or did not come back within wait.
func (st *store) awaitOwnRecord(id string, epoch int64, wait time.Duration, done func(prev *stored, err error)) {
	k := fenceKey{id, epoch}
	f := &fence{done: done}
	st.mu.Lock()
	if st.fences == nil {
		st.fences = make(map[fenceKey]*fence)
	}
	st.fences[k] = f
	f.timer = time.AfterFunc(wait, func() {
		st.mu.Lock()
		d := f.done
		f.done = nil // abandoned: the record, if it comes, is ended (ownRecordRead)
		st.mu.Unlock()
		if d != nil {
			d(nil, errSessionsWait)
		}
	})
	st.mu.Unlock()
}

// writeOwnRecord writes the owner record a fence waits for; a failure answers the fence at once.
func (st *store) writeOwnRecord(id string, rec *ownerRec) {
	value, err := json.Marshal(rec)
	if err != nil {
		panic("BUG: cannot encode sessions record: " + err.Error())
	}
	k := fenceKey{id, rec.Epoch}
	st.srv.kafka.PutSession(storeKey(kindOwner, id), value, func(err error) {
		if err == nil {
			return
		}
		st.srv.metrics.kafkaErrors.Add(1)
		st.srv.warn("cannot write sessions record", "key", storeKey(kindOwner, id), "err", err)
		st.mu.Lock()
		f := st.fences[k]
		delete(st.fences, k)
		var d func(*stored, error)
		if f != nil {
			f.timer.Stop()
			d, f.done = f.done, nil
		}
		st.mu.Unlock()
		if d != nil {
			d(nil, fmt.Errorf("cannot write the owner record: %w", err))
		}
	})
}

// takeFence removes and returns the fence an owner record read back answers, if any. st.mu is held.
func (st *store) takeFence(id string, o *ownerRec) *fence {
	if len(st.fences) == 0 || o == nil || !o.Connected || o.Instance != st.instance {
		return nil
	}
	k := fenceKey{id, o.Epoch}
	f := st.fences[k]
	if f != nil {
		delete(st.fences, k)
		f.timer.Stop()
	}
	return f
}

// ownRecordRead runs on the reader goroutine when a CONNECT's own owner record was read back, with the view
// before it. A CONNECT still waiting gets its decision; one already answered 0x88 announced a connection that
// never was: it is ended, keeping the session's expiry, unless a newer connection of the client is here.
func (st *store) ownRecordRead(id string, epoch int64, f *fence, prev *stored) {
	st.mu.Lock()
	d := f.done
	f.done = nil
	newer := false
	for k := range st.fences {
		newer = newer || (k.id == id && k.epoch > epoch)
	}
	st.mu.Unlock()
	if d != nil {
		d(prev, nil)
		return
	}
	srv := st.srv
	srv.regMu.Lock()
	if s := srv.sessions[id]; s != nil {
		s.mu.Lock()
		newer = newer || (s.c != nil && s.c.epoch > epoch)
		s.mu.Unlock()
	}
	srv.regMu.Unlock()
	if newer {
		return
	}
	if prev.owner == nil || (prev.owner.Expiry == 0 && prev.sess == nil) {
		st.endOwner(id, epoch) // nothing to keep
		return
	}
	st.put(kindOwner, id, &ownerRec{V: recVersion, Instance: st.instance, Epoch: epoch, At: time.Now().UnixMilli(),
		Expiry: prev.owner.Expiry})
}

// alive reports whether instance inst's heartbeat was read within the death window: a CONNECT does not wait
// for a dead instance to hand a session over (its processor ends the old connection; wills.go).
func (st *store) alive(inst string) bool {
	st.mu.Lock()
	seen, ok := st.instances[inst]
	st.mu.Unlock()
	return !ok || time.Since(seen) < st.srv.cfg.deadAfter // never seen: perhaps its first heartbeat is on its way
}

// connectSession finds the client's session once the sessions partition has been read up to the CONNECT's own
// owner record: on this instance, in the sessions topic, or new. If another instance holds the client, the
// CONNACK waits until that instance has handed the session over, or until the hand-off times out. The
// connection reads no packet meanwhile; the loop is never blocked. Runs on the loop.
func (c *conn) connectSession(pc *pendingConnect) error {
	srv := c.l.srv
	c.phase = phaseLoading                // no packet is read until the session is here
	c.marked = pc.expiry > 0 || !pc.clean // a session that may be handed over, or resumed from (conns.go)
	srv.store.awaitOwnRecord(pc.id, c.epoch, srv.cfg.sessionsWait, func(prev *stored, err error) {
		if err != nil {
			c.runOnLoop(func() { c.connectUnavailable(pc, err) })
			return
		}
		srv.decideConnect(c, pc, prev)
	})
	if c.marked {
		srv.store.markConn(pc.id, c.epoch) // before the owner record: a trace compaction keeps
	}
	// Every instance reads it: the takeover signal, and this CONNECT's fence.
	srv.store.writeOwnRecord(pc.id, &ownerRec{V: recVersion, Instance: srv.store.instance, Epoch: c.epoch,
		Connected: true, At: time.Now().UnixMilli(), Expiry: pc.expiry})
	return nil
}

// decideConnect takes the CONNECT's decision on prev, the sessions index just before its own owner record.
// Runs on the reader goroutine; must not block.
func (srv *Server) decideConnect(c *conn, pc *pendingConnect, prev *stored) {
	o := prev.owner
	if o != nil && o.Connected && o.Epoch > c.epoch {
		// A newer CONNECT of the client came first in the log: it wins, this one is superseded.
		if c.marked {
			srv.store.unmarkConn(pc.id, c.epoch) // nothing to hand over: a CONNECT waiting for this one stops
		}
		c.runOnLoop(func() {
			if !c.closed && c.phase == phaseLoading {
				c.close()
			}
		})
		return
	}
	srv.regMu.Lock()
	_, local := srv.sessions[pc.id]
	srv.regMu.Unlock()
	held := !local && o != nil && o.Connected && o.Instance != srv.store.instance && srv.store.alive(o.Instance)
	// A view holding a delivery record of a connection newer than every owner record it holds is compacted:
	// a connection's owner record always comes before the delivery records naming it (its CONNECT writes it
	// first; a hand-over to it is written on reading it), so compaction removed it before this instance's
	// reader got there — superseded by this CONNECT's own record. kfake compacts everything but a partition's
	// last batch (docs/sessions.md, "Compaction"). That connection may still be held elsewhere, delivering:
	// wait for its hand-over as for a known holder, else its deliveries since that record are sent again.
	compacted := !local && !held && prev.deliv != nil && prev.deliv.Epoch > epochOf(o) && prev.deliv.Epoch < c.epoch &&
		prev.connEnded < prev.deliv.Epoch // unless that connection's marker was read tombstoned: it is over (conns.go)
	// The same from a connection marker (conns.go): it stays until its connection is over, whatever
	// compaction removed of the connection's other records meanwhile.
	var marked int64
	if !local {
		marked = prev.newestConn(epochOf(o), c.epoch)
	}
	if srv.debugOn() { // what each decision saw: the trail of a window (docs/sessions.md, "Compaction")
		var de int64
		if prev.deliv != nil {
			de = prev.deliv.Epoch
		}
		srv.debug("deciding a CONNECT", "client", pc.id, "epoch", c.epoch, "owner_epoch", epochOf(o),
			"owner_connected", o != nil && o.Connected, "delivery_epoch", de, "marked_epoch", marked, "local", local,
			"wait", held || compacted || marked != 0)
	}
	if held || compacted || marked != 0 {
		var from int64 // the newest connection waited for: its end ends the wait, an older one's does not
		if held {
			from = o.Epoch
		}
		if compacted {
			from = prev.deliv.Epoch // the connection the delivery record names
		}
		if marked > from {
			from = marked
		}
		if !held {
			srv.debug("sessions view lacks the owner record of a connection its delivery record or marker names; waiting for a hand-over",
				"client", pc.id, "from_epoch", from, "owner_epoch", epochOf(o))
		}
		// Registered here, on the reader goroutine, before the reader can hand on the hand-over's record.
		// A clean start waits too: the previous instance's last writes (a SUBSCRIBE acknowledged just before
		// the client moved) come before its hand-over record, so the tombstones of this clean start come
		// after them and no discarded subscription is resurrected by a late write.
		srv.store.awaitHandoff(pc.id, c.epoch, from, srv.cfg.handoffTimeout, func(snap *stored) {
			c.runOnLoop(func() {
				if c.closed || c.phase != phaseLoading {
					return
				}
				if snap == nil { // superseded by a newer CONNECT of the same client
					c.close()
					return
				}
				// No hand-over and no end of o in time (wills.go). A tombstone of o's marker is an end: its holder
				// wrote it after o's end record, which decided the will, and which compaction can remove before
				// this reader gets there (a session that ends with its connection tombstones the owner key next).
				if held && (snap.deliv == nil || snap.deliv.Epoch != c.epoch) && snap.ended[0] < o.Epoch && snap.connEnded < o.Epoch {
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
func (c *conn) completeConnect(pc *pendingConnect, prev, snap *stored) {
	srv := c.l.srv
	switch {
	case c.will != nil:
		pc.will = newWillRec(c.epoch, c.will) // written by finishConnect, which holds the CONNACK for it
	case prev.will != nil:
		srv.store.put(kindWill, pc.id, nil) // an earlier connection's will is cancelled by this one [MQTT-3.1.3-9]
	}
	srv.store.unmarkOlder(pc.id, c.epoch, prev, snap) // the client's earlier connections are over (conns.go)
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
	srv.metrics.connectRefused(mqttcodec.ServerUnavailable)
	c.will = nil
	c.writeConnack(pc.version, false, mqttcodec.ServerUnavailable, nil)
	c.close()
}
