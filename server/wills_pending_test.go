package server_test

import (
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// A will due at once (delay 0) whose claimer is killed after reading its claim back as the winner, before the
// will reached Kafka, is published all the same — once — by the instance restarted under the claimer's id, or
// by the partition's processor once the claimer is known dead; also when the client has connected again
// meanwhile (its new CONNECT replaced the stored will). Before, the will was gone: nothing in Kafka said it was
// due, and the stored will had been replaced. The kill is a hook (SetWillHook) because the window is a few
// microseconds wide: a signal from outside cannot be aimed at it.
func TestPendingWillSurvivesItsClaimerKilled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool // the claimer comes back under its id; else it stays dead
	}{{"restarted", true}, {"dead", false}} {
		t.Run(tc.name, func(t *testing.T) {
			kafka, hb, a, b, watch := claimerAndOther(t, server.HandoffTimeout(300*time.Millisecond))
			killed := killedAt(a, server.SetWillHook)

			r := connectWithWill(t, a.addr, "pw", 0)
			r.nc.Close() // no DISCONNECT: the will is due now; A claims it and reads its claim back
			select {
			case <-killed:
			case <-time.After(10 * time.Second):
				t.Fatal("A did not win the will's claim")
			}
			back := dialV5(t, b.addr, persistent("pw", false)) // the client comes back at once, without a will
			if !back.connack.SessionPresent {
				t.Fatal("MQTT-3.2.2-2: session lost")
			}
			if tc.restart {
				startInstance(t, kafka, hb, server.InstanceID("claimer"))
			}
			willOnce(t, watch, "pw")
		})
	}
}

// Publishing a will due at once leaves the client's "w:" record alone: the client's next connection, here at
// once on the same instance while the first will is held back (WillHold), has written its own will there, and
// a tombstone written with the first will's publication deleted it — so when that instance then died, the
// second connection's will was lost. The history checker found this with --chaos-will-hold.
func TestNextWillSurvivesThePublicationOfThePrevious(t *testing.T) {
	_, kafka := startKafka(t)
	hb := server.Heartbeats(200*time.Millisecond, time.Second)
	a := startInstance(t, kafka, hb, server.WillHold(500*time.Millisecond))
	b := startInstance(t, kafka, hb)
	watch := dialV5(t, b.addr, &paho.Connect{ClientID: "nx-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	connect := func(life string, clean bool) *raw {
		return connectRaw(t, a.addr, "nx", clean, !clean, func(p *mqttcodec.Connect) {
			p.WillFlag, p.WillQoS, p.WillTopic, p.WillPayload = true, 1, []byte("wills/nx"), []byte(life)
		})
	}
	first := connect("life 1", true)
	first.nc.Close()                   // the will of life 1 is due now: claimed, then held 500 ms
	time.Sleep(150 * time.Millisecond) // A has read its claim back: the hold has begun
	connect("life 2", false)           // its will is in Kafka before its CONNACK, within the hold
	if m := watch.next(t); string(m.Payload) != "life 1" {
		t.Fatalf("got %q, want the will of life 1", m.Payload)
	}
	a.crash() // life 2's connection dies with A: B ends it once A is known dead
	if m := watch.next(t); string(m.Payload) != "life 2" {
		t.Fatalf("got %q, want the will of life 2", m.Payload)
	}
	watch.none(t, 2*time.Second)
}

// An owner tombstone that reaches Kafka after a newer connection's records — the end of a session that ended
// with its connection on A, written late, after the client had a persistent session on B — ends nothing: it
// carries the epoch of the connection it ends, older than the newer one's. Before, it erased the client's
// owner from every index, and the processors never expired the session that B's connection left: here it has
// a 2 s expiry and is still there 5 s later.
func TestLateOwnerTombstoneEndsOnlyItsConnection(t *testing.T) {
	cluster, kafka := startKafka(t)
	hb := server.Heartbeats(200*time.Millisecond, time.Second)
	a := startInstanceTxn(t, kafka, "tomb-a", hb)
	b := startInstance(t, kafka, hb, server.HandoffTimeout(300*time.Millisecond))
	time.Sleep(500 * time.Millisecond)                                            // A has read B's heartbeat: it records every CONNECT (alone.go)
	first := dialV5(t, a.addr, &paho.Connect{ClientID: "tomb", CleanStart: true}) // ends with its connection
	if n := a.srv.Metrics().Snapshot().Unrecorded; n != 0 {
		t.Fatalf("%d CONNECTs accepted on A without an owner record: A took itself for alone", n)
	}

	// From the end record of the dropped connection on, A's writes (the owner tombstone too) wait until release.
	release := dropHoldingEnd(t, cluster, "tomb-a", "o:tomb", first.nc)
	second := dialV5(t, b.addr, &paho.Connect{ClientID: "tomb", CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(2)}})
	second.sub(t, paho.SubscribeOptions{Topic: "tomb/in", QoS: 1})
	if err := second.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // B's end record is in Kafka
	release()                          // A's end record and owner tombstone land after it
	onA := dialV5(t, a.addr, &paho.Connect{ClientID: "tomb-sync", CleanStart: true})
	onA.pub(t, &paho.Publish{Topic: "tomb/sync", QoS: 1}) // PUBACK: A's earlier transactions are committed

	time.Sleep(5 * time.Second) // the session expired 2 s after B's end; processors run every 200 ms
	again := dialV5(t, b.addr, &paho.Connect{ClientID: "tomb", CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(2)}})
	if again.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: Session Present 1 for a session expired 3 s ago (a late owner tombstone hid its end from the processors)")
	}
}

// A late end record of an older connection is the last record of the client's owner key until the holder
// of the newer connection writes its record again: compaction keeps only the last, so an instance that reads
// the compacted topic from its start would see the client disconnected while B holds it — and not end B's
// connection when B dies: its will was never published. Here A's end record is held back until the client
// is connected on B, the topic is compacted, and C starts afterwards and is the only instance left when B
// is killed.
func TestLateEndRecordSurvivesCompaction(t *testing.T) {
	cluster, kafka := startKafka(t)
	hb := server.Heartbeats(200*time.Millisecond, time.Second)
	a := startInstanceTxn(t, kafka, "compact-a", hb)
	b := startInstance(t, kafka, hb, server.HandoffTimeout(300*time.Millisecond))
	first := dialV5(t, a.addr, persistent("compact", true))

	release := dropHoldingEnd(t, cluster, "compact-a", "o:compact", first.nc)
	connectWithWill(t, b.addr, "compact", 0) // gives up waiting for A's hand-over after 300 ms
	release()                                // A's end record lands after B's owner record
	onA := dialV5(t, a.addr, &paho.Connect{ClientID: "compact-sync", CleanStart: true})
	onA.pub(t, &paho.Publish{Topic: "compact/sync", QoS: 1}) // PUBACK: A's earlier transactions are committed
	time.Sleep(500 * time.Millisecond)                       // B has read it (and written its owner record again)
	a.stop()
	cluster.Compact()

	c := startInstance(t, kafka, hb) // reads the compacted topic from its start
	watch := dialV5(t, c.addr, &paho.Connect{ClientID: "compact-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	b.crash()
	m := watch.next(t)
	if m.Topic != "wills/compact" || string(m.Payload) != "gone" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	watch.none(t, 2*time.Second)
}

// Gap C (docs/sessions.md, "Owed wills"): as above, but B is killed when it reads A's late end record, before
// it writes its owner record again. After the compaction the owner key holds only A's end record, and an
// instance that reads the compacted topic from its start sees A's connection, disconnected, as the client's
// newest; B's connection shows only as its marker, newer than that, owing its will. B's restart claims it
// before it serves, or, B staying dead, C's processor once B is known dead: the will is published once.
func TestLateEndRecordOwnerAndTheHolderKilled(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool // B comes back under its id; else it stays dead and C starts
	}{{"restarted", true}, {"dead", false}} {
		t.Run(tc.name, func(t *testing.T) {
			cluster, kafka := startKafka(t)
			hb := server.Heartbeats(200*time.Millisecond, time.Second)
			a := startInstanceTxn(t, kafka, "gapc-a", hb)
			b := startInstance(t, kafka, hb, server.HandoffTimeout(300*time.Millisecond), server.InstanceID("gapc-b"))
			first := dialV5(t, a.addr, persistent("gapc", true))

			release := dropHoldingEnd(t, cluster, "gapc-a", "o:gapc", first.nc)
			connectWithWill(t, b.addr, "gapc", 0) // gives up waiting for A's hand-over after 300 ms
			killed := killedAt(b, server.SetReassertHook)
			release() // A's end record lands after B's owner record
			select {
			case <-killed: // B read the late record and died before writing its owner record again
			case <-time.After(10 * time.Second):
				t.Fatal("B did not read A's late end record")
			}
			onA := dialV5(t, a.addr, &paho.Connect{ClientID: "gapc-sync", CleanStart: true})
			onA.pub(t, &paho.Publish{Topic: "gapc/sync", QoS: 1}) // PUBACK: A's earlier transactions are committed
			a.stop()
			cluster.Compact()

			var opts []server.Opt // reads the compacted topic from its start
			if tc.restart {
				opts = append(opts, server.InstanceID("gapc-b"))
			}
			c := startInstance(t, kafka, append(opts, hb)...)
			watch := dialV5(t, c.addr, &paho.Connect{ClientID: "gapc-watch", CleanStart: true})
			watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
			willOnce(t, watch, "gapc")
		})
	}
}

// dropHoldingEnd closes nc, a client's connection to the instance of transactional id txn, without DISCONNECT,
// and holds that instance's writes back in kfake from its record with key (the end record) on, until release
// (also run at the test's end).
func dropHoldingEnd(t *testing.T, cluster *kfake.Cluster, txn, key string, nc net.Conn) (release func()) {
	t.Helper()
	stalled, release := holdBack(cluster,
		func(req *kmsg.ProduceRequest) bool { return fromTxn(req, txn, []byte(key)) },
		func(req *kmsg.ProduceRequest) bool { return fromTxn(req, txn, nil) })
	t.Cleanup(release)
	nc.Close()
	select {
	case <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("no end record written for the dropped connection")
	}
	return release
}

// A claimer killed between its two records — the pending will in Kafka, its claim not — left a will that
// nobody published: here A is taking a client over on B's CONNECT and claims the kicked connection's will due
// at once. Nobody else ends that connection (the processors look at a client's newest connection, B's), and
// B's CONNECT, waiting for A's hand-over, would claim it only at its HandoffTimeout (30 s here, past the
// watcher's 10 s). The pending record names its claimer: the instance restarted under that id claims it
// again, and so does the partition's processor once the claimer is known dead. The will comes once.
func TestPendingWillOfAClaimerKilledBeforeItsClaim(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool // the claimer comes back under its id; else it stays dead
	}{{"restarted", true}, {"dead", false}} {
		t.Run(tc.name, func(t *testing.T) {
			kafka, hb, a, b, watch := claimerAndOther(t, server.HandoffTimeout(30*time.Second))
			killed := killedAt(a, server.SetClaimHook)

			connectWithWill(t, a.addr, "pk", 0)
			go func() { // the CONNECT waits for A's hand-over: it is answered after the will or not at all
				if c, err := connectV5(b.addr, persistent("pk", false)); err == nil {
					_ = c.Disconnect(&paho.Disconnect{})
				}
			}()
			select {
			case <-killed: // A kicked its connection and wrote the pending will of its claim
			case <-time.After(10 * time.Second):
				t.Fatal("A did not claim the end of the connection taken over")
			}
			if tc.restart {
				startInstance(t, kafka, hb, server.InstanceID("claimer"))
			}
			willOnce(t, watch, "pk")
		})
	}
}

// claimerAndOther starts two instances on a Kafka of their own with a 1 s death window: A, "claimer", and B,
// "other", with bOpts; watch subscribes to every will on B.
func claimerAndOther(t *testing.T, bOpts ...server.Opt) (kafka string, hb server.Opt, a, b *instance, watch *v5) {
	t.Helper()
	_, kafka = startKafka(t)
	hb = server.Heartbeats(200*time.Millisecond, time.Second)
	a = startInstance(t, kafka, hb, server.InstanceID("claimer"))
	b = startInstance(t, kafka, append([]server.Opt{hb, server.InstanceID("other")}, bOpts...)...)
	watch = dialV5(t, b.addr, &paho.Connect{ClientID: "watch-wills", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	return kafka, hb, a, b, watch
}

// killedAt sets a test hook of in's server (SetWillHook, SetClaimHook) that crashes in where it runs; the
// channel closes then.
func killedAt(in *instance, set func(*server.Server, func() bool)) <-chan struct{} {
	killed := make(chan struct{})
	set(in.srv, func() bool {
		close(killed)
		go in.crash()
		return true
	})
	return killed
}

// willOnce waits for the will of client id (topic wills/<id>, payload "gone") on watch, and checks that it
// comes once.
func willOnce(t *testing.T, watch *v5, id string) {
	t.Helper()
	m := watch.next(t)
	if m.Topic != "wills/"+id || string(m.Payload) != "gone" {
		t.Fatalf("got %s %q, want the will of %s", m.Topic, m.Payload, id)
	}
	watch.none(t, 2*time.Second) // once
}

// Gap A of the history checker (docs/sessions.md, "Owed wills"): the will of a connection that is not the
// client's newest, whose holder died and whose end nobody claimed, is published once. A holds the client with
// a will of delay 0 and is killed. The client's CONNECT on B waits for A's hand-over, and B is killed before it
// gives up waiting (it would claim A's will then). The client's next CONNECT, on C, waits for B's connection,
// not for A's, and so claims nothing of A's; the processors end only the client's newest connection, C's.
// Before, nobody ever ended A's connection: its will was lost. Now its marker, which carries the will until a
// claim of its end is written, is claimed by the partition's processor once A is known dead.
//
// The same holds for a connection whose session ends with it (Clean Start 1, Session Expiry 0, "clean"): it
// wrote no marker before, so nothing carried its will once the client connected again, and the will was lost
// (a limit the last round left: "Deviations and limits"). A connection with a will is marked now whatever its
// session.
func TestOwedWillOfAnOlderConnectionWhoseHolderDied(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool   // A comes back under its id (it ends its previous run's connections); else it stays dead
		clean   bool   // every connection of the client has Clean Start 1 and Session Expiry 0
		delay   uint32 // the first connection's Will Delay (a clean one's will is due when it ends all the same)
	}{{"dead", false, false, 0}, {"restarted", true, false, 0}, {"clean dead", false, true, 0}, {"clean restarted", true, true, 0},
		{"clean delayed", false, true, 30}} {
		t.Run(tc.name, func(t *testing.T) {
			again := func() *paho.Connect { // the client's next CONNECTs (connectV5 fills in a keep-alive: one each)
				if tc.clean {
					return &paho.Connect{ClientID: "ow", CleanStart: true}
				}
				return persistent("ow", false)
			}
			_, kafka := startKafka(t)
			hb := server.Heartbeats(200*time.Millisecond, time.Second)
			if tc.restart {
				hb = server.Heartbeats(200*time.Millisecond, time.Minute) // nobody takes A for dead: its restart ends it
			}
			a := startInstance(t, kafka, hb, server.InstanceID("ow-a"))
			b := startInstance(t, kafka, hb, server.HandoffTimeout(30*time.Second))
			c := startInstance(t, kafka, hb, server.HandoffTimeout(time.Second))
			watch := dialV5(t, c.addr, &paho.Connect{ClientID: "ow-watch", CleanStart: true})
			watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})

			if tc.clean {
				connectWithWillExpiry(t, a.addr, "ow", tc.delay, 0)
			} else {
				connectWithWill(t, a.addr, "ow", 0)
			}
			time.Sleep(300 * time.Millisecond) // the will and the marker are in Kafka
			a.crash()                          // no claim of the connection's end reaches Kafka
			go func() {                        // waits for A's hand-over until B dies
				if cl, err := connectV5(b.addr, again()); err == nil {
					_ = cl.Disconnect(&paho.Disconnect{})
				}
			}()
			time.Sleep(300 * time.Millisecond) // B's CONNECT is in Kafka and waits (A is not known dead yet)
			b.crash()
			back := dialV5(t, c.addr, again()) // waits for B's connection, then resumes
			if !back.connack.SessionPresent && !tc.clean {
				t.Fatal("MQTT-3.2.2-2: session lost")
			}
			if tc.restart {
				startInstance(t, kafka, hb, server.InstanceID("ow-a"))
			}
			willOnce(t, watch, "ow")
		})
	}
}
