package sessions

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/sessionkey"
)

// A will due at once won by an instance is claimed again (the next round) by the partition's processor only
// once the winner is dead. An instance restarted under the id of one that died writes its claims before its
// first heartbeat (recoverOwnConnections, then the heartbeats), and with transactions that heartbeat can be
// committed a transaction after the claims: another instance that read the restarted instance's winning claim,
// and not yet its heartbeat, took the winner for dead, claimed the next round and published the will too — the
// checker's will published twice, after a restart that took 10 s (`COMPACT_EVERY=0.25 KILLS=20`). A record an
// instance wrote is a sign of its life, like its heartbeat.
func TestWinningClaimReadShowsItsWinnerAlive(t *testing.T) {
	for _, tc := range []struct {
		name  string
		claim bool // the claim is read; else compaction removed it, and the pending will alone names its claimer
	}{{"claim read", true}, {"claim compacted away", false}} {
		t.Run(tc.name, func(t *testing.T) {
			kafka := &fakeWriter{}
			st := NewStore("processor", 6*time.Second, kafka, &fakeHost{})
			st.SetReady()
			// The winner's last heartbeat was read 10 s ago: it was killed, and its restart loaded the topic since.
			st.instances["winner"] = time.Now().Add(-10 * time.Second)
			// A processor round as the server runs it (processPartitions): the claims it decides, written.
			processPartitions := func(start, now time.Time) {
				claims, _ := st.Due(start, now)
				for _, c := range claims {
					st.ClaimEnd(c.ID, c.Rec, c.Now)
				}
			}

			const id, epoch = "c", int64(1000)
			rec := func(v any) []byte {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			// The restarted winner ends its previous run's connection: its pending will, then its claim.
			st.onRecord(sessionkey.PendingKey(id, epoch), rec(&WillRec{V: sessionkey.Version, Epoch: epoch, Topic: "wills/c", By: "winner"}), 0, 0)
			if tc.claim {
				st.onRecord(sessionkey.Key(sessionkey.Owner, id), rec(&OwnerRec{V: sessionkey.Version, Instance: "winner", Epoch: epoch,
					At: time.Now().UnixMilli(), Expiry: 3600, Will: true, Now: true}), 0, 0)
			}
			now := time.Now()
			processPartitions(now, now)
			if keys := kafka.keys(); len(keys) > 0 {
				t.Fatalf("the processor wrote %q: it claimed the next round of a will whose claimer it had just read", keys)
			}

			// The winner dies again and stays dead: the next round is claimed once its death is known.
			st.mu.Lock()
			st.instances["winner"] = time.Now().Add(-10 * time.Second)
			st.mu.Unlock()
			processPartitions(now, time.Now())
			if keys := kafka.keys(); len(keys) != 1 || keys[0] != sessionkey.Key(sessionkey.Owner, id) {
				t.Fatalf("the processor wrote %q, want the claim of the next round (its pending will is in Kafka)", keys)
			}
		})
	}
}

// Owed wills (conns.go): a marker that still carries its connection's will, older than the client's newest
// connection, is claimed by the partition's processor once its instance is dead — with the will, due at once
// for a Will Delay of 0 — and not while that instance lives, nor once a claim wrote the marker again without
// it. A client whose owner key was tombstoned (its session ended) gets its owed connections claimed too.
func TestOwedMarkerClaimedOnceItsInstanceIsDead(t *testing.T) {
	st := NewStore("a-processor", 6*time.Second, &fakeWriter{}, &fakeHost{})
	st.SetReady() // "a-processor" sorts first among the live instances: it processes partition 0
	st.instances["holder"] = time.Now()
	st.instances["elsewhere"] = time.Now() // the holder of the clients' newest connections
	marker := func(id string, epoch int64, will *WillRec) {
		b, err := json.Marshal(&ConnRec{V: sessionkey.Version, Instance: "holder", Will: will})
		if err != nil {
			t.Fatal(err)
		}
		st.onRecord(sessionkey.ConnKey(id, epoch), b, 0, 0)
	}
	w := &WillRec{V: sessionkey.Version, Epoch: 1000, Topic: "wills/c"}
	marker("c", 1000, w)
	st.onRecord(sessionkey.Key(sessionkey.Owner, "c"), ownerValue(t, OwnerRec{Instance: "elsewhere", Epoch: 2000, Connected: true, Expiry: 60}), 0, 0)
	marker("gone", 1000, w) // the session ended since: no owner record
	marker("settled", 1000, w)
	marker("settled", 1000, nil) // a claim of its end was written
	st.onRecord(sessionkey.Key(sessionkey.Owner, "settled"), ownerValue(t, OwnerRec{Instance: "elsewhere", Epoch: 2000, Connected: true, Expiry: 60}), 0, 0)

	now := time.Now()
	if claims, _ := st.Due(now, now); len(claims) != 0 {
		t.Fatalf("claims %+v while the marker's instance lives", claims)
	}
	st.instances["holder"] = now.Add(-10 * time.Second)
	claims, _ := st.Due(now, now)
	got := map[string]Claim{}
	for _, c := range claims {
		got[c.ID] = c
	}
	if len(got) != 2 || got["settled"].Rec != nil {
		t.Fatalf("claims %+v, want the owed markers of c and gone only", claims)
	}
	for id, c := range got {
		if c.Rec.Epoch != 1000 || !c.Rec.Will || c.Now == nil || c.Now.Topic != w.Topic || !c.Unmark || c.EndOwner != (id == "gone") {
			t.Errorf("%s: claim %+v (will %v), want epoch 1000's end with its will due at once, the marker tombstoned after", id, c.Rec, c.Now)
		}
	}
}

// A client's newest connection whose owner record compaction removed: the owner key keeps only a late end
// record of an older connection (written after the newer owner record), and the newest connection's holder
// was killed. Its marker is newer than that owner record; its will record is its own, written before its
// CONNACK. The processor, once the holder is dead, and the holder's restart claim its end with the will
// (a delayed one after its delay: the client's newest connection). A marker newer than the owner record
// without its own will record is a CONNECT killed before its owner record: nothing is claimed for it.
func TestOwedMarkerNewerThanALateOwnerRecord(t *testing.T) {
	const late, newest = 2000, 3000
	load := func(st *Store) {
		for _, c := range []struct {
			id    string
			delay uint32
			own   bool // the will record is the newest connection's (it was accepted)
		}{{"delayed", 2, true}, {"now", 0, true}, {"never", 0, false}} {
			w := &WillRec{V: sessionkey.Version, Epoch: newest, Topic: "wills/" + c.id, Delay: c.delay}
			b, err := json.Marshal(&ConnRec{V: sessionkey.Version, Instance: "holder", Will: w})
			if err != nil {
				t.Fatal(err)
			}
			st.onRecord(sessionkey.ConnKey(c.id, newest), b, 0, 0)
			stored := *w
			if !c.own {
				stored.Epoch = late // the older connection's will, still stored
			}
			wb, err := json.Marshal(&stored)
			if err != nil {
				t.Fatal(err)
			}
			st.onRecord(sessionkey.Key(sessionkey.Will, c.id), wb, 0, 0)
			st.onRecord(sessionkey.Key(sessionkey.Owner, c.id), ownerValue(t, OwnerRec{Instance: "elsewhere", Epoch: late,
				At: time.Now().UnixMilli(), Expiry: 60, Will: c.delay != 0}), 0, 0)
		}
	}
	check := func(who string, claims []Claim) {
		t.Helper()
		got := map[string]Claim{}
		for _, c := range claims {
			got[c.ID] = c
		}
		if len(got) != 2 || got["never"].Rec != nil {
			t.Fatalf("%s: claims %+v, want the newest connections of delayed and now only", who, claims)
		}
		for id, c := range got {
			if c.Rec.Epoch != newest || c.Rec.Connected || !c.Rec.Will || (c.Now != nil) != (id == "now") || !c.Unmark || c.EndOwner {
				t.Errorf("%s: %s: claim %+v (due at once %v), want epoch %d's end owing its will", who, id, c.Rec, c.Now, newest)
			}
		}
	}

	st := NewStore("a-processor", 6*time.Second, &fakeWriter{}, &fakeHost{})
	st.SetReady() // "a-processor" sorts first among the live instances: it processes partition 0
	now := time.Now()
	st.instances["holder"] = now
	st.instances["elsewhere"] = now
	load(st)
	if claims, _ := st.Due(now, now); len(claims) != 0 {
		t.Fatalf("claims %+v while the holder lives", claims)
	}
	st.instances["holder"] = now.Add(-10 * time.Second)
	claims, _ := st.Due(now, now)
	check("processor", claims)

	restarted := NewStore("holder", 6*time.Second, &fakeWriter{}, &fakeHost{})
	load(restarted)
	ends, _, _ := restarted.OwnOpen(now)
	check("restart", ends)
}

// A delayed will of a connection older than the client's newest, whose holder died and whose end nobody
// claimed (an owed marker), is due if the client came back only after its delay, counted from the
// connection's end — which came at the latest dead-after past the holder's last heartbeat. Then the processor,
// or the holder's restart, claims it due at once (published through its pending record); a client that came
// back sooner, by its first connection after the marker (one read in between counts, though a later one is
// the owner now), or a holder of which no heartbeat was read, leaves it taken as cancelled. Before, every such
// will was taken as cancelled.
func TestOwedDelayedWillDueWhenTheClientCameBackAfterItsDelay(t *testing.T) {
	now := time.Now()
	beat := now.Add(-time.Minute) // the holder's last heartbeat; it ended its connections by 6 s later
	ns := func(d time.Duration) int64 { return beat.Add(d).UnixNano() }
	load := func(st *Store) {
		hb, err := json.Marshal(&HeartbeatRec{V: sessionkey.Version, At: beat.UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		st.onRecord(sessionkey.Key(sessionkey.Instance, "holder"), hb, 0, 0)
		for _, c := range []struct {
			id     string
			holder string
			back   []time.Duration // the client's connections after the marker, as read
		}{
			{"after", "holder", []time.Duration{9 * time.Second}}, // 6 s + the delay (2 s) + 1 s
			{"within", "holder", []time.Duration{3 * time.Second}},
			{"between", "holder", []time.Duration{3 * time.Second, 20 * time.Second}},
			{"unknown", "ghost", []time.Duration{20 * time.Second}}, // no heartbeat of its holder read
		} {
			w := &WillRec{V: sessionkey.Version, Epoch: ns(-time.Second), Topic: "wills/" + c.id, Delay: 2}
			b, err := json.Marshal(&ConnRec{V: sessionkey.Version, Instance: c.holder, Will: w})
			if err != nil {
				t.Fatal(err)
			}
			st.onRecord(sessionkey.ConnKey(c.id, w.Epoch), b, 0, 0)
			for _, d := range c.back {
				st.onRecord(sessionkey.Key(sessionkey.Owner, c.id), ownerValue(t, OwnerRec{Instance: "elsewhere", Epoch: ns(d),
					Connected: true, Expiry: 60}), 0, 0)
			}
		}
	}
	check := func(who string, claims []Claim) {
		t.Helper()
		got := map[string]Claim{}
		for _, c := range claims {
			got[c.ID] = c
		}
		if len(got) != 4 {
			t.Fatalf("%s: claims %+v, want one per owed marker", who, claims)
		}
		for id, c := range got {
			due := id == "after"
			if c.Rec.Epoch != ns(-time.Second) || c.Rec.Will != due || (c.Now != nil) != due || !c.Unmark {
				t.Errorf("%s: %s: claim %+v (due at once %v), want the will due at once %v", who, id, c.Rec, c.Now, due)
			}
		}
	}

	st := NewStore("a-processor", 6*time.Second, &fakeWriter{}, &fakeHost{})
	st.SetReady() // "a-processor" sorts first among the live instances: it processes partition 0
	load(st)
	st.instances["holder"] = now.Add(-10 * time.Second)
	st.instances["ghost"] = now.Add(-10 * time.Second)
	st.instances["elsewhere"] = now
	claims, _ := st.Due(now, now)
	check("processor", claims)

	restarted := NewStore("holder", 6*time.Second, &fakeWriter{}, &fakeHost{})
	load(restarted)
	ends, _, _ := restarted.OwnOpen(now)
	var mine []Claim
	for _, e := range ends {
		if e.ID != "unknown" { // "ghost"'s
			mine = append(mine, e)
		}
	}
	if len(mine) != 3 {
		t.Fatalf("restart: claims %+v, want the three markers of its previous run", ends)
	}
	check("restart", append(mine, Claim{ID: "unknown", Rec: &OwnerRec{Epoch: ns(-time.Second)}, Unmark: true}))
}
