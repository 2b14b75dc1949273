package sessions

import "github.com/ferrymq/ferry/internal/sessionkey"

// Connection markers: a CONNECT's view keeps a trace of every connection compaction hid from it.
//
// A CONNECT decides on the view just before its own owner record (consistency.go), and waits for the
// hand-over of a connection the view shows held. Compaction can hide that connection: kfake compacts
// everything but a partition's last batch (docs/sessions.md, "Compaction"), so when this instance's reader
// lags, the holder's owner record — superseded by this CONNECT's own — and its delivery records — superseded
// by the holder's next save or by its hand-over, both written after this CONNECT's record — can be gone
// before the reader gets there. The view then shows nobody holding the client: the CONNECT resumed at once
// from an older state while the holder handed over a moment later, and what the holder had delivered since
// went out again (QoS 2 under new packet ids).
//
// So a connection of a persistent session also writes "c:<id>\x00<epoch>" before its owner record: a key of
// its own, which only its tombstone supersedes, written once the connection is over — when it ends (after its
// final delivery and end records), or by the client's next connection once that has its session. A view
// holding a marker newer than every owner record it holds was compacted, and the CONNECT waits for that
// connection's hand-over (or its end) as for a known holder. Sessions that end with their connection keep no
// state to hand over and write none — unless the connection has a will, which the marker carries (below).
//
// Owed wills. The marker also carries the connection's will, and keeps it until somebody claims the
// connection's end: every claim (ClaimEnd) first writes the marker again without the will, then its end
// record (same producer, same partition: in that order, so a kill leaves a prefix of the two), and a
// connection taken over writes it again without the will as well (SettleConn). A marker that still carries a
// will (Stored.Owed) is therefore a connection whose end nobody has claimed. The processors and a restarted
// instance end only a client's newest connection from its owner record; a connection that is not the newest
// — its holder killed, and the claim that was to end it lost (a CONNECT that gave up waiting for the holder
// and was killed before its claim reached Kafka, or was superseded by the client's next CONNECT first) — was
// ended by nobody, and its will, due at once, was never published. Now such a marker is claimed like a dead
// holder's connection (Due, OwnOpen), with the will it carries: the client's next CONNECT has replaced "w:".
// A connection whose session ends with it (Clean Start 1, Session Expiry 0) writes a marker when it has a will,
// for the same reason: its holder killed before any claim, the client connected again, nothing else names it.
// A marker newer than the owner record is claimed too when the will record ("w:") is its connection's own:
// compaction kept a late end record of an older connection as the owner (endedByOther, wills.go).
// Nothing tombstones an owed marker but its own connection's end (UnmarkOlder and Forget leave it), so the
// trace stays until the will is decided.

// onConnRecord applies a "c:" record read from the sessions topic. Runs on the reader goroutine.
func (st *Store) onConnRecord(key string, value []byte, part int32) {
	id, epoch, ok := sessionkey.ParsePending(key[2:])
	if !ok {
		st.host.Warn("skipping sessions record with an unknown key", "key", key)
		return
	}
	var rec *ConnRec
	if value != nil {
		var err error
		if rec, err = Decode[ConnRec](value); err != nil {
			st.host.Warn("skipping sessions record that cannot be read", "key", key, "err", err)
			rec = &ConnRec{} // still a marker; it owes nothing
		}
	}
	st.mu.Lock()
	c := st.clients[id]
	if c == nil && value != nil {
		c = &Stored{}
		st.clients[id] = c
	}
	if c != nil {
		c.Part = part
		c.Conns = withEntry(c.Conns, epoch, struct{}{}, value != nil)
		c.Owed = withEntry(c.Owed, epoch, rec, rec != nil && rec.Will != nil)
		if c.Owed[epoch] == nil && c.OwedAfter[epoch] != 0 {
			c.OwedAfter = withEntry(c.OwedAfter, epoch, 0, false)
		}
		if value == nil && epoch > c.ConnEnded {
			c.ConnEnded = epoch
		}
		if c.empty() {
			delete(st.clients, id)
		}
	}
	// A wait for a connection that is over ends: its final records came before its marker's tombstone, as
	// before its end record, so nothing more is coming.
	var hs []*handoff
	var snap Stored
	if value == nil {
		hs = st.endWaits(id, func(w *handoff) bool { return epoch >= w.from && epoch < w.epoch })
	}
	if len(hs) > 0 {
		if c != nil {
			snap = *c
		}
		snap.ConnEnded = max(snap.ConnEnded, epoch)
	}
	st.mu.Unlock()
	for _, h := range hs {
		h.timer.Stop()
		s := snap
		h.done(&s)
	}
}

// notedAfter returns OwedAfter with a connection of the client at epoch noted, read after every owed marker
// older than it: for each, the oldest such connection is kept. st.mu is held.
func (c *Stored) notedAfter(epoch int64) map[int64]int64 {
	out := c.OwedAfter
	for e := range c.Owed {
		if e < epoch && (out[e] == 0 || epoch < out[e]) {
			out = withEntry(out, e, epoch, true)
		}
	}
	return out
}

// firstAfter is the epoch of the client's oldest connection newer than epoch that the index knows of: read
// after the owed marker of epoch (OwedAfter), marked, the owner record's, or one Next names. 0 if none. An index
// loaded from a compacted topic may know only later ones (docs/sessions.md, "Deviations and limits"). st.mu is
// held or c is a copy.
func (c *Stored) firstAfter(epoch int64) int64 {
	first := c.OwedAfter[epoch]
	note := func(e int64) {
		if e > epoch && (first == 0 || e < first) {
			first = e
		}
	}
	for e := range c.Conns {
		note(e)
	}
	note(EpochOf(c.Owner))
	note(c.Next[0])
	note(c.Next[1])
	return first
}

// NewestConn returns the newest epoch of a marked connection after epoch after and before epoch before; 0 if
// there is none.
func (c *Stored) NewestConn(after, before int64) int64 {
	var newest int64
	for e := range c.Conns {
		if e > after && e < before && e > newest {
			newest = e
		}
	}
	return newest
}

// MarkConn writes the marker of client id's connection epoch, with the connection's will (nil: none); the
// CONNECT writes it before its owner record.
func (st *Store) MarkConn(id string, epoch int64, will *WillRec) {
	st.PutKey(sessionkey.ConnKey(id, epoch), &ConnRec{V: sessionkey.Version, Instance: st.Instance, Will: will}, nil)
}

// SettleConn writes the marker of client id's connection epoch again without its will, if the index holds it
// with one: the connection's end is being claimed (ClaimEnd writes it before the claim), or the connection was
// taken over, whose will is decided by the takeover. Runs on any goroutine.
func (st *Store) SettleConn(id string, epoch int64) {
	st.mu.Lock()
	var m *ConnRec
	if c := st.clients[id]; c != nil {
		m = c.Owed[epoch]
	}
	st.mu.Unlock()
	if m != nil {
		st.PutKey(sessionkey.ConnKey(id, epoch), &ConnRec{V: sessionkey.Version, Instance: m.Instance}, nil)
	}
}

// UnmarkConn tombstones the marker of client id's connection epoch.
func (st *Store) UnmarkConn(id string, epoch int64) { st.Write(sessionkey.ConnKey(id, epoch), nil) }

// UnmarkOlder tombstones the markers that views hold of client id's connections older than epoch: the client's
// newest connection has its session now, so they are over. A marker the index holds with a will still owed
// stays: its connection's end is claimed by its holder, or by the processors once the holder is dead (Due).
func (st *Store) UnmarkOlder(id string, epoch int64, views ...*Stored) {
	st.mu.Lock()
	var owed map[int64]*ConnRec
	if c := st.clients[id]; c != nil {
		owed = c.Owed
	}
	st.mu.Unlock()
	done := map[int64]bool{}
	for _, v := range views {
		if v == nil {
			continue
		}
		for e := range v.Conns {
			if e < epoch && !done[e] && owed[e] == nil {
				done[e] = true
				st.UnmarkConn(id, e)
			}
		}
	}
}
