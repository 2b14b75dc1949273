package server

import (
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/server/sessions"
)

// Pending wills (a will due at once that survives the death of the instance that won it): server/sessions,
// pending.go. This file publishes them.

// publishPendingOf publishes the pending will that end record end (this instance's, the first of its epoch
// and round) won. Runs on the reader goroutine; must not block.
func (srv *Server) publishPendingOf(id string, end *sessions.OwnerRec) {
	st, _ := srv.store.Lookup(id)
	p := st.Pending[end.Epoch]
	if p == nil {
		srv.warn("will due at once not published: its pending record was not read before its claim", "client", id)
		return
	}
	srv.debug("publishing a will due at once", "client", id, "epoch", end.Epoch, "round", end.Round)
	// The "w:" record stays: a claim of "now" is never published from it (the processor and a restart publish
	// the pending record), and a tombstone written now could land after the record of the client's next CONNECT
	// with a will — which replaces this one or deletes it itself (completeConnect), as the end of the session
	// does (forget).
	go srv.publishPending(id, end.Epoch, p.Will) // a payload check may ask the schema registry
}

// publishPending publishes pending will w of client id's connection epoch and tombstones its record with it
// (sendWillWith). Runs on any goroutine but the reader's.
func (srv *Server) publishPending(id string, epoch int64, w *sessions.WillRec) {
	if h := srv.willHook.Load(); h != nil && (*h)() {
		return
	}
	if d := srv.cfg.willHold; d > 0 {
		time.Sleep(d) // fault testing (WillHold): this goroutine is the will's own
	}
	srv.sendWillWith(w.Message(id, time.Now()), sessionkey.PendingKey(id, epoch))
}

// reassertOwner writes owner record o of client id again — this instance's record of the connection it holds
// — after a record of an older connection of the client was read after it: that record is the key's last one
// now, and compaction keeps only the last, so an instance reading the topic from its start would see the
// client disconnected (or not there) while it is connected here. Written under the session's lock and only
// while the connection is held: the end of the connection (endSession, which takes the lock first) is written
// after it. A CONNECT of this instance still being decided (newest.go) is written again too, under the
// registry lock, which its attach takes: its own end record comes after it as well. Runs on the reader
// goroutine; PutSession does not block.
func (srv *Server) reassertOwner(id string, o *sessions.OwnerRec) {
	srv.regMu.Lock()
	if srv.decidingLocked(id, o.Epoch) {
		defer srv.regMu.Unlock()
		if h := srv.reassertHook.Load(); h != nil && (*h)() {
			return
		}
		srv.debug("owner record of a CONNECT being decided written again after a late record of an older connection",
			"client", id, "epoch", o.Epoch)
		srv.store.Put(sessionkey.Owner, id, o)
		return
	}
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
	if h := srv.reassertHook.Load(); h != nil && (*h)() {
		return
	}
	srv.debug("owner record written again after a late record of an older connection", "client", id, "epoch", o.Epoch)
	srv.store.Put(sessionkey.Owner, id, o)
}
