package server_test

import (
	"bytes"
	"context"
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
// (uncompressed) bytes contain key.
func fromTxn(req *kmsg.ProduceRequest, txn string, key []byte) bool {
	if req.TransactionID == nil || *req.TransactionID != txn {
		return false
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
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		id := key.Load()
		if id == nil || !fromTxn(req, txn, []byte("s:"+*id)) {
			return nil, nil, false
		}
		return produceError(req, kerr.InvalidRecord.Code), nil, true
	})
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
	// refused checks that the connection got DISCONNECT 0x80 and no ack.
	refused := func(t *testing.T, c *v5, what string, err error) {
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

	t.Run("SUBSCRIBE", func(t *testing.T) {
		id := "refused-sub"
		c := dialV5(t, a.addr, cp(id, true))
		c.sub(t, paho.SubscribeOptions{Topic: "kept/1", QoS: 1})
		refuse.Store(&id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "refused/1", QoS: 1}}})
		cancel()
		refused(t, c, "SUBSCRIBE", err)
		refuse.Store(nil)

		back := dialV5(t, b.addr, cp(id, false))
		if !back.connack.SessionPresent {
			t.Fatal("MQTT-3.2.2-2: the session stored before the refused SUBSCRIBE is gone")
		}
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ua, err := back.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"kept/1", "refused/1"}})
		if err != nil {
			t.Fatalf("unsubscribe: %v", err)
		}
		if want := []byte{0x00, 0x11}; !bytes.Equal(ua.Reasons, want) {
			t.Fatalf("UNSUBACK %#v on the other instance, want %#v: the stored session is kept/1 alone", ua.Reasons, want)
		}
	})

	t.Run("UNSUBSCRIBE", func(t *testing.T) {
		id := "refused-unsub"
		c := dialV5(t, a.addr, cp(id, true))
		c.sub(t, paho.SubscribeOptions{Topic: "kept/2", QoS: 1})
		refuse.Store(&id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"kept/2"}})
		cancel()
		refused(t, c, "UNSUBSCRIBE", err)
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
