package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Records from ordinary Kafka producers: with a valid key and no Ferry headers they reach subscribers of the
// key (QoS 1, other headers as user properties; headers that cannot be MQTT strings dropped); with a null key,
// a key that is not a valid MQTT topic name or an invalid reserved header they are skipped and counted, on the
// messages and on the retained topic, and the readers go on.
func TestKafkaBornInvalidRecords(t *testing.T) {
	f := startFerry(t)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "kb-all", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "#", QoS: 1})
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := func(topic string, key []byte, value string, h ...kgo.RecordHeader) *kgo.Record {
		return &kgo.Record{Topic: topic, Key: key, Value: []byte(value), Headers: h}
	}
	msgs, ret := f.mux.MessagesTopic(), f.mux.RetainedTopic()
	before := f.mux.Skipped()
	retainedRead := f.mux.TopicStats()[1].Read // messages, retained, sessions
	bad := []*kgo.Record{
		rec(msgs, nil, "null key"),
		rec(msgs, []byte{}, "empty key"),            // [MQTT-4.7.3-1]
		rec(msgs, []byte("a/+/b"), "plus"),          // [MQTT-3.3.2-2]
		rec(msgs, []byte("a/#"), "hash"),            // [MQTT-3.3.2-2]
		rec(msgs, []byte("a\x00b"), "NUL"),          // [MQTT-1.5.4-2]
		rec(msgs, []byte{'a', 0xc3, 0x28}, "UTF-8"), // [MQTT-1.5.4-1]
		rec(msgs, []byte(strings.Repeat("x", 65536)), "too long"),
		rec(msgs, []byte("ok/topic"), "bad qos", kgo.RecordHeader{Key: "mqtt.qos", Value: []byte("7")}),
		rec(msgs, []byte("ok/topic"), "wildcard response topic", kgo.RecordHeader{Key: "mqtt.response_topic", Value: []byte("r/#")}),
		rec(ret, []byte("r/+"), "retained plus"),
		rec(ret, []byte{0xff}, "retained UTF-8"),
	}
	if err := cl.ProduceSync(ctx, bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, rec(msgs, []byte("ok/after"), "valid",
		kgo.RecordHeader{Key: "trace-id", Value: []byte("abc")},
		kgo.RecordHeader{Key: "binary-span", Value: []byte{0xde, 0xad, 0xbe, 0xef}})).FirstErr(); err != nil {
		t.Fatal(err)
	}
	m := sub.next(t)
	if m.Topic != "ok/after" || string(m.Payload) != "valid" || m.QoS != 1 {
		t.Fatalf("got %s %q QoS %d, want the valid record after the invalid ones", m.Topic, m.Payload, m.QoS)
	}
	if m.Properties == nil || len(m.Properties.User) != 1 || m.Properties.User.Get("trace-id") != "abc" {
		t.Fatalf("user properties %+v, want only trace-id=abc", m.Properties)
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.mux.Skipped()-before != int64(len(bad)) {
		if time.Now().After(deadline) {
			t.Fatalf("%d records skipped, want %d", f.mux.Skipped()-before, len(bad))
		}
		time.Sleep(10 * time.Millisecond)
	}
	sub.none(t, 200*time.Millisecond)
	// The readers go on: a later retained record is served.
	deadline = time.Now().Add(10 * time.Second)
	late := dialV5(t, f.addr, &paho.Connect{ClientID: "kb-late", CleanStart: true})
	if err := cl.ProduceSync(ctx, rec(ret, []byte("r/ok"), "retained after")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Subscribe once the retained reader has handled every record written to the retained topic so far.
	for f.mux.TopicStats()[1].Read < retainedRead+3 {
		if time.Now().After(deadline) {
			t.Fatalf("retained reader read %d records, want %d", f.mux.TopicStats()[1].Read, retainedRead+3)
		}
		time.Sleep(10 * time.Millisecond)
	}
	late.sub(t, paho.SubscribeOptions{Topic: "r/ok", QoS: 1})
	if m := late.next(t); m.Topic != "r/ok" || string(m.Payload) != "retained after" || !m.Retain {
		t.Fatalf("retained: got %s %q retain %v", m.Topic, m.Payload, m.Retain)
	}
}
