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
// state to hand over and write none.

// onConnRecord applies a "c:" record read from the sessions topic. Runs on the reader goroutine.
func (st *Store) onConnRecord(key string, value []byte, part int32) {
	id, epoch, ok := sessionkey.ParsePending(key[2:])
	if !ok {
		st.host.Warn("skipping sessions record with an unknown key", "key", key)
		return
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
		if value == nil && epoch > c.ConnEnded {
			c.ConnEnded = epoch
		}
		if c.empty() {
			delete(st.clients, id)
		}
	}
	var h *handoff
	var snap Stored
	if w := st.waiters[id]; w != nil && value == nil && epoch >= w.from && epoch < w.epoch {
		// The connection waited for is over, and its final records came before its marker's tombstone:
		// nothing more is coming, as after its end record.
		h = w
		delete(st.waiters, id)
		if c != nil {
			snap = *c
		}
		snap.ConnEnded = max(snap.ConnEnded, epoch)
	}
	st.mu.Unlock()
	if h != nil {
		h.timer.Stop()
		h.done(&snap)
	}
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

// MarkConn writes the marker of client id's connection epoch; the CONNECT writes it before its owner record.
func (st *Store) MarkConn(id string, epoch int64) {
	st.PutKey(sessionkey.ConnKey(id, epoch), &ConnRec{V: sessionkey.Version, Instance: st.Instance}, nil)
}

// UnmarkConn tombstones the marker of client id's connection epoch.
func (st *Store) UnmarkConn(id string, epoch int64) { st.Write(sessionkey.ConnKey(id, epoch), nil) }

// UnmarkOlder tombstones the markers that views hold of client id's connections older than epoch: the client's
// newest connection has its session now, so they are over.
func (st *Store) UnmarkOlder(id string, epoch int64, views ...*Stored) {
	done := map[int64]bool{}
	for _, v := range views {
		if v == nil {
			continue
		}
		for e := range v.Conns {
			if e < epoch && !done[e] {
				done[e] = true
				st.UnmarkConn(id, e)
			}
		}
	}
}
