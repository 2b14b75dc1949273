package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server"
)

// fetchGate holds back what a Ferry instance's Kafka fetch connections receive while it is closed: the
// instance's readers (the sessions reader among them) stop where they are, its produces go on.
type fetchGate struct {
	mu   sync.Mutex
	open chan struct{}
}

func newFetchGate() *fetchGate {
	g := &fetchGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *fetchGate) hold() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *fetchGate) release() {
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

func (g *fetchGate) wait() {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	<-ch
}

func (g *fetchGate) dial(ctx context.Context, network, host string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, g: g}, nil
}

// gatedConn is a Kafka connection; one that has sent a Fetch request (franz-go fetches on connections of
// their own) hands on nothing it reads while its gate is closed.
type gatedConn struct {
	net.Conn
	g     *fetchGate
	fetch atomic.Bool
}

func (c *gatedConn) Write(b []byte) (int, error) {
	// A request is its length (4 bytes), then its API key (2 bytes); franz-go writes each in one piece.
	if len(b) >= 6 && binary.BigEndian.Uint16(b[4:6]) == 1 {
		c.fetch.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *gatedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.fetch.Load() {
		c.g.wait()
	}
	return n, err
}

// gatedTrio starts three instances on the Kafka at addr: A and B with fetch gates, C without.
func gatedTrio(t *testing.T, addr string, opts ...server.Opt) (a, b, c *instance, ga, gb *fetchGate) {
	t.Helper()
	ga, gb = newFetchGate(), newFetchGate()
	a = startGated(t, addr, ga, opts...)
	b = startGated(t, addr, gb, opts...)
	c = startInstance(t, addr, opts...)
	t.Cleanup(ga.release)
	t.Cleanup(gb.release)
	return a, b, c, ga, gb
}

func startGated(t *testing.T, addr string, g *fetchGate, opts ...server.Opt) *instance {
	t.Helper()
	in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(addr),
		kafkamux.ExtraKgoOpts(kgo.Dialer(g.dial))}, nil, opts...)}
	t.Cleanup(in.stop)
	return in
}

// Compaction can remove an owner record that an instance's sessions reader has not reached yet, when a later
// record of the key — the CONNECT's own owner record — supersedes it (kfake compacts everything but a
// partition's last batch; docs/sessions.md, "Compaction"). The CONNECT's view then shows nobody holding the
// client, though another instance does: resumed at once from the holder's last periodic delivery record, it
// delivered again what the holder had delivered since (the checker's QoS 2 duplicate). The delivery record
// of the held connection, newer than every owner record in the view, gives the compaction away: the CONNECT
// waits for the hand-over as for a known holder.
func TestHandOverWhenCompactionRemovedTheOwnerRecord(t *testing.T) {
	cluster, kafka := startKafka(t)
	// No periodic saves: the only delivery record of A's connection is the one C hands over to it.
	opts := []server.Opt{server.HandoffTimeout(30 * time.Second), server.SaveEvery(time.Hour)}
	a, b, c, ga, gb := gatedTrio(t, kafka, opts...)

	gb.hold() // B reads nothing of what follows until the topic is compacted
	zero := dialV5(t, c.addr, persistent("compacted", true))
	zero.sub(t, paho.SubscribeOptions{Topic: "compacted/t", QoS: 1})
	first := dialV5(t, a.addr, persistent("compacted", false)) // C hands the session over: d: names A's connection
	pub := dialV5(t, c.addr, &paho.Connect{ClientID: "compacted-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "compacted/t", QoS: 1, Payload: []byte("m1")})
	if m := first.next(t); string(m.Payload) != "m1" { // acknowledged on A, after the hand-over record
		t.Fatalf("got %q on A, want m1", m.Payload)
	}

	ga.hold() // A does not read B's owner record yet: it holds the client until the topic is compacted
	connack := connectAsync(t, b.addr, persistent("compacted", false))
	time.Sleep(300 * time.Millisecond) // B's owner record is written
	// Owner records of other clients, some in the client's sessions partition, after B's: B's own record is
	// then not its partition's last batch, which kfake never compacts.
	fillPartitions(t, c.addr, "compacted")
	cluster.Compact() // removes A's owner record of the client (B's is later), not the hand-over to A

	gb.release()
	select {
	case c := <-connack:
		if c != nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		t.Fatal("B answered the CONNECT while A still held the client: the decision missed the owner record compaction removed")
	case <-time.After(time.Second):
	}
	ga.release()
	second := connackOf(t, connack, "no CONNACK from B after A read its owner record")
	if !second.connack.SessionPresent {
		t.Error("Session Present 0 on B after A handed the session over")
	}
	takenOver(t, first, "MQTT-3.1.4-3: A did not disconnect the first connection with 0x8E")
	second.none(t, 500*time.Millisecond) // m1, delivered and acknowledged on A, is not delivered again
}

// A will due at once is published by the instance whose claim — the end record of the connection — is the
// first of its epoch in the log, once that instance reads the claim back. Compaction can remove the claim
// before even its writer's reader gets there, when a later record of the owner key supersedes it: here the
// client's next CONNECT, on B, while A's fetches are held. A then read the pending will and never its claim,
// and nobody published the will (the checker's wills lost with frequent compaction). A claims it again, in the
// next round, at its first processor round after the claim was acknowledged: the will comes once.
func TestPendingWillClaimedAgainWhenCompactionRemovedTheClaim(t *testing.T) {
	cluster, kafka := startKafka(t)
	hb := server.Heartbeats(200*time.Millisecond, time.Second)
	ga := newFetchGate()
	a := startGated(t, kafka, ga, hb, server.InstanceID("claimer"))
	b := startInstance(t, kafka, hb, server.InstanceID("other"))
	t.Cleanup(ga.release)
	watch := dialV5(t, b.addr, &paho.Connect{ClientID: "cc-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	claimed := make(chan struct{})
	var once sync.Once
	server.SetClaimHook(a.srv, func() bool { once.Do(func() { close(claimed) }); return false })

	r := connectWithWill(t, a.addr, "cc", 0)
	ga.hold() // A reads nothing of what follows until the topic is compacted
	r.nc.Close()
	select {
	case <-claimed: // the pending will is in Kafka; the claim follows it on the same producer
	case <-time.After(10 * time.Second):
		t.Fatal("A did not claim the end of the dropped connection")
	}
	for i := 0; !bytes.Contains(readSessions(t, kafka)["o:cc"], []byte(`"connected":false`)); i++ {
		if i == 5 {
			t.Fatal("A's claim is not in Kafka")
		}
	}
	back := dialV5(t, b.addr, persistent("cc", false)) // B read A's claim: no hand-over; its owner record supersedes the claim
	t.Cleanup(func() { _ = back.Disconnect(&paho.Disconnect{}) })
	// Owner records of other clients, some in the client's partition: B's is then not its partition's last
	// batch, which kfake never compacts.
	fillPartitions(t, b.addr, "cc")
	cluster.Compact() // removes A's claim, not its pending will
	ga.release()

	willOnce(t, watch, "cc")
}

// Compaction can leave a CONNECT's view no trace at all of the connection holding the client: B's reader
// lags, A — the holder — reads B's owner record first and hands over at once, and a compaction then removes
// A's owner record (superseded by B's) and every delivery record before A's hand-over (superseded by it, after
// B's record). B's view showed the client's earlier connection ended, B resumed from that connection's final
// delivery record, and the message A had delivered and the client acknowledged since went out again. A's
// connection marker ("c:"), a key only its tombstone supersedes, is still in B's view: B waits for the hand-over.
func TestHandOverWhenCompactionRemovedEveryRecordOfTheHolder(t *testing.T) {
	cluster, kafka := startKafka(t)
	// No periodic saves: A's only delivery record is its hand-over.
	opts := []server.Opt{server.HandoffTimeout(30 * time.Second), server.SaveEvery(time.Hour)}
	gb := newFetchGate()
	a := startInstance(t, kafka, opts...)
	b := startGated(t, kafka, gb, opts...)
	c := startInstance(t, kafka, opts...)
	t.Cleanup(gb.release)

	zero := dialV5(t, c.addr, persistent("hidden", true))
	zero.sub(t, paho.SubscribeOptions{Topic: "hidden/t", QoS: 1})
	if err := zero.Disconnect(&paho.Disconnect{}); err != nil { // C writes the final delivery record and the end
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // B has read them
	gb.hold()                          // B reads nothing of what follows until the topic is compacted
	// Kafka answers a fetch waiting for records as soon as there are some: B's next answer is then held
	// with these in it, and B's next fetch, sent once it is read, is answered from the compacted log.
	dialV5(t, c.addr, &paho.Connect{ClientID: "hidden-wake", CleanStart: true})
	time.Sleep(300 * time.Millisecond)
	first := dialV5(t, a.addr, persistent("hidden", false))
	pub := dialV5(t, c.addr, &paho.Connect{ClientID: "hidden-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "hidden/t", QoS: 1, Payload: []byte("m1")})
	if m := first.next(t); string(m.Payload) != "m1" {
		t.Fatalf("got %q on A, want m1", m.Payload)
	}
	time.Sleep(300 * time.Millisecond) // the client's PUBACK (sent once the handler returned) is read by A

	connack := connectAsync(t, b.addr, persistent("hidden", false))
	takenOver(t, first, "MQTT-3.1.4-3: A did not disconnect the first connection with 0x8E") // its hand-over is written
	// Owner records of other clients, some in the client's partition: A's hand-over is then not its
	// partition's last batch, which kfake never compacts.
	fillPartitions(t, c.addr, "hidden")
	cluster.Compact() // removes A's owner record and C's delivery record, superseded after B's owner record
	gb.release()

	second := connackOf(t, connack, "no CONNACK from B")
	if !second.connack.SessionPresent {
		t.Error("Session Present 0 on B")
	}
	second.none(t, 500*time.Millisecond) // m1, delivered and acknowledged on A, is not delivered again
}

// A normal DISCONNECT decides that the connection's will is not published: its holder's end record, the first
// of the epoch, says so. A CONNECT on another instance whose owner record came before that end record in the
// log waits for the holder: its view shows the client connected there, with its will. A session that ends
// with its connection tombstones its owner key right after the end record, so compaction can remove the end
// record before this instance's reader gets there; the wait then ended on the connection marker's tombstone
// with no end of that connection read, and the CONNECT claimed the will as if the holder had died without
// ending it (claimMissedWill): a will published after a normal DISCONNECT — or twice, after a dropped
// connection whose holder had claimed it: the checker's two will anomalies with frequent compaction. The
// marker's tombstone comes after the holder's end record: the holder decided, and the CONNECT claims nothing.
func TestNoWillClaimedWhenCompactionRemovedTheHoldersEnd(t *testing.T) {
	cluster, kafka := startKafka(t)
	opts := []server.Opt{server.HandoffTimeout(30 * time.Second)}
	a, b, c, ga, gb := gatedTrio(t, kafka, opts...)
	watch := dialV5(t, c.addr, &paho.Connect{ClientID: "ended-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})

	// A session that ends with its connection, with a will of delay 0; Clean Start 0, so the connection is
	// marked (conns.go).
	noExpiry := &paho.ConnectProperties{SessionExpiryInterval: u32(0)}
	first := dialV5(t, a.addr, &paho.Connect{ClientID: "ended", WillMessage: &paho.WillMessage{Topic: "wills/ended", QoS: 1,
		Payload: []byte("gone")}, Properties: noExpiry})
	time.Sleep(300 * time.Millisecond) // B has read A's owner record and the will
	ga.hold()                          // A does not read B's owner record: the DISCONNECT ends its connection, not a takeover
	// Kafka answers a fetch waiting for records as soon as there are some: A's next answer is held with this
	// one in it.
	dialV5(t, c.addr, &paho.Connect{ClientID: "ended-wake-a", CleanStart: true})
	connack := connectAsync(t, b.addr, &paho.Connect{ClientID: "ended", Properties: noExpiry})
	time.Sleep(500 * time.Millisecond) // B has read its own owner record: it waits for A
	gb.hold()                          // B reads nothing of what follows until the topic is compacted
	dialV5(t, c.addr, &paho.Connect{ClientID: "ended-wake-b", CleanStart: true})
	time.Sleep(300 * time.Millisecond)
	if err := first.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // A's end record, then the tombstones of its marker and of the owner key
	// Owner records of other clients, some in the client's partition: A's tombstones are then not their
	// partition's last batch, which kfake never compacts.
	fillPartitions(t, c.addr, "ended")
	cluster.Compact() // removes A's end record, superseded by the owner key's tombstone
	gb.release()
	ga.release()

	connackOf(t, connack, "no CONNACK from B")
	watch.none(t, 2*time.Second) // [MQTT-3.1.2-10] the DISCONNECT deleted the will
}

// connectAsync connects cp to addr on a goroutine, for a CONNACK that waits (a hand-over): the channel gets the
// client, or is closed if the CONNECT failed (the test is failed then).
func connectAsync(t *testing.T, addr string, cp *paho.Connect) chan *v5 {
	connack := make(chan *v5, 1)
	go func() {
		c, err := connectV5(addr, cp)
		if err != nil {
			t.Errorf("connect %s: %v", cp.ClientID, err)
			close(connack)
			return
		}
		connack <- c
	}()
	return connack
}

// connackOf waits for the client of connectAsync, failing with what if it does not come within 15 s; the client
// disconnects at the end of the test.
func connackOf(t *testing.T, connack chan *v5, what string) *v5 {
	t.Helper()
	var c *v5
	select {
	case c = <-connack:
	case <-time.After(15 * time.Second):
		t.Fatal(what)
	}
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// fillPartitions connects 30 clean clients through addr: their owner records, some in any given sessions
// partition, make the records before them not their partition's last batch, which kfake never compacts.
func fillPartitions(t *testing.T, addr, prefix string) {
	t.Helper()
	for i := range 30 {
		dialV5(t, addr, &paho.Connect{ClientID: prefix + "-" + strconv.Itoa(i), CleanStart: true})
	}
}
