package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"sync"
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
			kafka := &sessionsLog{}
			srv := &Server{kafka: kafka}
			srv.cfg.deadAfter = 6 * time.Second
			srv.cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
			srv.store = newStore(srv)
			st := srv.store
			st.instance = "processor"
			st.ready = true
			// The winner's last heartbeat was read 10 s ago: it was killed, and its restart loaded the topic since.
			st.instances["winner"] = time.Now().Add(-10 * time.Second)

			const id, epoch = "c", int64(1000)
			rec := func(v any) []byte {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			// The restarted winner ends its previous run's connection: its pending will, then its claim.
			st.onRecord(sessionkey.PendingKey(id, epoch), rec(&willRec{V: recVersion, Epoch: epoch, Topic: "wills/c", By: "winner"}), 0, 0)
			if tc.claim {
				st.onRecord(storeKey(kindOwner, id), rec(&ownerRec{V: recVersion, Instance: "winner", Epoch: epoch,
					At: time.Now().UnixMilli(), Expiry: 3600, Will: true, Now: true}), 0, 0)
			}
			now := time.Now()
			srv.processPartitions(now, now)
			if keys := kafka.keys(); len(keys) > 0 {
				t.Fatalf("the processor wrote %q: it claimed the next round of a will whose claimer it had just read", keys)
			}

			// The winner dies again and stays dead: the next round is claimed once its death is known.
			st.mu.Lock()
			st.instances["winner"] = time.Now().Add(-10 * time.Second)
			st.mu.Unlock()
			srv.processPartitions(now, time.Now())
			if keys := kafka.keys(); len(keys) != 1 || keys[0] != storeKey(kindOwner, id) {
				t.Fatalf("the processor wrote %q, want the claim of the next round (its pending will is in Kafka)", keys)
			}
		})
	}
}

// sessionsLog is the Kafka of a test that only writes session records: it keeps their keys.
type sessionsLog struct {
	Kafka
	mu  sync.Mutex
	put []string
}

func (k *sessionsLog) PutSession(key string, _ []byte, done func(error)) {
	k.mu.Lock()
	k.put = append(k.put, key)
	k.mu.Unlock()
	if done != nil {
		done(nil)
	}
}

func (k *sessionsLog) keys() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.put...)
}
