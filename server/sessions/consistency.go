package sessions

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
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

// ErrSessionsWait is the error of a CONNECT whose owner record was not read back within SessionsReadWait.
var ErrSessionsWait = errors.New("the sessions topic was not read up to the CONNECT's own record in time")

// Key names one connection of a client: its id and the epoch of its CONNECT.
type Key struct {
	ID    string
	Epoch int64
}

// fence is a CONNECT waiting to read its own owner record back. done is nil once the CONNECT was answered
// without it (timeout): the entry stays until the record is read, so the connection it announced is ended.
type fence struct {
	done  func(prev *Stored, err error)
	timer *time.Timer
}

// AwaitOwnRecord registers the fence of a CONNECT before its owner record is written. done runs once: on the
// reader goroutine with the index's view of the client just before the record (it must not block), or with
// an error on a Kafka callback or timer goroutine if the record failed or did not come back within wait.
func (st *Store) AwaitOwnRecord(id string, epoch int64, wait time.Duration, done func(prev *Stored, err error)) {
	k := Key{id, epoch}
	f := &fence{done: done}
	st.mu.Lock()
	if st.fences == nil {
		st.fences = make(map[Key]*fence)
	}
	st.fences[k] = f
	f.timer = time.AfterFunc(wait, func() {
		st.mu.Lock()
		d := f.done
		f.done = nil // abandoned: the record, if it comes, is ended (ownRecordRead)
		st.mu.Unlock()
		if d != nil {
			d(nil, ErrSessionsWait)
		}
	})
	st.mu.Unlock()
}

// WriteOwnRecord writes the owner record a fence waits for; a failure answers the fence at once.
func (st *Store) WriteOwnRecord(id string, rec *OwnerRec) {
	value, err := json.Marshal(rec)
	if err != nil {
		panic("BUG: cannot encode sessions record: " + err.Error())
	}
	k := Key{id, rec.Epoch}
	st.w.PutSession(sessionkey.Key(sessionkey.Owner, id), value, func(err error) {
		if err == nil {
			return
		}
		st.host.WriteFailed()
		st.host.Warn("cannot write sessions record", "key", sessionkey.Key(sessionkey.Owner, id), "err", err)
		st.mu.Lock()
		f := st.fences[k]
		delete(st.fences, k)
		var d func(*Stored, error)
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
func (st *Store) takeFence(id string, o *OwnerRec) *fence {
	if len(st.fences) == 0 || o == nil || !o.Connected || o.Instance != st.Instance {
		return nil
	}
	k := Key{id, o.Epoch}
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
func (st *Store) ownRecordRead(id string, epoch int64, f *fence, prev *Stored) {
	st.mu.Lock()
	d := f.done
	f.done = nil
	newer := false
	for k := range st.fences {
		newer = newer || (k.ID == id && k.Epoch > epoch)
	}
	st.mu.Unlock()
	if d != nil {
		d(prev, nil)
		return
	}
	if newer || st.host.HeldEpoch(id) > epoch {
		return
	}
	if prev.Owner == nil || (prev.Owner.Expiry == 0 && prev.Sess == nil) {
		st.EndOwner(id, epoch) // nothing to keep
		return
	}
	st.Put(sessionkey.Owner, id, &OwnerRec{V: sessionkey.Version, Instance: st.Instance, Epoch: epoch, At: time.Now().UnixMilli(),
		Expiry: prev.Owner.Expiry})
}

// Alive reports whether instance inst's heartbeat was read within the death window: a CONNECT does not wait
// for a dead instance to hand a session over (its processor ends the old connection; wills.go).
func (st *Store) Alive(inst string) bool {
	st.mu.Lock()
	seen, ok := st.instances[inst]
	st.mu.Unlock()
	return !ok || time.Since(seen) < st.deadAfter // never seen: perhaps its first heartbeat is on its way
}

// Decision is what a CONNECT's view — the index just before its own owner record — says of the client's
// previous connection.
type Decision struct {
	Held      bool  // a live instance holds the client's connection (the view's owner record)
	Compacted bool  // the view lacks the owner record of a connection its delivery record names
	Marked    int64 // the newest marked connection after the owner record's and before the CONNECT's; 0 none
	// From is the newest connection to wait for the hand-over of — its end ends the wait, an older one's does
	// not — 0 if the CONNECT waits for nobody.
	From int64
}

// Decide takes the decision of a CONNECT at epoch on prev, the index just before its own owner record (the
// caller handles a newer CONNECT that came first, prev's owner). local: this instance holds the client's
// session itself. deciding: prev's owner record is an older CONNECT of this instance that has not been
// answered yet — waiting for its own previous holder, say. It is superseded by this one and will be refused
// (docs/sessions.md, "The newest CONNECT wins"), but only once its own wait ends: this CONNECT waits for that
// end (its marker's tombstone) as for a holder's hand-over, so the hand-over the older one waited for reaches
// this one.
func (st *Store) Decide(prev *Stored, epoch int64, local, deciding bool) Decision {
	o := prev.Owner
	var d Decision
	d.Held = !local && o != nil && o.Connected && ((o.Instance != st.Instance && st.Alive(o.Instance)) ||
		(o.Instance == st.Instance && deciding))
	// A view holding a delivery record of a connection newer than every owner record it holds is compacted:
	// a connection's owner record always comes before the delivery records naming it (its CONNECT writes it
	// first; a hand-over to it is written on reading it), so compaction removed it before this instance's
	// reader got there — superseded by this CONNECT's own record. kfake compacts everything but a partition's
	// last batch (docs/sessions.md, "Compaction"). That connection may still be held elsewhere, delivering:
	// wait for its hand-over as for a known holder, else its deliveries since that record are sent again.
	d.Compacted = !local && !d.Held && prev.Deliv != nil && prev.Deliv.Epoch > EpochOf(o) && prev.Deliv.Epoch < epoch &&
		prev.ConnEnded < prev.Deliv.Epoch // unless that connection's marker was read tombstoned: it is over (conns.go)
	// The same from a connection marker (conns.go): it stays until its connection is over, whatever
	// compaction removed of the connection's other records meanwhile.
	if !local {
		d.Marked = prev.NewestConn(EpochOf(o), epoch)
	}
	if d.Held {
		d.From = o.Epoch
	}
	if d.Compacted {
		d.From = prev.Deliv.Epoch // the connection the delivery record names
	}
	d.From = max(d.From, d.Marked)
	return d
}
