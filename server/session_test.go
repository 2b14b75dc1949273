package server_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

func u32(v uint32) *uint32 { return &v }

// A second connection with the same client id takes the session over; the first gets DISCONNECT 0x8E.
func TestTakeover(t *testing.T) {
	f := startFerry(t)
	first := dialV5(t, f.addr, &paho.Connect{ClientID: "dup", CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(60)}})
	first.sub(t, paho.SubscribeOptions{Topic: "to/#", QoS: 1})
	second := dialV5(t, f.addr, &paho.Connect{ClientID: "dup", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(60)}})
	select {
	case d := <-first.discons:
		if d.ReasonCode != byte(mqttcodec.SessionTakenOver) {
			t.Fatalf("MQTT-3.1.4-3: first connection got DISCONNECT %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("MQTT-3.1.4-3: first connection was not told of the takeover")
	}
	if !second.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: session present = 0 on takeover with CleanStart=0")
	}
	// The subscription moved with the session.
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "dup-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "to/x", QoS: 1, Payload: []byte("after")})
	if m := second.next(t); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	}
}

// A v5 session with an expiry keeps subscriptions and queued messages; unacknowledged QoS 1 messages are
// re-sent with DUP on resume.
func TestResumeV5(t *testing.T) {
	f := startFerry(t)
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "res-pub", CleanStart: true})

	// A raw subscriber receives a QoS 1 message and never acknowledges it.
	r := dialRaw(t, f.addr)
	cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, KeepAlive: 30, ClientID: []byte("res"), CleanStart: true}
	cp.Props.SessionExpiry = 300
	cp.Props.Set(mqttcodec.PropSessionExpiry)
	r.send(mqttcodec.AppendConnect(nil, &cp))
	r.packet()
	s := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte("res/#"), QoS: 1}}}
	r.send(mqttcodec.AppendSubscribe(nil, &s, 5))
	if fh, _ := r.packet(); fh.Type != mqttcodec.SUBACK {
		t.Fatalf("got %s", mqttcodec.TypeName(fh.Type))
	}
	pub.pub(t, &paho.Publish{Topic: "res/1", QoS: 1, Payload: []byte("unacked")})
	fh, body := r.packet()
	var p mqttcodec.Publish
	if fh.Type != mqttcodec.PUBLISH || p.Decode(fh, body, 5) != nil || p.Dup {
		t.Fatalf("first delivery: %s dup=%v", mqttcodec.TypeName(fh.Type), p.Dup)
	}
	r.nc.Close() // gone without PUBACK

	time.Sleep(200 * time.Millisecond)
	for i := 0; i < 20; i++ {
		pub.pub(t, &paho.Publish{Topic: "res/1", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	time.Sleep(300 * time.Millisecond)
	back := dialV5(t, f.addr, &paho.Connect{ClientID: "res", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}})
	if !back.connack.SessionPresent {
		t.Fatal("session not present")
	}
	m := back.next(t)
	if string(m.Payload) != "unacked" || !m.Duplicate() {
		t.Fatalf("MQTT-4.4.0-1: first message %q dup=%v, want the unacknowledged one re-sent with DUP", m.Payload, m.Duplicate())
	}
	for i := 0; i < 20; i++ {
		if m := back.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("queued message %d: got %q", i, m.Payload)
		}
	}
}

// A session without expiry ends with its connection: reconnecting finds nothing.
func TestCleanSessionEnds(t *testing.T) {
	f := startFerry(t)
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "gone", CleanStart: true})
	c.sub(t, paho.SubscribeOptions{Topic: "gone/#", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	time.Sleep(100 * time.Millisecond)
	again := dialV5(t, f.addr, &paho.Connect{ClientID: "gone", CleanStart: false})
	if again.connack.SessionPresent {
		t.Fatal("MQTT-3.1.2-?: session present after a session with expiry 0 ended")
	}
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "gone-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "gone/1", QoS: 1, Payload: []byte("x")})
	again.none(t, 300*time.Millisecond)
}

// Wills: sent on an abnormal end, not on a normal DISCONNECT, sent on DISCONNECT 0x04.
func TestWill(t *testing.T) {
	f := startFerry(t)
	watch := dialV5(t, f.addr, &paho.Connect{ClientID: "watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1})
	willConnect := func(id string) *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: true, WillMessage: &paho.WillMessage{Topic: "will/" + id, QoS: 1, Payload: []byte("bye " + id)}}
	}
	t.Run("MQTT-3.1.2-8/abnormal-end-sends-will", func(t *testing.T) {
		r := dialRaw(t, f.addr)
		cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, KeepAlive: 30, ClientID: []byte("crash"), CleanStart: true,
			WillFlag: true, WillQoS: 1, WillTopic: []byte("will/crash"), WillPayload: []byte("bye crash")}
		r.send(mqttcodec.AppendConnect(nil, &cp))
		r.packet()
		r.nc.Close()
		if m := watch.next(t); m.Topic != "will/crash" || string(m.Payload) != "bye crash" {
			t.Fatalf("got %s %q", m.Topic, m.Payload)
		}
	})
	t.Run("MQTT-3.1.2-10/normal-disconnect-deletes-will", func(t *testing.T) {
		c := dialV5(t, f.addr, willConnect("polite"))
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		watch.none(t, 300*time.Millisecond)
	})
	t.Run("MQTT-3.14.4-3/disconnect-with-will", func(t *testing.T) {
		c := dialV5(t, f.addr, willConnect("asks"))
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0x04})
		if m := watch.next(t); m.Topic != "will/asks" {
			t.Fatalf("got %s", m.Topic)
		}
	})
}

// The client's Receive Maximum bounds unacknowledged QoS 1 deliveries [MQTT-3.3.4-9].
func TestOutboundReceiveMaximum(t *testing.T) {
	f := startFerry(t)
	r := dialRaw(t, f.addr)
	cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, KeepAlive: 30, ClientID: []byte("narrow"), CleanStart: true}
	cp.Props.ReceiveMaximum = 2
	cp.Props.Set(mqttcodec.PropReceiveMaximum)
	r.send(mqttcodec.AppendConnect(nil, &cp))
	r.packet()
	s := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte("n"), QoS: 1}}}
	r.send(mqttcodec.AppendSubscribe(nil, &s, 5))
	r.packet()
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "narrow-pub", CleanStart: true})
	for i := 0; i < 5; i++ {
		pub.pub(t, &paho.Publish{Topic: "n", QoS: 1, Payload: []byte{byte('0' + i)}})
	}
	var ids []uint16
	for i := 0; i < 2; i++ {
		fh, body := r.packet()
		var p mqttcodec.Publish
		if err := p.Decode(fh, body, 5); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.PacketID)
	}
	if _, _, err := r.tryPacketWithin(5 * time.Second); err == nil {
		t.Fatal("MQTT-3.3.4-9: a third PUBLISH arrived with a Receive Maximum of 2")
	}
	a := mqttcodec.Ack{Type: mqttcodec.PUBACK, PacketID: ids[0]}
	r.send(mqttcodec.AppendAck(nil, &a, 5))
	if fh, _ := r.packet(); fh.Type != mqttcodec.PUBLISH {
		t.Fatalf("after one PUBACK got %s, want the next PUBLISH", mqttcodec.TypeName(fh.Type))
	}
}

// A message larger than the client's Maximum Packet Size is not sent to it [MQTT-3.1.2-24].
func TestClientMaximumPacketSize(t *testing.T) {
	f := startFerry(t)
	small := dialV5(t, f.addr, &paho.Connect{ClientID: "small", CleanStart: true, Properties: &paho.ConnectProperties{MaximumPacketSize: u32(128)}})
	small.sub(t, paho.SubscribeOptions{Topic: "sz", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "sz-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "sz", QoS: 1, Payload: bytes.Repeat([]byte("x"), 500)})
	pub.pub(t, &paho.Publish{Topic: "sz", QoS: 1, Payload: []byte("fits")})
	if m := small.next(t); string(m.Payload) != "fits" {
		t.Fatalf("got %d bytes, want only the message that fits", len(m.Payload))
	}
}

// Client identifiers: an empty one is assigned (v5) or refused when the session would persist (v3.1.1).
func TestClientIdentifiers(t *testing.T) {
	f := startFerry(t)
	t.Run("MQTT-3.2.2-16/assigned-client-id", func(t *testing.T) {
		c := dialV5(t, f.addr, &paho.Connect{ClientID: "", CleanStart: true})
		if c.connack.Properties.AssignedClientID == "" {
			t.Fatal("no Assigned Client Identifier")
		}
	})
	t.Run("MQTT-3.1.3-8/empty-id-persistent-v311", func(t *testing.T) {
		r := dialRaw(t, f.addr)
		cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 4, KeepAlive: 30, CleanStart: false}
		r.send(mqttcodec.AppendConnect(nil, &cp))
		fh, body := r.packet()
		if fh.Type != mqttcodec.CONNACK || !bytes.Equal(body, []byte{0, 2}) {
			t.Fatalf("got %s % x, want CONNACK return code 2", mqttcodec.TypeName(fh.Type), body)
		}
		r.expectClosed()
	})
	t.Run("MQTT-3.1.2-3/mqtt31-MQIsdp", func(t *testing.T) {
		r := dialRaw(t, f.addr)
		r.connect(mqttcodec.Version31, "old-device")
	})
}

// More connections than allowed get CONNACK 0x97 (v5) or 3 (v3); the others keep working.
func TestMaxConnections(t *testing.T) {
	f := startFerry(t, server.MaxConnections(2))
	a := dialV5(t, f.addr, &paho.Connect{ClientID: "a", CleanStart: true})
	dialV5(t, f.addr, &paho.Connect{ClientID: "b", CleanStart: true})
	_, err := connectV5(f.addr, &paho.Connect{ClientID: "c", CleanStart: true})
	if err == nil {
		t.Fatal("a third connection was accepted")
	}
	r := dialRaw(t, f.addr)
	cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 4, KeepAlive: 30, ClientID: []byte("d"), CleanStart: true}
	r.send(mqttcodec.AppendConnect(nil, &cp))
	if fh, body := r.packet(); fh.Type != mqttcodec.CONNACK || !bytes.Equal(body, []byte{0, 3}) {
		t.Fatalf("v3: got % x, want return code 3", body)
	}
	a.sub(t, paho.SubscribeOptions{Topic: "still", QoS: 0})
}

// Retain Handling 1 sends retained messages only for a new subscription, 2 never; Retain As Published keeps
// the flag on live messages.
func TestRetainOptions(t *testing.T) {
	f := startFerry(t)
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "ro-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "ro/t", QoS: 1, Retain: true, Payload: []byte("r")})
	time.Sleep(300 * time.Millisecond)
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "ro", CleanStart: true})
	c.sub(t, paho.SubscribeOptions{Topic: "ro/#", QoS: 1, RetainHandling: 1})
	if m := c.next(t); !m.Retain {
		t.Fatal("MQTT-3.3.1-10: retained message not sent for a new subscription")
	}
	c.sub(t, paho.SubscribeOptions{Topic: "ro/#", QoS: 1, RetainHandling: 1})
	c.none(t, 300*time.Millisecond) // [MQTT-3.3.1-10] not again for an existing one
	c.sub(t, paho.SubscribeOptions{Topic: "ro/+", QoS: 1, RetainHandling: 2, RetainAsPublished: true})
	c.none(t, 300*time.Millisecond) // [MQTT-3.3.1-11]
	pub.pub(t, &paho.Publish{Topic: "ro/t", QoS: 1, Retain: true, Payload: []byte("live")})
	if m := c.next(t); !m.Retain {
		t.Fatal("MQTT-3.3.1-13: Retain As Published subscription got RETAIN=0")
	}
}

// Per-session quotas: subscriptions beyond the maximum get 0x97 in SUBACK, and topic aliases beyond their
// byte budget end the connection with 0x97.
func TestQuotas(t *testing.T) {
	f := startFerry(t, server.MaxSubscriptions(2), server.TopicAliasBytes(64))
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "greedy", CleanStart: true})
	sa, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "q/1", QoS: 1}, {Topic: "q/2", QoS: 1}, {Topic: "q/3", QoS: 1}}})
	if sa == nil {
		t.Fatalf("no SUBACK: %v", err)
	}
	if got := sa.Reasons; len(got) != 3 || got[0] != 1 || got[1] != 1 || got[2] != byte(mqttcodec.QuotaExceeded) {
		t.Fatalf("SUBACK reasons %v, want [1 1 0x97]", got)
	}
	if sa := c.sub(t, paho.SubscribeOptions{Topic: "q/1", QoS: 0}); sa.Reasons[0] != 0 {
		t.Fatalf("re-subscribing an existing filter: %v", sa.Reasons)
	}
	r := dialRaw(t, f.addr)
	r.connect(5, "aliaser")
	for i := uint16(1); i <= 3; i++ {
		p := mqttcodec.Publish{Topic: bytes.Repeat([]byte{'a' + byte(i)}, 30), QoS: 0}
		p.Props.TopicAlias = i
		p.Props.Set(mqttcodec.PropTopicAlias)
		r.send(mqttcodec.AppendPublish(nil, &p, 5))
	}
	r.expectDisconnect(mqttcodec.QuotaExceeded)
}
