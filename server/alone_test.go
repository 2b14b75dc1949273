package server_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// waitAlone connects throwaway clean clients until one is accepted without an owner record: the instance has
// found itself alone (its first heartbeat stored, then a read of the sessions topic with no other instance).
func waitAlone(t *testing.T, addr string, srv *server.Server) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; srv.Metrics().Snapshot().Unrecorded == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("a lone instance never accepted a clean CONNECT without an owner record")
		}
		// A recorded CONNECT may be refused (0x88) on a loaded machine before the reader's first fetch: retried.
		if c, err := connectV5(addr, &paho.Connect{ClientID: "probe", CleanStart: true}); err == nil {
			_ = c.Disconnect(&paho.Disconnect{})
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// On a lone instance, a CONNECT that asks for nothing to be kept (clean, no session expiry, no will) writes no
// owner record, at its start or its end; one that asks for a session or a will still does. The unrecorded
// connection works like any other.
func TestUnrecordedConnectOnLoneInstance(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	waitAlone(t, a.addr, a.srv)
	before := a.srv.Metrics().Snapshot().Unrecorded

	sub := dialV5(t, a.addr, &paho.Connect{ClientID: "lone-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "lone/#", QoS: 1})
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "lone-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "lone/x", QoS: 1, Payload: []byte("hello")})
	if m := sub.next(t); string(m.Payload) != "hello" {
		t.Fatalf("got %q", m.Payload)
	}
	if got := a.srv.Metrics().Snapshot().Unrecorded - before; got != 2 {
		t.Fatalf("%d CONNECTs accepted without an owner record, want 2", got)
	}
	dialV5(t, a.addr, &paho.Connect{ClientID: "lone-kept", CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(60)}})
	dialV5(t, a.addr, &paho.Connect{ClientID: "lone-will", CleanStart: true, WillMessage: &paho.WillMessage{Topic: "lone/will", Payload: []byte("bye")}})
	if got := a.srv.Metrics().Snapshot().Unrecorded - before; got != 2 {
		t.Fatalf("%d CONNECTs accepted without an owner record, want 2: a session or a will is recorded", got)
	}
	_ = sub.Disconnect(&paho.Disconnect{})
	_ = pub.Disconnect(&paho.Disconnect{})
	time.Sleep(500 * time.Millisecond)
	recs := readSessions(t, kafka)
	for _, k := range []string{"o:lone-sub", "o:lone-pub"} {
		if v, ok := recs[k]; ok {
			t.Errorf("%s written (%q) for a clean CONNECT on a lone instance", k, v)
		}
	}
	for _, k := range []string{"o:lone-kept", "o:lone-will"} {
		if recs[k] == nil {
			t.Errorf("%s not written for a CONNECT with a session or a will", k)
		}
	}
}

// [MQTT-3.1.4-3] across instances: a client connected without an owner record on a lone instance is
// disconnected when it connects to a second instance (which sees the first one's heartbeats, so records its
// CONNECT), and the first instance records its CONNECTs again from then on.
func TestUnrecordedConnectionTakenOverAcrossInstances(t *testing.T) {
	kafka, a, first := loneConnection(t, "roamer")
	b := startInstance(t, kafka)
	second := dialV5(t, b.addr, &paho.Connect{ClientID: "roamer", CleanStart: true})
	takenOver(t, first, "MQTT-3.1.4-3: the unrecorded connection on the lone instance was not told of the takeover")
	if second.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-1: session present = 1 on a clean start")
	}
	// a is not alone any more: a client that now moves from a to b is found by b through a's record.
	third := recordedConnection(t, a, "roamer-2")
	dialV5(t, b.addr, &paho.Connect{ClientID: "roamer-2", CleanStart: true})
	takenOver(t, third, "MQTT-3.1.4-3: the connection on the first instance was not told of the takeover")
}

// An unrecorded connection is older, in the sessions topic's log, than any owner record another instance
// writes for its client after it: it is disconnected whatever that record's epoch (another instance's clock
// may be behind this one's), as a recorded connection is when a newer CONNECT comes first in the log.
func TestUnrecordedConnectionYieldsToAnyLaterOwner(t *testing.T) {
	kafka, a, first := loneConnection(t, "skewed")
	// The owner record of a CONNECT on an instance whose clock is far behind: its epoch is older than the
	// unrecorded connection's.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	v := `{"v":1,"instance":"elsewhere","epoch":1,"connected":true,"at":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `,"expiry":0}`
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "mqtt-sessions", Key: []byte("o:skewed"), Value: []byte(v)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	takenOver(t, first, "MQTT-3.1.4-3: an unrecorded connection stayed after another instance's owner record of its client")
	// And the instance is no longer alone: the next clean CONNECT is recorded.
	recordedConnection(t, a, "after-skew")
}

// takenOver fails the test unless c is told within 5 s that its client id connected again (0x8E).
func takenOver(t *testing.T, c *v5, what string) {
	t.Helper()
	select {
	case d := <-c.discons:
		if d.ReasonCode != byte(mqttcodec.SessionTakenOver) {
			t.Fatalf("MQTT-3.1.4-3: got DISCONNECT %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(what)
	}
}

// loneConnection starts an instance on a Kafka of its own, waits until it is alone, and connects a clean client
// id to it, without an owner record.
func loneConnection(t *testing.T, id string) (string, *instance, *v5) {
	t.Helper()
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	waitAlone(t, a.addr, a.srv)
	before := a.srv.Metrics().Snapshot().Unrecorded
	c := dialV5(t, a.addr, &paho.Connect{ClientID: id, CleanStart: true})
	if a.srv.Metrics().Snapshot().Unrecorded != before+1 {
		t.Fatal("the connection was recorded: nothing to test")
	}
	return kafka, a, c
}

// recordedConnection connects a clean client id to a, which must record it: a has read another instance's
// records.
func recordedConnection(t *testing.T, a *instance, id string) *v5 {
	t.Helper()
	n := a.srv.Metrics().Snapshot().Unrecorded
	c := dialV5(t, a.addr, &paho.Connect{ClientID: id, CleanStart: true})
	if a.srv.Metrics().Snapshot().Unrecorded != n {
		t.Fatal("an instance that has read another instance's records still connects without an owner record")
	}
	return c
}
