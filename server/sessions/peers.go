package sessions

import "time"

// Peer is an instance as its heartbeats describe it (redirect).
type Peer struct {
	Addr     string
	Draining bool
	Seen     time.Time // when its last heartbeat was read (this instance's clock)
	Since    time.Time // when its current run of heartbeats began
}

// notePeer records a heartbeat read from the sessions topic (hb nil: a tombstone, the instance stopped).
// st.mu is held by the caller.
func (st *Store) notePeer(id string, hb *HeartbeatRec, now time.Time) {
	if hb == nil {
		delete(st.peers, id)
		return
	}
	if st.peers == nil {
		st.peers = make(map[string]*Peer)
	}
	p := st.peers[id]
	if p == nil || now.Sub(p.Seen) >= st.deadAfter {
		p = &Peer{Since: now}
		st.peers[id] = p
	}
	p.Addr, p.Draining, p.Seen = hb.Addr, hb.Draining, now
}

// Peers calls fn for every instance whose last heartbeat was read, this one included, under the store's lock:
// fn must not block or call the store.
func (st *Store) Peers(fn func(id string, p Peer)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for id, p := range st.peers {
		fn(id, *p)
	}
}

// PeerOf returns instance id's last heartbeat read, if any.
func (st *Store) PeerOf(id string) (Peer, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if p := st.peers[id]; p != nil {
		return *p, true
	}
	return Peer{}, false
}
