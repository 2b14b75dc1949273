package server

import (
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
)

// Pending wills: a will due at once survives the death of the instance that won it.
//
// A will due at once (Will Delay 0, or a session that ends with its connection) is claimed by an end record
// like any will, and the first end record of the connection's epoch (and round) decides who publishes it. The
// claimer may be killed after reading its claim back and before the will reaches Kafka; and by then the
// client may have connected again and replaced or deleted its "w:" record, and a restarted instance cannot
// tell that the will was due at once. So the claimer writes the will first, under a key of its own,
// "p:<id>\x00<epoch>", then the end record with "now": true (same producer, same partition: in that order).
// Every instance's index keeps the pending wills it reads, and notes for each the instance whose claim won.
// The winner publishes the will with the pending record's tombstone: in one Kafka transaction when
// transactions are on (exactly once: both or neither survive a kill), else the tombstone after Kafka
// acknowledged the will (at least once: a kill in between publishes it again). A pending will whose winner
// died is published by the instance restarted under the winner's id (recoverOwnConnections), or, once the
// winner is known dead, by the partition's processor after a claim of the next round, which decides as the
// first claim did. A claim that lost, for a will nobody won, tombstones its own pending record.
//
// The winner is known only to an index that read the winning claim, and an index can miss it: kfake compacts
// everything but a partition's last batch, so a claim superseded at once by a later record of the owner key —
// the client's next CONNECT, or the session's own end — can be removed before even the claimer's reader gets
// there (docs/sessions.md, "Compaction"); and a claimer killed between its two records wrote no claim. The
// pending record itself is never superseded but by a claim of the same will, and it names its claimer ("by").
// So a pending will of which no claim at all has been read is claimed again, in the next round, decided by
// the log like the first: by its claimer, at its first processor round that began after Kafka acknowledged
// the claim (its reader has read past it then: nobody read it), and by the partition's processor once the
// claimer is dead (its restart under the same id is the claimer again). A claim that was read decided,
// whoever it named: a claim that lost tombstones its pending record, as above.

// pendingWill is a will due at once whose claim was written ("p:" record). Immutable once in the index.
type pendingWill struct {
	will    *willRec
	by      string // the instance that wrote the pending record read last (willRec.By); "" written before it named one
	winner  string // the instance whose end record, the first of the epoch and round, claimed it; "" none read yet
	round   int    // that record's round
	claimed bool   // an end record of the epoch has been read: the log has decided its rounds so far
}

// onPendingRecord applies a "p:" record read from the sessions topic. Runs on the reader goroutine.
func (st *store) onPendingRecord(key string, value []byte, part int32) {
	id, epoch, ok := sessionkey.ParsePending(key[2:])
	if !ok {
		st.srv.warn("skipping sessions record with an unknown key", "key", key)
		return
	}
	w, err := decodeRec[willRec](value)
	if err != nil {
		st.srv.warn("skipping sessions record that cannot be read", "key", key, "err", err)
		return
	}
	st.update(id, part, w != nil, func(c *stored) {
		var p *pendingWill
		if w != nil {
			st.sawAlive(w.By)
			p = &pendingWill{will: w, by: w.By}
			if old := c.pending[epoch]; old != nil {
				p.winner, p.round, p.claimed = old.winner, old.round, old.claimed // the same will written again by another claim
			}
		}
		c.pending = withEntry(c.pending, epoch, p, p != nil)
	})
}

// claimPending notes end record o of the client: the pending will of its epoch has been claimed, and the
// first claim "now" of an epoch and round (first) wins it. It reports whether o is a claim of this instance
// (self) that did not win while the will it wrote as pending has no winner: nobody will publish that record,
// so it is tombstoned. st.mu is held.
func (c *stored) claimPending(o *ownerRec, first bool, self string) (orphan bool) {
	p := c.pending[o.Epoch]
	if p == nil {
		return false
	}
	q := *p
	q.claimed = true
	if o.Now && first {
		q.winner, q.round = o.Instance, o.Round
	}
	c.pending = withEntry(c.pending, o.Epoch, &q, true)
	return o.Now && !first && o.Instance == self && p.winner == ""
}

// pendingClaim is the end record by which instance self claims the next round of pending will p of epoch,
// its winner being dead. st.mu is held.
func (c *stored) pendingClaim(self string, epoch int64, p *pendingWill, now time.Time) *ownerRec {
	r := &ownerRec{V: recVersion, Instance: self, Epoch: epoch, At: now.UnixMilli(), Will: true, Now: true, Round: p.round + 1}
	if o := c.owner; o != nil && o.Epoch == epoch && !o.Connected {
		r.At, r.Expiry = o.At, o.Expiry // the end of that connection, which the session's expiry counts from
	}
	return r
}

// publishPendingOf publishes the pending will that end record end (this instance's, the first of its epoch
// and round) won. Runs on the reader goroutine; must not block.
func (srv *Server) publishPendingOf(id string, end *ownerRec) {
	st, _ := srv.store.lookup(id)
	p := st.pending[end.Epoch]
	if p == nil {
		srv.warn("will due at once not published: its pending record was not read before its claim", "client", id)
		return
	}
	srv.debug("publishing a will due at once", "client", id, "epoch", end.Epoch, "round", end.Round)
	// The "w:" record stays: a claim of "now" is never published from it (the processor and a restart publish
	// the pending record), and a tombstone written now could land after the record of the client's next CONNECT
	// with a will — which replaces this one or deletes it itself (completeConnect), as the end of the session
	// does (forget).
	go srv.publishPending(id, end.Epoch, p.will) // a payload check may ask the schema registry
}

// publishPending publishes pending will w of client id's connection epoch and tombstones its record with it
// (sendWillWith). Runs on any goroutine but the reader's.
func (srv *Server) publishPending(id string, epoch int64, w *willRec) {
	if h := srv.willHook.Load(); h != nil && (*h)() {
		return
	}
	if d := srv.cfg.willHold; d > 0 {
		time.Sleep(d) // fault testing (WillHold): this goroutine is the will's own
	}
	srv.sendWillWith(w.message(id, time.Now()), sessionkey.PendingKey(id, epoch))
}

// reassertOwner writes owner record o of client id again — this instance's record of the connection it holds
// — after a record of an older connection of the client was read after it: that record is the key's last one
// now, and compaction keeps only the last, so an instance reading the topic from its start would see the
// client disconnected (or not there) while it is connected here. Written under the session's lock and only
// while the connection is held: the end of the connection (endSession, which takes the lock first) is written
// after it. Runs on the reader goroutine; PutSession does not block.
func (srv *Server) reassertOwner(id string, o *ownerRec) {
	srv.regMu.Lock()
	s := srv.sessions[id]
	srv.regMu.Unlock()
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil || s.c.epoch != o.Epoch {
		return
	}
	srv.debug("owner record written again after a late record of an older connection", "client", id, "epoch", o.Epoch)
	srv.store.put(kindOwner, id, o)
}

// claimWritten notes a claim of a will due at once (an end record with "now") that this instance is writing
// for client and epoch k: until Kafka acknowledges it and a processor round reads past it, the log decides it
// and the round does not claim that will again (settledClaims).
func (st *store) claimWritten(k fenceKey) {
	st.mu.Lock()
	if st.claims == nil {
		st.claims = make(map[fenceKey]time.Time)
	}
	st.claims[k] = time.Time{}
	st.mu.Unlock()
}

// claimAcked notes that Kafka acknowledged (or failed) claim k. Runs on a Kafka callback goroutine.
func (st *store) claimAcked(k fenceKey) {
	st.mu.Lock()
	if _, ok := st.claims[k]; ok {
		st.claims[k] = time.Now()
	}
	st.mu.Unlock()
}

// settledClaims forgets this instance's claims that Kafka acknowledged before start, the start of a processor
// round that has read the sessions topic up to where it ended then: the round's reader has passed them. It
// returns whether the claims of a client and epoch are settled so: none is still on its way. st.mu is held.
func (st *store) settledClaims(start time.Time) func(fenceKey) bool {
	for k, acked := range st.claims {
		if !acked.IsZero() && acked.Before(start) {
			delete(st.claims, k)
		}
	}
	return func(k fenceKey) bool {
		_, inFlight := st.claims[k]
		return !inFlight
	}
}
