package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
	"github.com/ferrymq/ferry/kafkamux"
)

// The sessions topic (compacted) holds every per-client record, keyed "<kind>:<client id>" so a Kafka tool
// can read it and the kind never clashes with an id (documented in docs/sessions.md). All keys of one client
// share a partition: they are partitioned by the client id alone. The key format is internal/sessionkey's,
// shared with kafkamux's partitioner; the short names below are this package's for it.
const (
	kindSession  = sessionkey.Session
	kindOwner    = sessionkey.Owner
	kindDelivery = sessionkey.Delivery // inbound QoS 2 ids have their own kind, sessionkey.QoS2 (qos2.go)
	kindWill     = sessionkey.Will
	kindInstance = sessionkey.Instance
	recVersion   = sessionkey.Version
)

func storeKey(kind, id string) string { return sessionkey.Key(kind, id) }

// sessionRec is the value of an "s:" key.
type sessionRec struct {
	V      int      `json:"v"`
	Expiry uint32   `json:"expiry"` // seconds the session outlives its connection
	Subs   []subRec `json:"subs"`
}

type subRec struct {
	F   string `json:"f"`
	Q   byte   `json:"q"`
	NL  bool   `json:"nl,omitempty"`
	RAP bool   `json:"rap,omitempty"`
	RH  byte   `json:"rh,omitempty"`
	ID  uint32 `json:"id,omitempty"`
}

// ownerRec is the value of an "o:" key, written at every CONNECT and at the end of a connection.
type ownerRec struct {
	V         int    `json:"v"`
	Instance  string `json:"instance"`
	Epoch     int64  `json:"epoch"` // unix nanoseconds of the CONNECT; orders owners
	Connected bool   `json:"connected"`
	At        int64  `json:"at"` // unix milliseconds of the write; for an end record, when the connection ended
	Expiry    uint32 `json:"expiry"`
	// End records (connected false): whether the connection's will is due, and the claim round. The first end
	// record of an epoch and round in the partition's log decides which instance publishes the will.
	Will  bool `json:"will,omitempty"`
	Round int  `json:"round,omitempty"`
	// Now: the will was due when the connection ended (Will Delay 0, or a session that ends with it); the
	// claimer wrote it as "p:<id>\x00<epoch>" before this record, and it stays there until published
	// (wills_pending.go).
	Now bool `json:"now,omitempty"`
}

// deliveryRec is the value of a "d:" key: where the session's delivery stands in the messages topic.
type deliveryRec struct {
	V        int              `json:"v"`
	Epoch    int64            `json:"epoch"`   // the owner epoch the state was handed to (takeover) or written by
	Offsets  map[string]int64 `json:"offsets"` // "<partition>" (messages topic) or "<routed topic>/<partition>" → first offset not completed
	Out      []outRec         `json:"out,omitempty"`
	Complete bool             `json:"complete"` // written when the connection ended (not a periodic save)
	Saved    int64            `json:"saved"`    // unix nanoseconds of the write: a reader keeps the newest
}

// outRec is one outbound message the client had not completed.
type outRec struct {
	ID       uint16 `json:"id"`
	Released bool   `json:"released,omitempty"` // QoS 2: PUBREC received, PUBREL sent
	T        string `json:"t,omitempty"`        // routed Kafka topic; absent = the messages topic
	P        int32  `json:"p"`
	O        int64  `json:"o"`
}

// stored is what the sessions topic says of one client.
type stored struct {
	sess        *sessionRec
	owner       *ownerRec
	deliv       *deliveryRec
	will        *willRec
	q2          map[uint16]struct{}    // inbound QoS 2 ids waiting for PUBREL ("q:" keys); replaced, never changed in place
	pending     map[int64]*pendingWill // wills due at once, claimed, not yet published ("p:" keys), by epoch; replaced, never changed in place
	conns       map[int64]struct{}     // epochs of persistent connections marked as maybe open ("c:" keys, conns.go); replaced, never changed in place
	connEnded   int64                  // the newest epoch whose marker's tombstone was read: that connection is over
	part        int32                  // the client's sessions-topic partition
	ended       [2]int64               // epoch and round of the first end record seen for the latest epoch
	endedBefore [2]int64               // the one before: a second claim of that end, read after a newer end, is not first
}

// store is the instance's view of the sessions topic, fed by the shared reader from the topic's start, and
// its writer. mu guards the maps; it is taken alone (never with a session lock held inside or outside it).
type store struct {
	srv         *Server
	instance    string // this instance's id: --instance-id, stable across restarts, or random
	incarnation string // random per start: tells this run's heartbeats from another process's with the same id

	mu        sync.Mutex
	clients   map[string]*stored
	waiters   map[string]*handoff    // connections waiting for another instance to hand a session over
	instances map[string]time.Time   // instance id → when its last heartbeat was read (this instance's clock)
	peers     map[string]*peer       // instance id → its advertised address and liveness, for redirect (redirect.go)
	ready     bool                   // the topic has been read to the end once: end records are acted on
	fences    map[fenceKey]*fence    // CONNECTs waiting to read their own owner record back (consistency.go)
	claims    map[fenceKey]time.Time // this instance's claims of wills due at once → when Kafka acknowledged them, zero before (wills_pending.go)

	lone lone // whether no other instance is alive: unrecorded connections (alone.go)
}

// handoff is a CONNECT waiting for the previous owner's final delivery record.
type handoff struct {
	epoch int64         // the waiting CONNECT's
	from  int64         // the previous owner's: its end record, or a newer one's, ends the wait
	done  func(*stored) // called once, with the store's view, on the handoff or its timeout
	timer *time.Timer
}

func newStore(srv *Server) *store {
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := srv.cfg.instanceID
	if id == "" {
		id = hex.EncodeToString(b[:])
	}
	return &store{srv: srv, instance: id, incarnation: hex.EncodeToString(b[:]), clients: make(map[string]*stored),
		waiters: make(map[string]*handoff), instances: make(map[string]time.Time)}
}

// empty reports whether the index needs no entry for the client: a session that ends with its connection
// keeps none, its owner records only signal takeovers (handled as they are read).
func (c *stored) empty() bool {
	return c.sess == nil && c.deliv == nil && c.will == nil && c.q2 == nil && len(c.pending) == 0 && len(c.conns) == 0 &&
		(c.owner == nil || c.owner.Expiry == 0)
}

// onRaw applies one record of the sessions topic as the shared reader hands it on. Runs on the reader
// goroutine; must not block.
func (st *store) onRaw(r *kafkamux.Record) {
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
func (st *store) onRecord(key string, value []byte, part int32, tombEpoch int64) {
	kind, id, ok := sessionkey.Split(key)
	if !ok {
		st.srv.warn("skipping sessions record with an unknown key", "key", key)
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
	if kind == kindInstance {
		hb, err := decodeRec[heartbeatRec](value)
		if err != nil {
			st.srv.warn("heartbeat record cannot be read; counted as alive without an advertised address", "key", key, "err", err)
			hb = &heartbeatRec{}
		}
		twin := id == st.instance && value != nil && hb.Run != "" && hb.Run != st.incarnation && st.ready
		if (id != st.instance && value != nil) || twin {
			st.srv.noteForeign() // another instance is alive (alone.go)
		}
		if twin {
			st.srv.cfg.log.Error("another Ferry instance runs with this instance's id: give each instance its own --instance-id",
				"instance", id)
		}
		st.mu.Lock()
		now := time.Now()
		if value == nil {
			delete(st.instances, id)
		} else {
			st.instances[id] = now
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
		c = &stored{}
		st.clients[id] = c
	}
	c.part = part
	var err error
	var fenced *fence
	var prev stored
	var o *ownerRec        // the owner record read, if kind is kindOwner
	var reassert *ownerRec // this instance's owner record, to write again after a late record (reassertOwner)
	orphan := false        // this instance's claim lost, and the will it wrote as pending is nobody's
	switch kind {
	case kindSession:
		c.sess, err = decodeRec[sessionRec](value)
	case kindOwner:
		o, err = decodeRec[ownerRec](value)
		if o != nil {
			st.sawAlive(o.Instance)
		}
		if f := st.takeFence(id, o); f != nil {
			fenced, prev = f, *c // the view the CONNECT decides on: everything before its own record
		}
		late := c.owner != nil && ((o != nil && o.Epoch < c.owner.Epoch) || (o == nil && tombEpoch != 0 && tombEpoch < c.owner.Epoch))
		if !late {
			c.owner = o
		} else if st.ready {
			// The end record (or the tombstone) of a dropped connection can reach Kafka after the client's
			// CONNECT elsewhere (the closing instance's writes were slow): the client is still connected there.
			// Taken as the owner, it made the next CONNECT skip the hand-over of the newer connection.
			st.srv.debug("sessions index keeps the newer owner over a late record of an older connection",
				"client", id, "late_epoch", max(tombEpoch, epochOf(o)), "connected", o != nil && o.Connected, "owner_epoch", c.owner.Epoch)
			if c.owner.Connected && c.owner.Instance == st.instance {
				// It is also the key's last record now, which is all compaction keeps: this instance, holding
				// the newer connection, writes that connection's record again (reassertOwner).
				mine := *c.owner
				reassert = &mine
			}
		}
	case kindDelivery:
		var d *deliveryRec
		d, err = decodeRec[deliveryRec](value)
		if d == nil || c.deliv == nil || d.Saved >= c.deliv.Saved || err != nil {
			c.deliv = d // an older record read after this instance's own newer write is ignored
		}
	case kindWill:
		c.will, err = decodeRec[willRec](value)
	default:
		err = fmt.Errorf("unknown kind %q", kind)
	}
	var end *ownerRec
	if o != nil && !o.Connected {
		first := false
		if k := [2]int64{o.Epoch, int64(o.Round)}; c.ended != k && c.endedBefore != k {
			c.endedBefore, c.ended = c.ended, k // the first end record of this epoch and round: it decides the will
			first = true
			if st.ready {
				end = o
			}
		}
		orphan = c.claimPending(o, first, st.instance) && st.ready
	}
	if c.empty() {
		// A session that ends with its connection needs no index entry: its owner records only signal
		// takeovers (handled below), so an idle clean-session client costs this instance nothing here.
		delete(st.clients, id)
	}
	var h *handoff
	if w := st.waiters[id]; w != nil {
		switch {
		case kind == kindDelivery && c.deliv != nil && c.deliv.Epoch == w.epoch:
			h = w // the previous owner handed the session over
		case o != nil && !o.Connected && o.Epoch >= w.from && o.Epoch < w.epoch:
			// The previous connection ended (its final delivery record came before its end record), or the
			// partition's processor ended it for its dead instance: nothing more is coming. The end of an
			// even older connection says nothing about the one the CONNECT waits for.
			h = w
		}
		if h != nil {
			delete(st.waiters, id)
		}
	}
	snapshot := *c
	st.mu.Unlock()
	if o != nil && o.Instance != st.instance {
		st.srv.noteForeign() // before ownerChanged below looks the client up (alone.go)
	}
	if err != nil {
		// A corrupt or newer record is logged and skipped: the session starts clean, the instance goes on.
		st.srv.warn("skipping sessions record that cannot be read", "key", key, "err", err)
	}
	if fenced != nil {
		st.ownRecordRead(id, o.Epoch, fenced, &prev)
	}
	if reassert != nil {
		st.srv.reassertOwner(id, reassert)
	}
	if orphan {
		st.write(sessionkey.PendingKey(id, o.Epoch), nil)
	}
	if h != nil {
		h.timer.Stop()
		h.done(&snapshot)
	}
	if o != nil && o.Connected {
		st.srv.ownerChanged(id, o) // it hands over only connections older than o, and unrecorded ones
	}
	if end != nil {
		st.srv.connectionEnded(id, end)
	}
}

// sawAlive notes a record that instance inst wrote — an owner record names its writer, a pending will its
// claimer — as a heartbeat of inst, if inst is known: liveness is only judged from heartbeats read. An instance
// restarted under the id of one that died writes its claims (recoverOwnConnections) before its first
// heartbeat, and a heartbeat can be committed a transaction after the claims: another instance reading a
// claim of a will won by "a dead instance" claimed the next round and published the will a second time.
// st.mu is held.
func (st *store) sawAlive(inst string) {
	if _, known := st.instances[inst]; known && inst != st.instance {
		st.instances[inst] = time.Now()
	}
}

// update applies fn to client id's index entry under st.mu, creating the entry if create is set (a record
// with a value) and dropping it when fn leaves it empty. Runs on the reader goroutine.
func (st *store) update(id string, part int32, create bool, fn func(c *stored)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.clients[id]
	if c == nil {
		if !create {
			return
		}
		c = &stored{}
		st.clients[id] = c
	}
	c.part = part
	fn(c)
	if c.empty() {
		delete(st.clients, id)
	}
}

// versioned is a sessions-topic record value: every kind carries its format version.
type versioned interface{ version() int }

func (r *sessionRec) version() int   { return r.V }
func (r *ownerRec) version() int     { return r.V }
func (r *deliveryRec) version() int  { return r.V }
func (r *heartbeatRec) version() int { return r.V }
func (r *willRec) version() int      { return r.V }
func (r *qos2Rec) version() int      { return r.V }

// decodeRec parses a record value of a known version; a tombstone gives nil. A record of this version is
// parsed once; only one that does not decode, or names another version, is read again for its version, so
// the error says which it is.
func decodeRec[T any, P interface {
	*T
	versioned
}](value []byte) (*T, error) {
	if value == nil {
		return nil, nil
	}
	v := new(T)
	err := json.Unmarshal(value, v)
	if err == nil && P(v).version() == recVersion {
		return v, nil
	}
	var probe struct {
		V int `json:"v"`
	}
	if perr := json.Unmarshal(value, &probe); perr != nil {
		return nil, fmt.Errorf("cannot decode: %w", perr)
	}
	if probe.V != recVersion {
		return nil, fmt.Errorf("unknown record version %d (this instance reads version %d)", probe.V, recVersion)
	}
	return nil, fmt.Errorf("cannot decode version %d: %w", probe.V, err)
}

// lookup returns a copy of what the topic says of id.
func (st *store) lookup(id string) (stored, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.clients[id]
	if c == nil {
		return stored{}, false
	}
	return *c, true
}

// awaitHandoff registers a CONNECT that waits for the delivery record the previous owner writes when it
// hands the session over at epoch; done runs once, with what the store knows then, or after timeout.
func (st *store) awaitHandoff(id string, epoch, from int64, timeout time.Duration, done func(*stored)) {
	h := &handoff{epoch: epoch, from: from, done: done}
	st.mu.Lock()
	if old := st.waiters[id]; old != nil {
		old.timer.Stop()
		go old.done(nil) // a newer CONNECT for the same id supersedes it
	}
	st.waiters[id] = h
	h.timer = time.AfterFunc(timeout, func() {
		st.mu.Lock()
		if st.waiters[id] != h {
			st.mu.Unlock()
			return
		}
		delete(st.waiters, id)
		var snap *stored
		if c := st.clients[id]; c != nil {
			cp := *c
			snap = &cp
		}
		st.mu.Unlock()
		st.srv.warn("previous owner of a session did not hand it over in time; resuming from the last stored state", "client", id)
		if snap == nil {
			snap = &stored{}
		}
		done(snap)
	})
	st.mu.Unlock()
}

// put writes one record of a client; value nil writes a tombstone.
func (st *store) put(kind, id string, v any) { st.putThen(kind, id, v, nil) }

// putThen is put with done, which runs on a Kafka callback goroutine once Kafka acknowledged the record
// (err nil) or failed it; it must not block. done may be nil.
func (st *store) putThen(kind, id string, v any, done func(error)) {
	st.putKey(storeKey(kind, id), v, done)
}

// putKey is putThen for a record named by its full key.
func (st *store) putKey(key string, v any, done func(error)) {
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

// write produces one sessions-topic record by its full key; a failure is counted and logged.
func (st *store) write(key string, value []byte) { st.writeThen(key, value, nil) }

// writeThen is write with done (may be nil), run on a Kafka callback goroutine once the record is
// acknowledged or failed.
func (st *store) writeThen(key string, value []byte, done func(error)) {
	st.srv.kafka.PutSession(key, value, func(err error) {
		if err != nil {
			st.srv.metrics.kafkaErrors.Add(1)
			st.srv.warn("cannot write sessions record", "key", key, "err", err)
		}
		if done != nil {
			done(err)
		}
	})
}

// forget tombstones every key of a client, so nothing accumulates in Kafka; the owner key's tombstone carries
// epoch, the connection it ends (onRaw). With all false, only the owner key and the keys the topic is known to
// hold are tombstoned: a session that ended with its connection wrote nothing else.
func (st *store) forget(id string, epoch int64, all bool) {
	st.mu.Lock()
	c := st.clients[id]
	hasSess, hasDeliv := c != nil && c.sess != nil, c != nil && c.deliv != nil
	hasWill := c != nil && c.will != nil && c.will.Epoch == epoch // a newer connection's will is not this end's
	var q2 map[uint16]struct{}
	var conns map[int64]struct{}
	if c != nil {
		q2, c.q2 = c.q2, nil
		conns = c.conns
	}
	st.mu.Unlock()
	for pid := range q2 {
		st.write(sessionkey.QoS2Key(id, pid), nil)
	}
	for e := range conns {
		st.unmarkConn(id, e)
	}
	if all || hasSess {
		st.put(kindSession, id, nil)
	}
	if all || hasDeliv {
		st.put(kindDelivery, id, nil)
	}
	if all || hasWill {
		st.put(kindWill, id, nil) // a will published at once keeps its record until here (publishPendingOf)
	}
	st.endOwner(id, epoch)
}

// endOwner tombstones the owner key of client id, whose newest connection had epoch.
func (st *store) endOwner(id string, epoch int64) {
	key := storeKey(kindOwner, id)
	st.srv.kafka.PutSessionTombstone(key, epoch, func(err error) {
		if err != nil {
			st.srv.metrics.kafkaErrors.Add(1)
			st.srv.warn("cannot write sessions record", "key", key, "err", err)
		}
	})
}

// epochOf returns o's epoch, 0 for a tombstone.
func epochOf(o *ownerRec) int64 {
	if o == nil {
		return 0
	}
	return o.Epoch
}

// offsetsJSON encodes delivery positions: the plain partition number for the messages topic (as before routes
// existed, so older records read the same), "<topic>/<partition>" for a routed topic (Kafka topic names have
// no '/').
func (srv *Server) offsetsJSON(m map[tp]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, o := range m {
		key := strconv.Itoa(int(k.p))
		if k.t != 0 {
			key = srv.routedName(k.t) + "/" + key
		}
		out[key] = o
	}
	return out
}

// offsetsFromJSON decodes delivery positions; those of routed topics this instance does not follow (yet) are
// left out (docs/sessions.md).
func (srv *Server) offsetsFromJSON(m map[string]int64) map[tp]int64 {
	out := make(map[tp]int64, len(m))
	for k, o := range m {
		topic, part := "", k
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			topic, part = k[:i], k[i+1:]
		}
		p, err := strconv.Atoi(part)
		if err != nil {
			continue
		}
		t, ok := srv.topicIndex(topic)
		if !ok {
			continue
		}
		out[tp{t, int32(p)}] = o
	}
	return out
}

// count returns the number of clients the sessions topic knows.
func (st *store) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.clients)
}
