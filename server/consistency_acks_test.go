package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// Acknowledged session changes are in Kafka (docs/sessions.md, "Consistency"): a SUBACK or UNSUBACK of a
// persistent session goes out only once Kafka has acknowledged the session record of the change, so an
// instance that dies right after the ack cannot take the change with it.

// startInstanceTxn starts an instance on the Kafka at addr whose producer uses transactional id txn and no
// compression, so a kfake control function can tell its produce requests apart and look for a key in them.
func startInstanceTxn(t testing.TB, addr, txn string, opts ...server.Opt) *instance {
	t.Helper()
	in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(addr), kafkamux.Transactions(txn),
		kafkamux.ProduceCompression(kgo.NoCompression())}, nil, opts...)}
	t.Cleanup(in.stop)
	return in
}

// fromTxn reports whether a produce request comes from transactional id txn and carries a record whose
// (uncompressed) bytes contain key; with key nil, whether it comes from txn.
func fromTxn(req *kmsg.ProduceRequest, txn string, key []byte) bool {
	if req.TransactionID == nil || *req.TransactionID != txn {
		return false
	}
	if key == nil {
		return true
	}
	for _, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			if bytes.Contains(rp.Records, key) {
				return true
			}
		}
	}
	return false
}

// holdBack holds produce requests back in kfake: the first one first matches, and every later one rest
// matches, until release is called (any number of times). stalled is closed when the first is held.
func holdBack(cluster *kfake.Cluster, first, rest func(*kmsg.ProduceRequest) bool) (stalled chan struct{}, release func()) {
	gate := make(chan struct{})
	var stalling atomic.Bool
	stalled = make(chan struct{})
	cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-gate:
			cluster.DropControl()
			return nil, nil, false
		default:
		}
		cluster.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		if stalling.Load() {
			if !rest(req) {
				return nil, nil, false
			}
		} else if first(req) {
			stalling.Store(true)
			close(stalled)
		} else {
			return nil, nil, false
		}
		cluster.SleepControl(func() { <-gate })
		return nil, nil, false
	})
	return stalled, sync.OnceFunc(func() { close(gate) })
}

// produceError answers a produce request with code for every partition.
func produceError(req *kmsg.ProduceRequest, code int16) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	resp.Version = req.Version
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// refuseSessionRecords makes Kafka refuse (INVALID_RECORD, not retried) the writes of instance txn that carry
// the session record of the client named in *key, while key holds a name.
func refuseSessionRecords(c *kfake.Cluster, txn string, key *atomic.Pointer[string]) {
	refuseRecords(c, txn, "s:", key)
}

// refuseRecords is refuseSessionRecords for the records whose key is prefix followed by the client id.
func refuseRecords(c *kfake.Cluster, txn, prefix string, key *atomic.Pointer[string]) {
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		id := key.Load()
		if id == nil || !fromTxn(req, txn, []byte(prefix+*id)) {
			return nil, nil, false
		}
		return produceError(req, kerr.InvalidRecord.Code), nil, true
	})
}

// refusedByKafka checks that the connection got DISCONNECT 0x80 and no ack.
func refusedByKafka(t *testing.T, c *v5, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s acknowledged although Kafka refused the session record", what)
	}
	select {
	case d := <-c.discons:
		if d.ReasonCode != byte(mqttcodec.UnspecifiedError) {
			t.Fatalf("%s refused by Kafka: DISCONNECT %#x, want 0x80", what, d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s refused by Kafka: no DISCONNECT", what)
	}
}

// A SUBACK or UNSUBACK of a persistent session is an acknowledgement that the change is in Kafka, like a
// PUBACK. When Kafka refuses the session record, the client gets no ack but DISCONNECT 0x80 with a reason, and
// the session another instance restores is the one Kafka holds: the refused subscription is not there, the
// refused unsubscription did not happen.
func TestSessionChangeAckedOnlyOnceStored(t *testing.T) {
	cluster, kafka := startKafka(t)
	a := startInstanceTxn(t, kafka, "acks-a")
	b := startInstance(t, kafka)
	var refuse atomic.Pointer[string]
	refuseSessionRecords(cluster, "acks-a", &refuse)
	cp := func(id string, clean bool) *paho.Connect {
		return &paho.Connect{ClientID: id, CleanStart: clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}}
	}

	// A CONNECT that creates a session: CONNACK 0x88 (v3: return code 3), never a session that Kafka does not
	// hold; the other instance finds none.
	t.Run("CONNECT", func(t *testing.T) {
		for _, v := range []byte{mqttcodec.Version5, mqttcodec.Version311} {
			id := fmt.Sprintf("refused-new-v%d", v)
			want := byte(mqttcodec.ServerUnavailable)
			if v != mqttcodec.Version5 {
				want = 3
			}
			refuse.Store(&id)
			reason, _ := connackReason(t, a.addr, v, id)
			refuse.Store(nil)
			if reason != want {
				t.Fatalf("v%d: CONNACK %#x for a session Kafka refused to store, want %#x", v, reason, want)
			}
			back := dialV5(t, b.addr, cp(id, false))
			if back.connack.SessionPresent {
				t.Fatalf("v%d: MQTT-3.2.2-2: Session Present 1 for a session that was never stored", v)
			}
		}
	})

	// The session as Kafka holds it, on the other instance and on the same one: an instance's own index holds
	// what Kafka acknowledged, not what it tried to write. (Before, the instance applied its session records to
	// its index as it wrote them, and restored the refused subscription there, and only there.)
	for _, back := range []struct {
		name string
		in   *instance
	}{{"SUBSCRIBE", b}, {"SUBSCRIBE, back on the same instance", a}} {
		t.Run(back.name, func(t *testing.T) {
			id := "refused-sub-" + back.in.addr
			c := dialV5(t, a.addr, cp(id, true))
			c.sub(t, paho.SubscribeOptions{Topic: "kept/1", QoS: 1})
			refuse.Store(&id)
			defer refuse.Store(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "refused/1", QoS: 1}}})
			cancel()
			refusedByKafka(t, c, "SUBSCRIBE", err)
			refuse.Store(nil)

			again := dialV5(t, back.in.addr, cp(id, false))
			if !again.connack.SessionPresent {
				t.Fatal("MQTT-3.2.2-2: the session stored before the refused SUBSCRIBE is gone")
			}
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ua, err := again.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"kept/1", "refused/1"}})
			if err != nil {
				t.Fatalf("unsubscribe: %v", err)
			}
			if want := []byte{0x00, 0x11}; !bytes.Equal(ua.Reasons, want) {
				t.Fatalf("UNSUBACK %#v, want %#v: the stored session is kept/1 alone", ua.Reasons, want)
			}
		})
	}

	// A v3.1.1 SUBACK cannot say why (0x80 would read as "not granted" for a change that may be in Kafka after
	// all): the connection is closed without it.
	t.Run("SUBSCRIBE v3.1.1", func(t *testing.T) {
		id := "v3-refused-sub"
		r := dialRaw(t, a.addr)
		cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version311, KeepAlive: 30, ClientID: []byte(id)}
		r.send(mqttcodec.AppendConnect(nil, &cp)) // CleanSession 0: a persistent session
		if fh, body := r.packet(); fh.Type != mqttcodec.CONNACK || len(body) != 2 || body[1] != 0 {
			t.Fatalf("got %s %x, want CONNACK 0", mqttcodec.TypeName(fh.Type), body)
		}
		refuse.Store(&id)
		defer refuse.Store(nil)
		r.send(mqttcodec.AppendSubscribe(nil, &mqttcodec.Subscribe{PacketID: 1,
			Subs: []mqttcodec.Subscription{{Filter: []byte("refused/v3"), QoS: 1}}}, mqttcodec.Version311))
		fh, _, err := r.tryPacket()
		if err == nil {
			t.Fatalf("got %s although Kafka refused the session record, want the connection closed", mqttcodec.TypeName(fh.Type))
		}
		if err != io.EOF && !isReset(err) {
			t.Fatalf("connection not closed: %v", err)
		}
	})

	t.Run("UNSUBSCRIBE", func(t *testing.T) {
		id := "refused-unsub"
		c := dialV5(t, a.addr, cp(id, true))
		c.sub(t, paho.SubscribeOptions{Topic: "kept/2", QoS: 1})
		refuse.Store(&id)
		defer refuse.Store(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"kept/2"}})
		cancel()
		refusedByKafka(t, c, "UNSUBSCRIBE", err)
		refuse.Store(nil)

		back := dialV5(t, b.addr, cp(id, false))
		if !back.connack.SessionPresent {
			t.Fatal("MQTT-3.2.2-2: the session stored before the refused UNSUBSCRIBE is gone")
		}
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ua, err := back.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"kept/2"}})
		if err != nil {
			t.Fatalf("unsubscribe: %v", err)
		}
		if ua.Reasons[0] != 0x00 {
			t.Fatalf("UNSUBACK %#x on the other instance: the refused UNSUBSCRIBE took effect", ua.Reasons[0])
		}
	})
}

// A client whose connection drops (no DISCONNECT) and that connects at once to another instance, then moves
// on to a third: the third instance waits for the second one's hand-over, however late the first instance's
// end record of the dropped connection reaches Kafka. The index follows the newest connection of a client:
// an end record of an older connection, read after a newer CONNECT, does not make the client look
// disconnected. Without that, the third instance decided without the hand-over and resumed from the second
// one's last periodic state — found by `ferry-chaos sessions --close-every 5`, where it lost subscriptions and
// resurrected unsubscribed ones; here it shows as QoS 1 messages the client had acknowledged on the second
// instance being delivered again on the third.
func TestLateEndRecordOfDroppedConnection(t *testing.T) {
	cluster, kafka := startKafka(t)
	a := startInstanceTxn(t, kafka, "late-a")
	b := startInstance(t, kafka, server.HandoffTimeout(300*time.Millisecond), server.SaveEvery(time.Hour))
	c := startInstance(t, kafka)
	pub := dialV5(t, c.addr, &paho.Connect{ClientID: "late-pub", CleanStart: true})
	cp := func(clean bool) *paho.Connect {
		return &paho.Connect{ClientID: "late", CleanStart: clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}}
	}
	first := dialV5(t, a.addr, cp(true))
	first.sub(t, paho.SubscribeOptions{Topic: "late/in", QoS: 1})

	// From the record that ends the dropped connection on, A's writes wait until release.
	stalled, release := holdBack(cluster,
		func(req *kmsg.ProduceRequest) bool { return fromTxn(req, "late-a", []byte("o:late")) },
		func(req *kmsg.ProduceRequest) bool { return fromTxn(req, "late-a", nil) })
	defer release()

	first.nc.Close() // dropped: no DISCONNECT
	select {
	case <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("A wrote no end record for the dropped connection")
	}
	// B cannot get a hand-over from A (its end record is held back): it resumes from the stored state.
	second := dialV5(t, b.addr, cp(false))
	if !second.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: B answered Session Present 0")
	}
	release() // A's end record of the dropped connection lands after B's CONNECT
	onA := dialV5(t, a.addr, &paho.Connect{ClientID: "late-sync", CleanStart: true})
	onA.pub(t, &paho.Publish{Topic: "late/sync", QoS: 1}) // PUBACK: A's earlier transactions are committed

	for i := 1; i <= 3; i++ {
		pub.pub(t, &paho.Publish{Topic: "late/in", QoS: 1, Payload: []byte{byte('0' + i)}})
		if m := second.next(t); string(m.Payload) != string(rune('0'+i)) {
			t.Fatalf("B delivered %q, want %d", m.Payload, i)
		}
	}
	// The client's own QoS 1 PUBLISH is read after its PUBACKs: once it is acknowledged, B has them all.
	second.pub(t, &paho.Publish{Topic: "late/sync", QoS: 1})

	third := dialV5(t, c.addr, cp(false))
	if !third.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: C answered Session Present 0")
	}
	select {
	case d := <-second.discons:
		if d.ReasonCode != byte(mqttcodec.SessionTakenOver) {
			t.Fatalf("B's connection got DISCONNECT %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("MQTT-3.1.4-3: B's connection was not told of the takeover")
	}
	pub.pub(t, &paho.Publish{Topic: "late/in", QoS: 1, Payload: []byte("4")})
	if m := third.next(t); string(m.Payload) != "4" {
		t.Fatalf("C delivered %q first, want 4: messages acknowledged on B came again (C did not wait for B's hand-over)", m.Payload)
	}
}

// A SUBACK promises that the messages published from then on reach the session, across a crash of its
// instance: the session's position in the messages topic (its "d:" record) must be in Kafka with its
// subscriptions, or a resume after a crash has a subscription without a position and replays nothing
// published while the instance was down. So the SUBACK waits for the delivery record too: when Kafka refuses
// it, the client gets DISCONNECT 0x80 and no SUBACK. Without transactions, so that the position record is
// refused on its own rather than with the transaction that carries the subscription (when both records go in
// one produce request, both are refused: no SUBACK either way).
func TestSubackWaitsForTheSessionsPosition(t *testing.T) {
	cluster, kafka := startKafka(t)
	a := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(kafka), kafkamux.Transactions(""),
		kafkamux.ProduceCompression(kgo.NoCompression())}, nil)}
	t.Cleanup(a.stop)
	id := "refused-position"
	var refuse atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		if !refuse.Load() {
			return nil, nil, false
		}
		pos := false
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				pos = pos || bytes.Contains(rp.Records, []byte("d:"+id))
			}
		}
		if !pos {
			return nil, nil, false
		}
		return produceError(req, kerr.InvalidRecord.Code), nil, true
	})
	c := dialV5(t, a.addr, &paho.Connect{ClientID: id, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}})
	refuse.Store(true)
	defer refuse.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "pos/1", QoS: 1}}})
	refusedByKafka(t, c, "SUBSCRIBE (its position record refused)", err)
}

// A CONNECT's will is in Kafka before its CONNACK: an instance killed right after the CONNACK must not take the
// will with it (the history checker lost one: the client's instance was killed, and the will record of its
// connection, written after the CONNACK, was in the transaction the kill aborted). If Kafka refuses the will's
// record the CONNECT is refused, 0x88 (v3.1.1: return code 3), and no will is published for it.
func TestConnackWaitsForTheWill(t *testing.T) {
	cluster, kafka := startKafka(t)
	a := startInstanceTxn(t, kafka, "will-ack-a")
	var refuse atomic.Pointer[string]
	refuseRecords(cluster, "will-ack-a", "w:", &refuse)
	watch := dialV5(t, a.addr, &paho.Connect{ClientID: "will-ack-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	for _, tc := range []struct {
		version byte
		expiry  uint32
		want    byte
	}{{mqttcodec.Version5, 0, byte(mqttcodec.ServerUnavailable)}, {mqttcodec.Version5, 600, byte(mqttcodec.ServerUnavailable)}, {mqttcodec.Version311, 0, 3}} {
		id := fmt.Sprintf("will-ack-v%d-%d", tc.version, tc.expiry)
		p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: tc.version, CleanStart: true, KeepAlive: 30, ClientID: []byte(id),
			WillFlag: true, WillQoS: 1, WillTopic: []byte("wills/" + id), WillPayload: []byte("refused")}
		if tc.expiry > 0 {
			p.Props.SessionExpiry = tc.expiry
			p.Props.Set(mqttcodec.PropSessionExpiry)
		}
		refuse.Store(&id)
		r := dialRaw(t, a.addr)
		r.send(mqttcodec.AppendConnect(nil, &p))
		fh, body := r.packet()
		refuse.Store(nil)
		var ack mqttcodec.Connack
		if err := ack.Decode(fh, body, tc.version); err != nil {
			t.Fatal(err)
		}
		if byte(ack.Reason) != tc.want {
			t.Fatalf("v%d, session expiry %d: CONNACK %#x although Kafka refused the will, want %#x", tc.version, tc.expiry, byte(ack.Reason), tc.want)
		}
		r.expectClosed()
	}
	watch.none(t, time.Second) // no will of a refused CONNECT
}
