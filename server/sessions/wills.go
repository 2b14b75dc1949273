package sessions

import (
	"sort"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
)

// Wills are decided by the sessions topic's log, so each is published exactly once whichever instance holds
// the client, and even if that instance dies:
//
//   - a CONNECT with a will writes it as "w:<id>" for the connection's epoch;
//   - a connection's end writes an end record "o:<id>" {connected:false, will: due?}; the holding instance
//     writes it, or — if that instance stopped sending heartbeats — the instance that processes the client's
//     sessions partition writes one for it;
//   - the FIRST end record of an epoch (and claim round) in the partition's log wins: only the instance that
//     wrote it publishes the will, after the Will Delay Interval, unless the client connected again meanwhile,
//     and then tombstones "w:<id>". Every instance reads the same log, so they agree on the winner.
//   - if the winner itself dies before publishing, the partition's processor claims the next round.
//
// Instances write heartbeats "i:<instance id>" every heartbeatEvery; one silent for deadAfter is dead. Sessions
// partition p is processed by the live instance at p mod N in the sorted list of live instances.

// Claim is an end record to write (ClaimEnd): client id's connection, and its will if due at once.
type Claim struct {
	ID       string
	Rec      *OwnerRec
	Now      *WillRec // a will due at once (ClaimEnd)
	Unmark   bool     // the connection's marker owed its will (conns.go): tombstone it after the claim
	EndOwner bool     // the client had no owner record: tombstone the owner key after the claim (owedClaim)
}

// Due is a processor round's decision (docs/sessions.md, "Instance death"): the ends of connections held by
// dead instances, and of wills whose publisher died, on the sessions partitions this instance processes, to
// claim; and the sessions whose expiry passed while no instance held them, by the epoch of their last
// connection, to expire. It also claims again the pending wills that nobody is known to have won (pending.go):
// this instance's own, on every partition, and those of dead claimers on its partitions. The caller has read
// the sessions topic up to where it ended at start.
func (st *Store) Due(start, now time.Time) (claims []Claim, expired []Key) {
	deadAfter := st.deadAfter
	st.mu.Lock()
	defer st.mu.Unlock()
	live := []string{st.Instance}
	lastSeen := map[string]time.Time{}
	for inst, seen := range st.instances {
		lastSeen[inst] = seen
		if inst != st.Instance && now.Sub(seen) < deadAfter {
			live = append(live, inst)
		}
	}
	sort.Strings(live)
	alive := func(inst string) bool { return inst == st.Instance || now.Sub(lastSeen[inst]) < deadAfter }
	settled := st.settledClaims(start)
	for id, c := range st.clients {
		processed := live[int(c.Part)%len(live)] == st.Instance
		for epoch, p := range c.Pending {
			switch {
			case !settled(Key{id, epoch}):
				continue // a claim of this instance is on its way: the log decides it first
			case p.winner != "" && !alive(p.winner) && processed:
				// The instance that won a will due at once died before publishing it: claim the next round.
			case p.claimed:
				continue // the log decided it; a dead winner's is above
			case p.by == st.Instance:
				// This instance's claim is in Kafka and was not read: compacted away before the reader got
				// there, or it was never written. Nobody else publishes the will: claim the next round.
			case p.by != "" && !alive(p.by) && processed:
				// Its claimer died between the pending will and the claim, or after a claim nobody read.
			default:
				continue
			}
			claims = append(claims, Claim{ID: id, Rec: c.pendingClaim(st.Instance, epoch, p, now)})
		}
		if !processed {
			continue
		}
		for epoch, m := range c.Owed {
			// A connection whose holder died and whose end nobody claimed, and that the owner record does not
			// stand for (conns.go, c.endedByOther).
			if c.endedByOther(epoch) && !alive(m.Instance) && c.Pending[epoch] == nil && settled(Key{id, epoch}) {
				claims = append(claims, c.owedClaim(st.Instance, id, epoch, m, now, st.endedBy(m.Instance)))
			}
		}
		if c.Owner == nil {
			continue
		}
		o := c.Owner
		switch {
		case o.Connected && !alive(o.Instance):
			// The holder died. When exactly its connection ended is unknown; counting the Will Delay from now,
			// the detection, never publishes a will early.
			will := c.Will != nil && c.Will.Epoch == o.Epoch
			var due *WillRec
			if will && min(c.Will.Delay, o.Expiry) == 0 {
				due = c.Will
			}
			claims = append(claims, Claim{ID: id, Rec: &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: o.Epoch,
				At: now.UnixMilli(), Expiry: o.Expiry, Will: will}, Now: due})
		case !o.Connected && o.Will && !o.Now && c.Will != nil && c.Will.Epoch == o.Epoch && !alive(o.Instance) &&
			now.After(time.UnixMilli(o.At).Add(time.Duration(c.Will.Delay)*time.Second+deadAfter)):
			// The instance that won the will died before publishing it: claim the next round.
			claims = append(claims, Claim{ID: id, Rec: &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: o.Epoch,
				At: o.At, Expiry: o.Expiry, Will: true, Round: o.Round + 1}})
		case !o.Connected && o.Expiry != 0xFFFFFFFF && now.UnixMilli() > o.At+int64(o.Expiry)*1000:
			expired = append(expired, Key{id, o.Epoch})
		}
	}
	return claims, expired
}

// OwnOpen is what a previous run of this instance (same id) left open when it stopped without a goodbye, for
// the new run to act on before it serves. Other instances cannot tell — this id is alive again — so nobody
// else will.
//
// ends are the end records to write (ClaimEnd) for the connections it held, whose owner records still say
// connected; the session's expiry counts from now. pending and won are end records already in the log, to act
// on as Host.ConnectionEnded does: the wills that run had won and not yet published, since its timers died
// with it and the load acts on no end record (SetReady). pending: a will whose Will Delay was still running,
// published when its delay ends, from the end record's time (at once if it has passed), unless the client
// came back; won: a will due at once (pending.go).
func (st *Store) OwnOpen(now time.Time) (ends, pending, won []Claim) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for id, c := range st.clients {
		for epoch, p := range c.Pending {
			if p.winner == st.Instance { // won by the previous run, not published
				won = append(won, Claim{ID: id, Rec: &OwnerRec{Instance: st.Instance, Epoch: epoch, Will: true, Now: true}})
			}
		}
		o := c.Owner
		for epoch, m := range c.Owed {
			// A connection of the previous run that the owner record does not stand for, whose end nobody
			// claimed (conns.go, c.endedByOther).
			if c.endedByOther(epoch) && m.Instance == st.Instance && c.Pending[epoch] == nil {
				ends = append(ends, c.owedClaim(st.Instance, id, epoch, m, now, st.endedBy(st.Instance)))
			}
		}
		if o == nil || o.Instance != st.Instance {
			continue
		}
		if !o.Connected {
			if o.Will && !o.Now && c.Will != nil && c.Will.Epoch == o.Epoch {
				pending = append(pending, Claim{ID: id, Rec: o})
			}
			continue
		}
		e := Claim{ID: id, Rec: &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: o.Epoch,
			At: now.UnixMilli(), Expiry: o.Expiry, Will: c.Will != nil && c.Will.Epoch == o.Epoch}}
		if e.Rec.Will && min(c.Will.Delay, o.Expiry) == 0 {
			e.Now = c.Will
		}
		ends = append(ends, e)
	}
	return ends, pending, won
}

// endedByOther says whether the owed marker of connection epoch (conns.go) is to be claimed by another than
// its holder once that holder is dead (Due) or restarted (OwnOpen): the owner record does not stand for it, so
// the rules that end the owner record's connection never will. That is a connection older than the owner
// record's (the client connected again), any connection of a client without an owner record (its session
// ended since), and a connection newer than the owner record whose will record ("w:") is its own. The last is
// the client's newest connection after compaction kept only a late record of an older one in the owner key
// (docs/sessions.md, "Owed wills"): the will record is written after the connection's owner record was read
// back and before its CONNACK (finishConnect), so it tells an accepted connection from a CONNECT killed
// before its owner record (a marker, a will, no CONNACK: nothing is owed). st.mu is held or c is a copy.
func (c *Stored) endedByOther(epoch int64) bool {
	o := c.Owner
	switch {
	case o == nil || epoch < o.Epoch:
		return true
	case epoch > o.Epoch:
		return c.Will != nil && c.Will.Epoch == epoch
	}
	return false // the owner record's own connection: ended from the owner record
}

// owedClaim is the claim by which instance self ends client id's connection epoch, whose marker m still
// carries its will: nobody claimed its end (conns.go, endedByOther). A will of delay 0 was due when the
// connection ended and is claimed with it. A connection newer than the owner record is the client's newest:
// its end record becomes the owner record, and a delayed will is claimed as the dead holder's owner record
// would have it (Due), published after its delay unless the client comes back. st.mu is held.
//
// A delayed will of a connection older than the owner record's is due only if the client came back after its
// delay, counted from the connection's end [MQTT-3.1.3-9]; that end is known only to have come before endedBy,
// the latest its instance can have lived (0: unknown). If the client's first connection after it (firstAfter)
// came at least the delay after endedBy, the will is due — long past, so at once; else it is taken as cancelled
// (the client may have come back within the delay: a will is never published early). The end record is a late
// one either way, which decides that connection's will and nothing else.
//
// A client without an owner record (its session ended since, and the owner key was tombstoned) gets the owner
// key tombstoned again after the claim, with the claim's epoch: the end record must not stand for a session.
func (c *Stored) owedClaim(self, id string, epoch int64, m *ConnRec, now time.Time, endedBy time.Time) Claim {
	newest := c.Owner != nil && epoch > c.Owner.Epoch
	past := false // a delayed will of an older connection whose client came back only after its delay
	if d := time.Duration(m.Will.Delay) * time.Second; !newest && d > 0 && !endedBy.IsZero() {
		next := c.firstAfter(epoch)
		past = next != 0 && next >= endedBy.Add(d).UnixNano()
	}
	rec := &OwnerRec{V: sessionkey.Version, Instance: self, Epoch: epoch, At: now.UnixMilli(), Will: m.Will.Delay == 0 || newest || past}
	if c.Owner != nil {
		rec.Expiry = c.Owner.Expiry // the newest connection's is gone with its owner record: the session's last known
	}
	cl := Claim{ID: id, Rec: rec, Unmark: true, EndOwner: c.Owner == nil}
	if rec.Will && (min(m.Will.Delay, rec.Expiry) == 0 || past) {
		cl.Now = m.Will
	}
	return cl
}

// endedBy is the latest instance inst can have lived, for the connections it held: deadAfter past the time
// its last heartbeat read says it was written (its clock; the epochs are their instances' clocks too) — an
// instance with no heartbeat read for deadAfter is dead (docs/sessions.md, "Instance death"). Zero if no
// heartbeat of it was read. st.mu is held.
func (st *Store) endedBy(inst string) time.Time {
	at := st.beats[inst]
	if at == 0 {
		return time.Time{}
	}
	return time.UnixMilli(at).Add(st.deadAfter)
}

// EndRecord is the end record by which this instance ends its connection epoch of a client now: the claim
// that decides the connection's will (ClaimEnd), will saying whether one is due.
func (st *Store) EndRecord(epoch int64, expiry uint32, will bool) *OwnerRec {
	return &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: epoch, At: time.Now().UnixMilli(), Expiry: expiry,
		Will: will}
}

// WillDueAt is the delayed will that end record end of client id won, and when it is due: after its Will
// Delay Interval, or when the session ends if that comes first [MQTT-3.1.3-9]. nil: no will is stored for that
// connection (or it was published).
func (st *Store) WillDueAt(id string, end *OwnerRec) (time.Time, *WillRec) {
	c, ok := st.Lookup(id)
	if !ok || c.Will == nil || c.Will.Epoch != end.Epoch {
		return time.Time{}, nil
	}
	delay := time.Duration(c.Will.Delay) * time.Second
	if exp := time.Duration(end.Expiry) * time.Second; exp < delay {
		delay = exp
	}
	return time.UnixMilli(end.At).Add(delay), c.Will
}

// A delayed will is published by a claim of the next round that makes it due at once (docs/sessions.md,
// "Delayed wills"): its winner claims it when the delay has passed (DelayedClaim), and so does a CONNECT of
// the client that comes after that (DueBefore) — the winner may be dead, or unable to read the sessions topic
// when the will came due. The claim writes the will as pending ("p:", pending.go) and the first end record of
// the round decides who publishes it, once; a CONNECT that came within the delay cancels the will
// [MQTT-3.1.3-9], one that came after it does not, whatever was read first.

// DelayedClaim is the claim by which this instance, winner of end record end of client id's connection, makes
// that connection's delayed will due at once now that its delay has passed (due): a claim of the next round,
// decided by the log like every other. nil: the client connected again within the delay [MQTT-3.1.3-9], or a
// claim of the will as due at once was read already (a CONNECT that came after the delay wrote one: the log
// decides), or the index no longer knows the client (its session ended: a clean start within the delay, or
// the session's expiry, deleted the stored will with it). The caller has read the sessions topic up to its end.
func (st *Store) DelayedClaim(id string, end *OwnerRec, due time.Time) *OwnerRec {
	c, ok := st.Lookup(id)
	if !ok || c.Pending[end.Epoch] != nil {
		return nil
	}
	if next := c.connectAfter(end.Epoch); next != 0 && next < due.UnixNano() {
		return nil
	}
	return &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: end.Epoch, At: end.At, Expiry: end.Expiry, Will: true,
		Round: end.Round + 1}
}

// DueBefore is what a CONNECT at epoch, deciding on prev (the index just before its own owner record), claims
// of the client's previous connection: a delayed will whose delay had passed before the CONNECT and that no
// claim made due at once yet — its winner dead, or unable to read the topic when it came due. Such a will is
// published, not cancelled: only a connection made within the delay cancels it [MQTT-3.1.3-9]. The claim is of
// the next round, as the winner's own (DelayedClaim): whichever comes first in the log publishes it. nil if
// there is none.
func (st *Store) DueBefore(id string, prev *Stored, epoch int64) *Claim {
	o, w := prev.Owner, prev.Will
	if o == nil || o.Connected || !o.Will || o.Now || w == nil || w.Epoch != o.Epoch || prev.Pending[o.Epoch] != nil {
		return nil
	}
	due := time.UnixMilli(o.At).Add(time.Duration(min(w.Delay, o.Expiry)) * time.Second)
	if epoch < due.UnixNano() {
		return nil // within the delay: cancelled
	}
	return &Claim{ID: id, Rec: &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: o.Epoch, At: o.At, Expiry: o.Expiry,
		Will: true, Round: o.Round + 1}, Now: w}
}

// connectAfter is the epoch of the client's first connection after its connection epoch ended, as far as the
// index can tell: the first owner record of a connection read after that connection's end record; else the
// oldest connection the index knows of that is newer than epoch — Next's (a later end's connection, and the
// one after it) or the owner's. Next holds one end: a later end of the client with a will takes its place, and
// the connections it names are themselves connections after epoch, so the first one after epoch came no later
// (the owner alone, a connection more after the delay, published a will whose client had come back within
// it). 0 if none. st.mu is held or c is a copy.
func (c *Stored) connectAfter(epoch int64) int64 {
	if c.Next[0] == epoch {
		return c.Next[1]
	}
	first := int64(0)
	for _, e := range [...]int64{c.Next[0], c.Next[1], EpochOf(c.Owner)} {
		if e > epoch && (first == 0 || e < first) {
			first = e
		}
	}
	return first
}
