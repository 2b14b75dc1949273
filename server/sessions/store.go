package sessions

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/kafkamux"
)

// Writer writes the sessions topic's records. Neither method blocks; done runs on a Kafka callback goroutine.
type Writer interface {
	// PutSession writes one record (value nil = tombstone), partitioned by the client id part of key.
	PutSession(key string, value []byte, done func(error))
	// PutSessionTombstone writes a tombstone carrying epoch, the connection it ends, in a record header.
	PutSessionTombstone(key string, epoch int64, done func(error))
}

// Host is what the store tells the server it serves. Every method runs on the reader goroutine unless said
// otherwise, with no lock of the store held, and must not block.
type Host interface {
	// Warn logs a warning that can repeat per client (rate-limited); Debug logs at debug level; Error logs
	// a misconfiguration.
	Warn(msg string, args ...any)
	Debug(msg string, args ...any)
	Error(msg string, args ...any)
	// WriteFailed counts a sessions record Kafka failed (any goroutine).
	WriteFailed()
	// NoteForeign: a record of another instance was read; called before the record is acted on.
	NoteForeign()
	// OwnerChanged: a connected owner record o of client id was read (a takeover signal).
	OwnerChanged(id string, o *OwnerRec)
	// ConnectionEnded: the first end record of an epoch and round was read, once the topic was loaded.
	ConnectionEnded(id string, end *OwnerRec)
	// ReassertOwner: a late record of an older connection of id was read after this instance's owner record
	// o of the connection it holds; the server writes o again if it still holds that connection.
	ReassertOwner(id string, o *OwnerRec)
	// HeldEpoch is the epoch of the connection of id this instance holds, 0 if none.
	HeldEpoch(id string) int64
}

// Stored is what the sessions topic says of one client.
type Stored struct {
	Sess        *SessionRec
	Owner       *OwnerRec
	Deliv       *DeliveryRec
	Will        *WillRec
	Q2          map[uint16]struct{}    // inbound QoS 2 ids waiting for PUBREL ("q:" keys); replaced, never changed in place
	Pending     map[int64]*PendingWill // wills due at once, claimed, not yet published ("p:" keys), by epoch; replaced, never changed in place
	Conns       map[int64]struct{}     // epochs of persistent connections marked as maybe open ("c:" keys, conns.go); replaced, never changed in place
	ConnEnded   int64                  // the newest epoch whose marker's tombstone was read: that connection is over
	Owed        map[int64]*ConnRec     // markers that still carry their connection's will: no claim of its end written (conns.go); replaced, never changed in place
	OwedAfter   map[int64]int64        // an owed marker's epoch → the oldest connection of the client read after it (owedClaim); replaced, never changed in place
	Part        int32                  // the client's sessions-topic partition
	Ended       [2]int64               // epoch and round of the first end record seen for the latest epoch
	Next        [2]int64               // an ended connection's epoch owing a delayed will, and the first connection after its end (connectAfter)
	EndedBefore [2]int64               // the one before: a second claim of that end, read after a newer end, is not first
}

// Store is the instance's view of the sessions topic, fed by the shared reader from the topic's start, and
// its writer. mu guards the maps; it is taken alone (never with a session lock held inside or outside it).
type Store struct {
	w         Writer
	host      Host
	deadAfter time.Duration // an instance whose heartbeat is older is dead

	Instance    string // this instance's id: --instance-id, stable across restarts, or random; read-only
	Incarnation string // random per start: tells this run's heartbeats from another process's with the same id; read-only

	// ClaimHook, for tests, runs between a pending will and its claim; true stands for the process killed there.
	ClaimHook atomic.Pointer[func() bool]

	mu        sync.Mutex
	clients   map[string]*Stored
	waiters   map[string][]*handoff // CONNECTs waiting for a previous connection's hand-over or end, oldest first
	instances map[string]time.Time  // instance id → when its last heartbeat was read (this instance's clock)
	beats     map[string]int64      // instance id → the time its last heartbeat read says it was written (unix ms, its clock)
	peers     map[string]*Peer      // instance id → its advertised address and liveness, for redirect (peers.go)
	ready     bool                  // the topic has been read to the end once: end records are acted on
	fences    map[Key]*fence        // CONNECTs waiting to read their own owner record back (consistency.go)
	claims    map[Key]time.Time     // this instance's claims of wills due at once → when Kafka acknowledged them, zero before (pending.go)
}

// handoff is a CONNECT waiting for the previous owner's final delivery record.
type handoff struct {
	epoch int64         // the waiting CONNECT's
	from  int64         // the previous owner's: its end record, or a newer one's, ends the wait
	done  func(*Stored) // called once, with the store's view, on the handoff or its timeout
	timer *time.Timer
}

// NewStore returns the view of an instance named instance ("" = a random id) that counts an instance dead
// deadAfter after its last heartbeat read, writing through w and telling host.
func NewStore(instance string, deadAfter time.Duration, w Writer, host Host) *Store {
	var b [6]byte
	_, _ = rand.Read(b[:])
	if instance == "" {
		instance = hex.EncodeToString(b[:])
	}
	return &Store{w: w, host: host, deadAfter: deadAfter, Instance: instance, Incarnation: hex.EncodeToString(b[:]), clients: make(map[string]*Stored),
		waiters: make(map[string][]*handoff), instances: make(map[string]time.Time), beats: make(map[string]int64)}
}

// empty reports whether the index needs no entry for the client: a session that ends with its connection
// keeps none, its owner records only signal takeovers (handled as they are read).
func (c *Stored) empty() bool {
	return c.Sess == nil && c.Deliv == nil && c.Will == nil && c.Q2 == nil && len(c.Pending) == 0 && len(c.Conns) == 0 && len(c.Owed) == 0 &&
		(c.Owner == nil || c.Owner.Expiry == 0)
}

// OnRaw applies one record of the sessions topic as the shared reader hands it on. Runs on the reader
// goroutine; must not block.
func (st *Store) OnRaw(r *kafkamux.Record) {
	var epoch int64 // of the connection a tombstone ends (sessionkey.EpochHeader); 0 = not said
	if r.Value == nil {
		for _, h := range r.Headers {
			if h.Key == sessionkey.EpochHeader {
				epoch, _ = sessionkey.ParseEpoch(h.Value)
			}
		}
	}
	st.onRecord(string(r.Key), r.Value, r.Partition, epoch)
}

// onRecord applies one sessions-topic record; tombEpoch is the epoch of the connection a tombstone ends, 0 if
// it does not say. It runs on the reader goroutine and must not block.
func (st *Store) onRecord(key string, value []byte, part int32, tombEpoch int64) {
	kind, id, ok := sessionkey.Split(key)
	if !ok {
		st.host.Warn("skipping sessions record with an unknown key", "key", key)
		return
	}
	if kind == sessionkey.QoS2 {
		st.onQoS2Record(key, value, part)
		return
	}
	if kind == sessionkey.Pending {
		st.onPendingRecord(key, value, part)
		return
	}
	if kind == sessionkey.Conn {
		st.onConnRecord(key, value, part)
		return
	}
	if kind == sessionkey.Instance {
		hb, err := Decode[HeartbeatRec](value)
		if err != nil {
			st.host.Warn("heartbeat record cannot be read; counted as alive without an advertised address", "key", key, "err", err)
			hb = &HeartbeatRec{}
		}
		twin := id == st.Instance && value != nil && hb.Run != "" && hb.Run != st.Incarnation && st.ready
		if (id != st.Instance && value != nil) || twin {
			st.host.NoteForeign() // another instance is alive (the server's unrecorded connections)
		}
		if twin {
			st.host.Error("another Ferry instance runs with this instance's id: give each instance its own --instance-id",
				"instance", id)
		}
		st.mu.Lock()
		now := time.Now()
		if value == nil {
			delete(st.instances, id)
			delete(st.beats, id)
		} else {
			st.instances[id] = now
			if hb.At > 0 {
				st.beats[id] = hb.At
			}
		}
		st.notePeer(id, hb, now)
		st.mu.Unlock()
		return
	}
	st.mu.Lock()
	c := st.clients[id]
	if c == nil {
		if value == nil {
			st.mu.Unlock()
			return
		}
		c = &Stored{}
		st.clients[id] = c
	}
	c.Part = part
	var err error
	var fenced *fence
	var prev Stored
	var o *OwnerRec        // the owner record read, if kind is kindOwner
	var reassert *OwnerRec // this instance's owner record, to write again after a late record (Host.ReassertOwner)
	orphan := false        // this instance's claim lost, and the will it wrote as pending is nobody's
	switch kind {
	case sessionkey.Session:
		c.Sess, err = Decode[SessionRec](value)
	case sessionkey.Owner:
		o, err = Decode[OwnerRec](value)
		if o != nil {
			st.sawAlive(o.Instance)
		}
		if f := st.takeFence(id, o); f != nil {
			fenced, prev = f, *c // the view the CONNECT decides on: everything before its own record
		}
		late := c.Owner != nil && ((o != nil && o.Epoch < c.Owner.Epoch) || (o == nil && tombEpoch != 0 && tombEpoch < c.Owner.Epoch))
		if e := c.Owner; !late && o != nil && o.Connected && e != nil && !e.Connected && e.Will && !e.Now && o.Epoch > e.Epoch &&
			c.Next[0] != e.Epoch {
			c.Next = [2]int64{e.Epoch, o.Epoch} // whether it came within the delay decides the will (DelayedClaim)
		}
		if o != nil && o.Connected {
			c.OwedAfter = c.notedAfter(o.Epoch)
		}
		if !late {
			c.Owner = o
		} else if st.ready {
			// The end record (or the tombstone) of a dropped connection can reach Kafka after the client's
			// CONNECT elsewhere (the closing instance's writes were slow): the client is still connected there.
			// Taken as the owner, it made the next CONNECT skip the hand-over of the newer connection.
			st.host.Debug("sessions index keeps the newer owner over a late record of an older connection",
				"client", id, "late_epoch", max(tombEpoch, EpochOf(o)), "connected", o != nil && o.Connected, "owner_epoch", c.Owner.Epoch)
			if c.Owner.Connected && c.Owner.Instance == st.Instance {
				// It is also the key's last record now, which is all compaction keeps: this instance, holding
				// the newer connection, writes that connection's record again (Host.ReassertOwner).
				mine := *c.Owner
				reassert = &mine
			}
		}
	case sessionkey.Delivery:
		var d *DeliveryRec
		d, err = Decode[DeliveryRec](value)
		if d == nil || c.Deliv == nil || d.Saved >= c.Deliv.Saved || err != nil {
			c.Deliv = d // an older record read after this instance's own newer write is ignored
		}
	case sessionkey.Will:
		c.Will, err = Decode[WillRec](value)
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	var end *OwnerRec
	if o != nil && !o.Connected {
		first := false
		if k := [2]int64{o.Epoch, int64(o.Round)}; c.Ended != k && c.EndedBefore != k {
			c.EndedBefore, c.Ended = c.Ended, k // the first end record of this epoch and round: it decides the will
			first = true
			if st.ready {
				end = o
			}
		}
		orphan = c.claimPending(o, first, st.Instance) && st.ready
	}
	if c.empty() {
		// A session that ends with its connection needs no index entry: its owner records only signal
		// takeovers (handled below), so an idle clean-session client costs this instance nothing here.
		delete(st.clients, id)
	}
	hs := st.endWaits(id, func(w *handoff) bool {
		switch {
		case kind == sessionkey.Delivery && c.Deliv != nil && c.Deliv.Epoch == w.epoch:
			return true // the previous owner handed the session over
		case o != nil && !o.Connected && o.Epoch >= w.from && o.Epoch < w.epoch:
			// The previous connection ended (its final delivery record came before its end record), or the
			// partition's processor ended it for its dead instance: nothing more is coming. The end of an
			// even older connection says nothing about the one the CONNECT waits for.
			return true
		}
		return false
	})
	snapshot := *c
	st.mu.Unlock()
	if o != nil && o.Instance != st.Instance {
		st.host.NoteForeign() // before OwnerChanged below looks the client up
	}
	if err != nil {
		// A corrupt or newer record is logged and skipped: the session starts clean, the instance goes on.
		st.host.Warn("skipping sessions record that cannot be read", "key", key, "err", err)
	}
	if fenced != nil {
		st.ownRecordRead(id, o.Epoch, fenced, &prev)
	}
	if reassert != nil {
		st.host.ReassertOwner(id, reassert)
	}
	if orphan {
		st.Write(sessionkey.PendingKey(id, o.Epoch), nil)
	}
	for _, h := range hs {
		h.timer.Stop()
		snap := snapshot
		h.done(&snap)
	}
	if o != nil && o.Connected {
		st.host.OwnerChanged(id, o) // it hands over only connections older than o, and unrecorded ones
	}
	if end != nil {
		st.host.ConnectionEnded(id, end)
	}
}

// sawAlive notes a record that instance inst wrote — an owner record names its writer, a pending will its
// claimer — as a heartbeat of inst, if inst is known: liveness is only judged from heartbeats read. An instance
// restarted under the id of one that died writes its claims (OwnOpen) before its first heartbeat, and a
// heartbeat can be committed a transaction after the claims: another instance reading a claim of a will won by
// "a dead instance" claimed the next round and published the will a second time. st.mu is held.
func (st *Store) sawAlive(inst string) {
	if _, known := st.instances[inst]; known && inst != st.Instance {
		st.instances[inst] = time.Now()
	}
}

// update applies fn to client id's index entry under st.mu, creating the entry if create is set (a record
// with a value) and dropping it when fn leaves it empty. Runs on the reader goroutine.
func (st *Store) update(id string, part int32, create bool, fn func(c *Stored)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.clients[id]
	if c == nil {
		if !create {
			return
		}
		c = &Stored{}
		st.clients[id] = c
	}
	c.Part = part
	fn(c)
	if c.empty() {
		delete(st.clients, id)
	}
}

// Lookup returns a copy of what the topic says of id.
func (st *Store) Lookup(id string) (Stored, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.clients[id]
	if c == nil {
		return Stored{}, false
	}
	return *c, true
}

// AwaitHandoff registers a CONNECT that waits for the delivery record the previous owner writes when it
// hands the session over at epoch, or for the end of connection from (or of a newer one before epoch); done
// runs once, with what the store knows then, or after timeout. Several CONNECTs of a client can wait at once,
// each for the connection before it: the newest CONNECT wins (docs/sessions.md, "The newest CONNECT wins"),
// but an older one still ends its own wait first, so the hand-over it waits for reaches the newer one.
func (st *Store) AwaitHandoff(id string, epoch, from int64, timeout time.Duration, done func(*Stored)) {
	h := &handoff{epoch: epoch, from: from, done: done}
	st.mu.Lock()
	st.waiters[id] = append(st.waiters[id], h)
	h.timer = time.AfterFunc(timeout, func() {
		st.mu.Lock()
		if len(st.endWaits(id, func(w *handoff) bool { return w == h })) == 0 {
			st.mu.Unlock()
			return // ended meanwhile
		}
		var snap *Stored
		if c := st.clients[id]; c != nil {
			cp := *c
			snap = &cp
		}
		st.mu.Unlock()
		st.host.Warn("previous owner of a session did not hand it over in time; resuming from the last stored state", "client", id)
		if snap == nil {
			snap = &Stored{}
		}
		done(snap)
	})
	st.mu.Unlock()
}

// endWaits removes and returns the hand-over waits of client id that end says are over. st.mu is held.
func (st *Store) endWaits(id string, end func(*handoff) bool) []*handoff {
	ws := st.waiters[id]
	var ended, keep []*handoff
	for _, w := range ws {
		if end(w) {
			ended = append(ended, w)
		} else {
			keep = append(keep, w)
		}
	}
	if len(ended) > 0 {
		if len(keep) == 0 {
			delete(st.waiters, id)
		} else {
			st.waiters[id] = keep
		}
	}
	return ended
}

// Put writes one record of a client; value nil writes a tombstone.
func (st *Store) Put(kind, id string, v any) { st.PutThen(kind, id, v, nil) }

// PutThen is put with done, which runs on a Kafka callback goroutine once Kafka acknowledged the record
// (err nil) or failed it; it must not block. done may be nil.
func (st *Store) PutThen(kind, id string, v any, done func(error)) {
	st.PutKey(sessionkey.Key(kind, id), v, done)
}

// PutKey is putThen for a record named by its full key.
func (st *Store) PutKey(key string, v any, done func(error)) {
	var value []byte
	if v != nil {
		var err error
		if value, err = json.Marshal(v); err != nil {
			panic("BUG: cannot encode sessions record: " + err.Error())
		}
	}
	// No write-through into this instance's own index: it learns the record when the reader hands it back,
	// like every other instance, so it never decides on a record Kafka refused. A CONNECT here waits to read
	// its own owner record back (consistency.go), which this producer wrote after this one: it sees it.
	st.writeThen(key, value, done)
}

// Write produces one sessions-topic record by its full key; a failure is counted and logged.
func (st *Store) Write(key string, value []byte) { st.writeThen(key, value, nil) }

// writeThen is write with done (may be nil), run on a Kafka callback goroutine once the record is
// acknowledged or failed.
func (st *Store) writeThen(key string, value []byte, done func(error)) {
	st.w.PutSession(key, value, func(err error) {
		if err != nil {
			st.host.WriteFailed()
			st.host.Warn("cannot write sessions record", "key", key, "err", err)
		}
		if done != nil {
			done(err)
		}
	})
}

// Forget tombstones every key of a client, so nothing accumulates in Kafka; the owner key's tombstone carries
// epoch, the connection it ends (onRaw). With all false, only the owner key and the keys the topic is known to
// hold are tombstoned: a session that ended with its connection wrote nothing else.
func (st *Store) Forget(id string, epoch int64, all bool) {
	st.mu.Lock()
	c := st.clients[id]
	hasSess, hasDeliv := c != nil && c.Sess != nil, c != nil && c.Deliv != nil
	hasWill := c != nil && c.Will != nil && c.Will.Epoch == epoch // a newer connection's will is not this end's
	var q2 map[uint16]struct{}
	var conns map[int64]struct{}
	var owed map[int64]*ConnRec
	if c != nil {
		q2, c.Q2 = c.Q2, nil
		conns, owed = c.Conns, c.Owed
	}
	st.mu.Unlock()
	for pid := range q2 {
		st.Write(sessionkey.QoS2Key(id, pid), nil)
	}
	for e := range conns {
		if owed[e] == nil || e == epoch { // an older connection's will still owed keeps its marker (conns.go)
			st.UnmarkConn(id, e)
		}
	}
	if all || hasSess {
		st.Put(sessionkey.Session, id, nil)
	}
	if all || hasDeliv {
		st.Put(sessionkey.Delivery, id, nil)
	}
	if all || hasWill {
		st.Put(sessionkey.Will, id, nil) // a will published at once keeps its record until here (the server publishes it from its pending record)
	}
	st.EndOwner(id, epoch)
}

// EndOwner tombstones the owner key of client id, whose newest connection had epoch.
func (st *Store) EndOwner(id string, epoch int64) {
	key := sessionkey.Key(sessionkey.Owner, id)
	st.w.PutSessionTombstone(key, epoch, func(err error) {
		if err != nil {
			st.host.WriteFailed()
			st.host.Warn("cannot write sessions record", "key", key, "err", err)
		}
	})
}

// Count returns the number of clients the sessions topic knows.
func (st *Store) Count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.clients)
}

// SetReady notes that the topic has been read to its end once: from now on, end records decide wills.
func (st *Store) SetReady() {
	st.mu.Lock()
	st.ready = true
	st.mu.Unlock()
}

// Expired reports whether the stored session ended while its client was away.
func (c *Stored) Expired(now time.Time) bool {
	o := c.Owner
	if o == nil || o.Connected || o.Expiry == 0xFFFFFFFF {
		return false
	}
	return now.UnixMilli() > o.At+int64(o.Expiry)*1000
}
