package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/payload"
	"github.com/ferrymq/ferry/server/share"
)

// deliverJSONRule is a deliver=json rule whose Avro schema is a file with registry id 42, so records framed
// with id 42 decode without a registry.
const deliverJSONRule = "cmd/#=avro:file:payload/testdata/telemetry.avsc;id=42;deliver=json"

// avroRecord is what a Kafka application with the registry's serializer writes for the schema of
// deliverJSONRule: magic byte 0, id 42, the Avro body.
func avroRecord(t *testing.T, device string, seq int64) []byte {
	t.Helper()
	text, err := os.ReadFile("payload/testdata/telemetry.avsc")
	if err != nil {
		t.Fatal(err)
	}
	return avroFramed(t, string(text), 42, device, seq)
}

// avroFramed is a telemetry record of the Avro schema text in the Confluent wire format with id.
func avroFramed(t *testing.T, text string, id byte, device string, seq int64) []byte {
	t.Helper()
	sch, err := avro.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	body, err := avro.Marshal(sch, map[string]any{"device": device, "temp": 1.5, "seq": seq, "note": nil})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{0, 0, 0, 0, id}, body...)
}

// produce writes records as a Kafka application would; a record with Partition >= 0 goes to that partition.
func produce(t *testing.T, addr, topic, key string, value []byte) {
	t.Helper()
	produceTo(t, addr, &kgo.Record{Topic: topic, Key: []byte(key), Value: value, Partition: -1})
}

func produceTo(t *testing.T, addr string, recs ...*kgo.Record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		hash := kgo.StickyKeyPartitioner(nil).ForTopic("")
		return func(r *kgo.Record, n int) int {
			if r.Partition >= 0 {
				return int(r.Partition)
			}
			return hash.Partition(r, n)
		}
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// wantJSON checks that m is the JSON of the record of device and seq, marked as JSON.
func wantJSON(t *testing.T, m *paho.Publish, device string, seq float64) {
	t.Helper()
	var js map[string]any
	if err := json.Unmarshal(m.Payload, &js); err != nil {
		t.Fatalf("%s: not JSON: %q", m.Topic, m.Payload)
	}
	if js["device"] != device || js["seq"] != seq || m.Properties.ContentType != "application/json" {
		t.Fatalf("%s: got %s, content type %q", m.Topic, m.Payload, m.Properties.ContentType)
	}
}

// deliver=json applies wherever a subscriber gets a record, not only to live deliveries: retained messages,
// shared subscriptions (both modes) and the replay of a resumed session.
func TestPayloadDeliverJSONEverywhere(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka, server.Payload(payloadSet(t, []string{deliverJSONRule}), false))
	b := startInstance(t, kafka, server.Payload(payloadSet(t, []string{deliverJSONRule}), false),
		server.Share(share.Mode(share.ModeShareGroup)))
	topic := a.mux.MessagesTopic()

	t.Run("retained", func(t *testing.T) {
		// A device publishes JSON with RETAIN; Kafka holds Avro; a later subscriber gets JSON.
		pub := dialV5(t, a.addr, &paho.Connect{ClientID: "dj-ret-pub", CleanStart: true})
		pub.pub(t, &paho.Publish{Topic: "cmd/ret", QoS: 1, Retain: true, Payload: []byte(`{"device":"r1","temp":2.5,"seq":5}`)})
		// Each instance's retained index follows the retained topic by its reader's fetch latency (retained.go);
		// a SUBSCRIBE that lands before it has the message gets none. Subscribe once both have read it.
		waitUntil(t, func() bool { return a.srv.RetainedCount() == 1 && b.srv.RetainedCount() == 1 })
		for _, in := range []*instance{a, b} {
			sub := dialV5(t, in.addr, &paho.Connect{ClientID: "dj-ret-sub", CleanStart: true})
			sub.sub(t, paho.SubscribeOptions{Topic: "cmd/ret", QoS: 1})
			m := sub.next(t)
			if !m.Retain {
				t.Fatal("not a retained message")
			}
			wantJSON(t, m, "r1", 5)
			_ = sub.Disconnect(&paho.Disconnect{})
		}
	})

	t.Run("shared", func(t *testing.T) {
		for i, in := range []*instance{a, b} { // a: consumer-group mode; b: share-group mode
			member := dialV5(t, in.addr, &paho.Connect{ClientID: "dj-share-" + string(rune('a'+i)), CleanStart: true})
			member.sub(t, paho.SubscribeOptions{Topic: "$share/dj/cmd/shared/" + string(rune('a'+i)), QoS: 1})
			// The group's reader may join after the first record: write until the member gets one.
			key := "cmd/shared/" + string(rune('a'+i))
			var m *paho.Publish
			for m == nil {
				produce(t, kafka, topic, key, avroRecord(t, "s1", int64(10+i)))
				select {
				case m = <-member.msgs:
				case <-time.After(2 * time.Second):
				}
			}
			wantJSON(t, m, "s1", float64(10+i))
		}
	})

	t.Run("replay", func(t *testing.T) {
		// A persistent session subscribes on A and goes; a Kafka application writes; the session resumes on
		// B, which replays the record from Kafka.
		cp := func(clean bool) *paho.Connect {
			return &paho.Connect{ClientID: "dj-res", CleanStart: clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}}
		}
		first := dialV5(t, a.addr, cp(true))
		first.sub(t, paho.SubscribeOptions{Topic: "cmd/replay", QoS: 1})
		_ = first.Disconnect(&paho.Disconnect{})
		produce(t, kafka, topic, "cmd/replay", avroRecord(t, "p1", 7))
		back := dialV5(t, b.addr, cp(false))
		if !back.connack.SessionPresent {
			t.Fatal("session not present on B")
		}
		wantJSON(t, back.next(t), "p1", 7)
	})
}

// A record framed with a schema id Ferry has not fetched, met while the registry is down, does not stall the
// shared reader: records of other partitions are delivered at once; the record and those behind it in its
// partition are held (per-topic order), and go as JSON, in order, once the registry answers.
func TestPayloadUnknownIDHeld(t *testing.T) {
	reg, cl := registry(t)
	reg.SeedSchema("telemetry-value", 1, 7, sr.Schema{Schema: telemetryAvro, Type: sr.TypeAvro})
	reg.SeedSchema("other-value", 1, 8, sr.Schema{Schema: telemetryAvro, Type: sr.TypeAvro})
	set := payloadSet(t, []string{"cmd/#=avro:registry:telemetry-value;deliver=json"}, payload.Registry(cl),
		payload.FetchTimeout(time.Second), payload.Hold(time.Minute))
	f := startFerry(t, server.Payload(set, false))
	waitUntil(t, func() bool { st, _ := f.srv.PayloadStats(); return st[0].Loaded })
	reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, `{"error_code":50001,"message":"down"}`, http.StatusServiceUnavailable)
		return true
	})

	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "held-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "cmd/#", QoS: 1})
	topic := f.mux.MessagesTopic()
	produceTo(t, f.mux.Addr(),
		&kgo.Record{Topic: topic, Partition: 0, Key: []byte("cmd/a"), Value: avroFramed(t, telemetryAvro, 8, "a", 1)}, // unknown id
		&kgo.Record{Topic: topic, Partition: 0, Key: []byte("cmd/b"), Value: avroFramed(t, telemetryAvro, 7, "b", 2)}, // behind it
		&kgo.Record{Topic: topic, Partition: 1, Key: []byte("cmd/c"), Value: avroFramed(t, telemetryAvro, 7, "c", 3)}) // elsewhere
	m := sub.next(t)
	if m.Topic != "cmd/c" {
		t.Fatalf("first delivery %s, want cmd/c (the other partition's record)", m.Topic)
	}
	wantJSON(t, m, "c", 3)
	waitUntil(t, func() bool { now, _, _ := f.srv.PayloadHeld(); return now == 2 })
	sub.none(t, 300*time.Millisecond)

	reg.ClearInterceptors() // the registry is back
	for _, w := range []struct {
		topic, device string
		seq           float64
	}{{"cmd/a", "a", 1}, {"cmd/b", "b", 2}} {
		m := sub.next(t)
		if m.Topic != w.topic {
			t.Fatalf("got %s, want %s: held records out of order", m.Topic, w.topic)
		}
		wantJSON(t, m, w.device, w.seq)
	}
	if now, total, lost := f.srv.PayloadHeld(); now != 0 || total != 2 || lost != 0 {
		t.Fatalf("held now %d, total %d, lost %d", now, total, lost)
	}
	if st, _ := f.srv.PayloadStats(); st[0].DeliveredJSON != 3 || st[0].DeliverErrors != 0 {
		t.Fatalf("stats %+v", st[0])
	}
}
