package sessions

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
)

// fakeWriter keeps the records a Store writes, acknowledged at once.
type fakeWriter struct {
	mu   sync.Mutex
	puts []string // keys, in order
}

func (w *fakeWriter) PutSession(key string, _ []byte, done func(error)) {
	w.mu.Lock()
	w.puts = append(w.puts, key)
	w.mu.Unlock()
	if done != nil {
		done(nil)
	}
}

func (w *fakeWriter) PutSessionTombstone(key string, _ int64, done func(error)) {
	w.PutSession(key, nil, done)
}

// fakeHost counts what the store tells its server.
type fakeHost struct {
	mu      sync.Mutex
	ended   []int64 // epochs of the end records ConnectionEnded was called for
	changed []int64 // epochs of the owner records OwnerChanged was called for
	held    int64
}

func (h *fakeHost) Warn(string, ...any)  {}
func (h *fakeHost) Debug(string, ...any) {}
func (h *fakeHost) Error(string, ...any) {}
func (h *fakeHost) WriteFailed()         {}
func (h *fakeHost) NoteForeign()         {}
func (h *fakeHost) OwnerChanged(_ string, o *OwnerRec) {
	h.mu.Lock()
	h.changed = append(h.changed, o.Epoch)
	h.mu.Unlock()
}
func (h *fakeHost) ConnectionEnded(_ string, end *OwnerRec) {
	h.mu.Lock()
	h.ended = append(h.ended, end.Epoch)
	h.mu.Unlock()
}
func (h *fakeHost) ReassertOwner(string, *OwnerRec) {}
func (h *fakeHost) HeldEpoch(string) int64          { return h.held }

func ownerValue(t *testing.T, o OwnerRec) []byte {
	t.Helper()
	o.V = sessionkey.Version
	b, err := json.Marshal(&o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The first end record of an epoch and round decides the will, once: a second claim of the same end is not
// acted on, a claim of the next round is. Before the topic was read to its end (SetReady), none is acted on.
func TestStoreFirstEndRecordDecides(t *testing.T) {
	h := &fakeHost{}
	st := NewStore("me", time.Minute, &fakeWriter{}, h)
	key := sessionkey.Key(sessionkey.Owner, "c1")
	st.onRecord(key, ownerValue(t, OwnerRec{Instance: "me", Epoch: 1, Will: true, Expiry: 60}), 0, 0) // loading: not acted on
	st.SetReady()
	st.onRecord(key, ownerValue(t, OwnerRec{Instance: "me", Epoch: 2, Connected: true, Expiry: 60}), 0, 0)
	st.onRecord(key, ownerValue(t, OwnerRec{Instance: "me", Epoch: 2, Will: true, Expiry: 60}), 0, 0)
	st.onRecord(key, ownerValue(t, OwnerRec{Instance: "other", Epoch: 2, Will: true, Expiry: 60}), 0, 0) // a second claim
	st.onRecord(key, ownerValue(t, OwnerRec{Instance: "other", Epoch: 2, Will: true, Round: 1, Expiry: 60}), 0, 0)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ended) != 2 || h.ended[0] != 2 || h.ended[1] != 2 {
		t.Errorf("ConnectionEnded for epochs %v, want [2 2] (round 0, then round 1)", h.ended)
	}
	if len(h.changed) != 1 || h.changed[0] != 2 {
		t.Errorf("OwnerChanged for epochs %v, want [2]", h.changed)
	}
}

// A CONNECT's decision: it waits for a live holder, for the connection a compacted view's delivery record or
// marker names, for an older CONNECT of this instance still deciding, and for nobody when the session is this
// instance's own or the view shows nothing open.
func TestStoreDecide(t *testing.T) {
	st := NewStore("me", time.Minute, &fakeWriter{}, &fakeHost{})
	held := &OwnerRec{Instance: "other", Epoch: 5, Connected: true}
	mine := &OwnerRec{Instance: "me", Epoch: 5, Connected: true}
	for _, c := range []struct {
		name     string
		prev     Stored
		local    bool
		deciding bool
		want     Decision
	}{
		{"nothing", Stored{}, false, false, Decision{}},
		{"held elsewhere", Stored{Owner: held}, false, false, Decision{Held: true, From: 5}},
		{"held here", Stored{Owner: held}, true, false, Decision{}},
		{"ended", Stored{Owner: &OwnerRec{Instance: "other", Epoch: 5}}, false, false, Decision{}},
		{"compacted", Stored{Owner: &OwnerRec{Instance: "other", Epoch: 3}, Deliv: &DeliveryRec{Epoch: 7}}, false, false,
			Decision{Compacted: true, From: 7}},
		{"compacted, marker tombstoned", Stored{Deliv: &DeliveryRec{Epoch: 7}, ConnEnded: 7}, false, false, Decision{}},
		{"marked", Stored{Owner: held, Conns: map[int64]struct{}{8: {}, 20: {}}}, false, false, Decision{Held: true, Marked: 8, From: 8}},
		{"an older CONNECT here, deciding", Stored{Owner: mine}, false, true, Decision{Held: true, From: 5}},
		{"an older CONNECT here, answered", Stored{Owner: mine}, false, false, Decision{}},
	} {
		if got := st.Decide(&c.prev, 10, c.local, c.deciding); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// MQTT-3.1.3-9: a delayed will is due after its delay or when the session ends, whichever is first, and is
// not published once the client connected again.
func TestStoreWillDue(t *testing.T) {
	st := NewStore("me", time.Minute, &fakeWriter{}, &fakeHost{})
	will, _ := json.Marshal(&WillRec{V: sessionkey.Version, Epoch: 2, Topic: "t", Delay: 30})
	st.onRecord(sessionkey.Key(sessionkey.Will, "c1"), will, 0, 0)
	end := &OwnerRec{Instance: "me", Epoch: 2, At: 1_000_000, Expiry: 10, Will: true}
	if at, w := st.WillDueAt("c1", end); w == nil || at.UnixMilli() != 1_010_000 {
		t.Errorf("due at %v, %v; want the session's end, 10 s after the connection's", at, w)
	}
	end.Expiry = 60
	at, w := st.WillDueAt("c1", end)
	if w == nil || at.UnixMilli() != 1_030_000 {
		t.Errorf("due at %v, %v; want the Will Delay, 30 s after the connection's end", at, w)
	}
	if _, w := st.WillDueAt("c1", &OwnerRec{Epoch: 1}); w != nil {
		t.Error("a will is due for a connection it is not of")
	}
	if w.Topic != "t" {
		t.Errorf("stored will %+v, want the will of epoch 2", w)
	}
	st.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), ownerValue(t, *end), 0, 0)
	if r := st.DelayedClaim("c1", end, at); r == nil || r.Round != 1 || r.Epoch != 2 {
		t.Errorf("claim %+v of the due will, want one of round 1 of epoch 2", r)
	}
	st.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), ownerValue(t, OwnerRec{Instance: "other", Epoch: 3, Connected: true}), 0, 0)
	if r := st.DelayedClaim("c1", end, at); r != nil {
		t.Errorf("MQTT-3.1.3-9: will still claimed (%+v) after the client connected again within the delay", r)
	}
	// A connection after the delay passed does not cancel the will, neither for its winner nor for the CONNECT.
	late := at.UnixNano() + 1
	st.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), ownerValue(t, OwnerRec{Instance: "other", Epoch: late, Connected: true}), 0, 0)
	if r := st.DelayedClaim("c1", end, at); r != nil {
		t.Errorf("MQTT-3.1.3-9: will claimed (%+v) although a CONNECT came within the delay before a later one", r)
	}
	prev := Stored{Owner: end, Will: w}
	if cl := st.DueBefore("c1", &prev, late); cl == nil || cl.Now != w || cl.Rec.Round != 1 || !cl.Rec.Will {
		t.Errorf("a CONNECT after the delay claims %+v, want the will due at once, round 1", cl)
	}
	if cl := st.DueBefore("c1", &prev, at.UnixNano()-1); cl != nil {
		t.Errorf("MQTT-3.1.3-9: a CONNECT within the delay claims %+v, want the will cancelled", cl)
	}
	st2 := NewStore("me", time.Minute, &fakeWriter{}, &fakeHost{})
	st2.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), ownerValue(t, *end), 0, 0)
	st2.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), ownerValue(t, OwnerRec{Instance: "other", Epoch: late, Connected: true, Expiry: 60}), 0, 0)
	if r := st2.DelayedClaim("c1", end, at); r == nil {
		t.Error("MQTT-3.1.3-9: the will's winner cancels it for a CONNECT that came after its delay")
	}
	st2.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), nil, 0, late) // the session ended: its will with it
	if r := st2.DelayedClaim("c1", end, at); r != nil {
		t.Errorf("will claimed (%+v) for a client the index no longer knows", r)
	}
}

func (w *fakeWriter) keys() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.puts...)
}

// MQTT-3.1.3-9: a delayed will whose client came back within the delay is not published, also when the client
// ended that connection too (with a will of its own) and connected again before the first will came due: the
// index's record of the first connection after an end then names the later end, and the owner is a connection
// made after the delay. The history checker found it: a will of delay 2 s published although the client had
// come back 96 ms after the end.
func TestStoreDelayedWillCancelledByAnEarlierReconnect(t *testing.T) {
	st := NewStore("me", time.Minute, &fakeWriter{}, &fakeHost{})
	const s = int64(time.Second)
	t0 := int64(1_000_000) * s // epochs are CONNECT times in Unix ns; At is an end's time in Unix ms
	will, _ := json.Marshal(&WillRec{V: sessionkey.Version, Epoch: t0, Topic: "t", Delay: 2})
	st.onRecord(sessionkey.Key(sessionkey.Will, "c1"), will, 0, 0)
	owner := func(o OwnerRec) { st.onRecord(sessionkey.Key(sessionkey.Owner, "c1"), ownerValue(t, o), 0, 0) }
	owner(OwnerRec{Instance: "me", Epoch: t0, Connected: true, Expiry: 60})
	first := &OwnerRec{Instance: "me", Epoch: t0, At: (t0 + s) / 1e6, Expiry: 60, Will: true} // ends 1 s in, will due 2 s later
	owner(*first)
	owner(OwnerRec{Instance: "other", Epoch: t0 + s + s/10, Connected: true, Expiry: 60})                  // back 100 ms after the end
	owner(OwnerRec{Instance: "other", Epoch: t0 + s + s/10, At: (t0 + 2*s) / 1e6, Expiry: 60, Will: true}) // that one ends too, with a will
	owner(OwnerRec{Instance: "third", Epoch: t0 + 2*s + s/10, Connected: true, Expiry: 60})                // and comes back again
	owner(OwnerRec{Instance: "third", Epoch: t0 + 2*s + s/10, At: (t0 + 3*s) / 1e6, Expiry: 60})           // a normal end
	owner(OwnerRec{Instance: "third", Epoch: t0 + 3*s + s/2, Connected: true, Expiry: 60})                 // after the first will's delay
	due := time.Unix(0, t0+3*s)
	if r := st.DelayedClaim("c1", first, due); r != nil {
		t.Fatalf("MQTT-3.1.3-9: the first will claimed (%+v) although the client came back 100 ms after its end", r)
	}
}

// Two CONNECTs of a client can wait at once, each for the connection before it (docs/sessions.md, "The newest
// CONNECT wins"): the older one (epoch 20) for the holder's hand-over (from 10), the newer one (30) for the
// older one's end. The hand-over to 20 ends only the older wait; the older CONNECT's marker tombstone, written
// once it is refused, ends the newer one's, with the hand-over in its view. Before, the newer wait ended the
// older one at once (superseded), and the marker tombstone written then came before the hand-over: the newer
// CONNECT resumed without the holder's final state.
func TestStoreWaitsChain(t *testing.T) {
	st := NewStore("me", time.Minute, &fakeWriter{}, &fakeHost{})
	got := make(chan [2]int64, 2) // the wait's epoch, and the delivery record's epoch its view holds
	wait := func(epoch, from int64) {
		st.AwaitHandoff("c1", epoch, from, time.Minute, func(s *Stored) {
			var d int64
			if s != nil && s.Deliv != nil {
				d = s.Deliv.Epoch
			}
			got <- [2]int64{epoch, d}
		})
	}
	wait(20, 10)
	wait(30, 20)
	select {
	case g := <-got:
		t.Fatalf("wait %d ended before any hand-over", g[0])
	default:
	}
	d, _ := json.Marshal(&DeliveryRec{V: sessionkey.Version, Epoch: 20, Saved: 1})
	st.onRecord(sessionkey.Key(sessionkey.Delivery, "c1"), d, 0, 0)
	if g := <-got; g != [2]int64{20, 20} {
		t.Fatalf("ended %v, want the older wait (20) with the hand-over to it", g)
	}
	select {
	case g := <-got:
		t.Fatalf("wait %d ended by a hand-over to another connection", g[0])
	default:
	}
	st.onRecord(sessionkey.ConnKey("c1", 20), nil, 0, 0)
	if g := <-got; g != [2]int64{30, 20} {
		t.Fatalf("ended %v, want the newer wait (30) with the hand-over to 20 in its view", g)
	}
}
