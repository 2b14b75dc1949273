package sessions

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
// died is published by the instance restarted under the winner's id (OwnOpen), or, once the
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

// PendingWill is a will due at once whose claim was written ("p:" record). Immutable once in the index.
type PendingWill struct {
	Will    *WillRec
	by      string // the instance that wrote the pending record read last (willRec.By); "" written before it named one
	winner  string // the instance whose end record, the first of the epoch and round, claimed it; "" none read yet
	round   int    // that record's round
	claimed bool   // an end record of the epoch has been read: the log has decided its rounds so far
}

// onPendingRecord applies a "p:" record read from the sessions topic. Runs on the reader goroutine.
func (st *Store) onPendingRecord(key string, value []byte, part int32) {
	id, epoch, ok := sessionkey.ParsePending(key[2:])
	if !ok {
		st.host.Warn("skipping sessions record with an unknown key", "key", key)
		return
	}
	w, err := Decode[WillRec](value)
	if err != nil {
		st.host.Warn("skipping sessions record that cannot be read", "key", key, "err", err)
		return
	}
	st.update(id, part, w != nil, func(c *Stored) {
		var p *PendingWill
		if w != nil {
			st.sawAlive(w.By)
			p = &PendingWill{Will: w, by: w.By}
			if old := c.Pending[epoch]; old != nil {
				p.winner, p.round, p.claimed = old.winner, old.round, old.claimed // the same will written again by another claim
			}
		}
		c.Pending = withEntry(c.Pending, epoch, p, p != nil)
	})
}

// claimPending notes end record o of the client: the pending will of its epoch has been claimed, and the
// first claim "now" of an epoch and round (first) wins it. It reports whether o is a claim of this instance
// (self) that did not win while the will it wrote as pending has no winner: nobody will publish that record,
// so it is tombstoned. st.mu is held.
func (c *Stored) claimPending(o *OwnerRec, first bool, self string) (orphan bool) {
	p := c.Pending[o.Epoch]
	if p == nil {
		return false
	}
	q := *p
	q.claimed = true
	if o.Now && first {
		q.winner, q.round = o.Instance, o.Round
	}
	c.Pending = withEntry(c.Pending, o.Epoch, &q, true)
	return o.Now && !first && o.Instance == self && p.winner == ""
}

// pendingClaim is the end record by which instance self claims the next round of pending will p of epoch,
// its winner being dead. st.mu is held.
func (c *Stored) pendingClaim(self string, epoch int64, p *PendingWill, now time.Time) *OwnerRec {
	r := &OwnerRec{V: sessionkey.Version, Instance: self, Epoch: epoch, At: now.UnixMilli(), Will: true, Now: true, Round: p.round + 1}
	if o := c.Owner; o != nil && o.Epoch == epoch && !o.Connected {
		r.At, r.Expiry = o.At, o.Expiry // the end of that connection, which the session's expiry counts from
	}
	return r
}

// claimWritten notes a claim of a will due at once (an end record with "now") that this instance is writing
// for client and epoch k: until Kafka acknowledges it and a processor round reads past it, the log decides it
// and the round does not claim that will again (settledClaims).
func (st *Store) claimWritten(k Key) {
	st.mu.Lock()
	if st.claims == nil {
		st.claims = make(map[Key]time.Time)
	}
	st.claims[k] = time.Time{}
	st.mu.Unlock()
}

// claimAcked notes that Kafka acknowledged (or failed) claim k. Runs on a Kafka callback goroutine.
func (st *Store) claimAcked(k Key) {
	st.mu.Lock()
	if _, ok := st.claims[k]; ok {
		st.claims[k] = time.Now()
	}
	st.mu.Unlock()
}

// settledClaims forgets this instance's claims that Kafka acknowledged before start, the start of a processor
// round that has read the sessions topic up to where it ended then: the round's reader has passed them. It
// returns whether the claims of a client and epoch are settled so: none is still on its way. st.mu is held.
func (st *Store) settledClaims(start time.Time) func(Key) bool {
	for k, acked := range st.claims {
		if !acked.IsZero() && acked.Before(start) {
			delete(st.claims, k)
		}
	}
	return func(k Key) bool {
		_, inFlight := st.claims[k]
		return !inFlight
	}
}

// ClaimEnd writes end record rec of client id's connection. A will due at once (now non-nil) is written
// first as the pending will of the connection ("p:<id>\x00<epoch>"), so that once the claim wins, the will is
// in Kafka until it is published, whoever publishes it (above). The connection's marker, if it still carries
// the will, is written again without it just before the end record (conns.go, "Owed wills"): a marker that
// carries one then means that no claim was written. Runs on any goroutine.
func (st *Store) ClaimEnd(id string, rec *OwnerRec, now *WillRec) {
	st.host.Debug("claiming the end of a connection", "client", id, "epoch", rec.Epoch, "round", rec.Round, "will", rec.Will,
		"due_now", now != nil || rec.Now)
	if now == nil && !rec.Now {
		st.SettleConn(id, rec.Epoch)
		st.Put(sessionkey.Owner, id, rec)
		return
	}
	k := Key{id, rec.Epoch}
	st.claimWritten(k)
	claim := func() {
		st.SettleConn(id, rec.Epoch)
		st.PutThen(sessionkey.Owner, id, rec, func(error) { st.claimAcked(k) })
	}
	if now == nil {
		claim() // the next round of a pending will: its record is in Kafka already
		return
	}
	rec.Now = true
	pw := *now // the index's record is shared: a copy names this claimer
	pw.By = st.Instance
	if h := st.ClaimHook.Load(); h != nil {
		// Tests: the claimer killed between its two records. The hook runs once Kafka holds the pending will.
		st.PutKey(sessionkey.PendingKey(id, rec.Epoch), &pw, func(error) {
			if !(*h)() {
				claim()
			}
		})
		return
	}
	st.PutKey(sessionkey.PendingKey(id, rec.Epoch), &pw, nil) // same producer, same partition: before rec
	claim()
}
