package server_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/server"
)

// routeRules are the rules of the routing tests: a capture in the topic name with a partition key, a fixed
// topic, first match wins.
var routeRules = []string{
	"place/{site}/device/{dev}/#>devices-{site}@{dev}",
	"place/+/alarm>alarms",
	"place/#>places",
}

// kafkaRecords reads every record of topic from its start until n have been read or the time is up.
func kafkaRecords(t *testing.T, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// Each routing shape: a templated topic from a capture, a fixed topic, first match wins, the default topic for
// what no rule matches; a subscription to place/# receives from every routed topic (devices-a, devices-b,
// alarms, places) and from the messages topic; a Kafka-born record in the wrong routed topic is skipped and
// counted.
func TestRouteShapes(t *testing.T) {
	f := startFerry(t, server.Routes(routeRules, false))
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "place/#", QoS: 1}, paho.SubscribeOptions{Topic: "other/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-pub", CleanStart: true})
	want := map[string]string{ // MQTT topic → Kafka topic
		"place/a/device/d1/temp": "devices-a",
		"place/b/device/d2/temp": "devices-b",
		"place/a/alarm":          "alarms", // rule 0 does not match, rule 1 does
		"place/a/device":         "places", // too short for rule 0
		"other/x":                f.mux.MessagesTopic(),
	}
	for topic := range want {
		if r := pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)}); r.ReasonCode != 0 {
			t.Fatalf("publish %s: reason %#x", topic, r.ReasonCode)
		}
	}
	got := map[string]bool{}
	for range want {
		m := sub.next(t)
		if string(m.Payload) != m.Topic {
			t.Fatalf("got %s %q", m.Topic, m.Payload)
		}
		got[m.Topic] = true
	}
	if len(got) != len(want) {
		t.Fatalf("received %v, want one of each of %v", got, want)
	}
	for topic, kt := range want {
		found := false
		for _, r := range kafkaRecords(t, f.mux.Addr(), kt, 1) {
			found = found || string(r.Key) == topic
		}
		if !found {
			t.Errorf("no record with key %s in Kafka topic %s", topic, kt)
		}
	}

	// A Kafka producer writes place/b/… into devices-a: it belongs in devices-b, so it is skipped and counted;
	// place/a/… in devices-a is delivered.
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	before := f.srv.Metrics().Snapshot().Misrouted
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Topic: "devices-a", Key: []byte("place/b/device/x/t"), Value: []byte("wrong topic")},
		&kgo.Record{Topic: "devices-a", Key: []byte("place/a/device/x/t"), Value: []byte("right topic")},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if m := sub.next(t); string(m.Payload) != "right topic" {
		t.Fatalf("got %s %q, want only the correctly routed Kafka-born record", m.Topic, m.Payload)
	}
	sub.none(t, 300*time.Millisecond)
	if n := f.srv.Metrics().Snapshot().Misrouted - before; n != 1 {
		t.Fatalf("misrouted records counted: %d, want 1", n)
	}
}

// A per-rule partition key keeps one device's messages in one partition of its routed topic while their MQTT
// topics (the record keys) vary.
func TestRoutePartitionKey(t *testing.T) {
	f := startFerry(t, server.Routes(routeRules, false))
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-pk", CleanStart: true})
	const n = 30
	for _, dev := range []string{"d1", "d2", "d3"} {
		for i := 0; i < n; i++ {
			pub.pub(t, &paho.Publish{Topic: fmt.Sprintf("place/a/device/%s/m%d", dev, i), QoS: 1, Payload: []byte("x")})
		}
	}
	recs := kafkaRecords(t, f.mux.Addr(), "devices-a", 3*n)
	if len(recs) != 3*n {
		t.Fatalf("read %d records of devices-a, want %d", len(recs), 3*n)
	}
	parts := map[string]map[int32]bool{}
	keys := map[string]bool{}
	for _, r := range recs {
		dev := string(r.Key[len("place/a/device/") : len("place/a/device/")+2])
		if parts[dev] == nil {
			parts[dev] = map[int32]bool{}
		}
		parts[dev][r.Partition] = true
		keys[string(r.Key)] = true
		if h := r.Headers[len(r.Headers)-1]; h.Key != "mqtt.pk" || string(h.Value) != dev {
			t.Fatalf("record %s: last header %s=%q, want mqtt.pk=%s", r.Key, h.Key, h.Value, dev)
		}
	}
	for dev, ps := range parts {
		if len(ps) != 1 {
			t.Errorf("device %s: records in partitions %v, want one", dev, ps)
		}
	}
	if len(keys) != 3*n {
		t.Errorf("%d distinct record keys, want %d (the key stays the MQTT topic)", len(keys), 3*n)
	}
}

// With --route-unrouted=refuse a publish no rule matches gets PUBACK 0x90 (v5) and nothing reaches Kafka;
// with accept (the default) it goes to the messages topic.
func TestRouteUnrouted(t *testing.T) {
	t.Run("refuse", func(t *testing.T) {
		f := startFerry(t, server.Routes([]string{"allowed/#>allowed"}, true))
		pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-refuse", CleanStart: true})
		if r := pubReason(pub, "denied/x"); r != 0x90 {
			t.Fatalf("unrouted publish: reason %#x, want 0x90 Topic Name Invalid", r)
		}
		if r := pub.pub(t, &paho.Publish{Topic: "allowed/x", QoS: 1, Payload: []byte("yes")}); r.ReasonCode != 0 {
			t.Fatalf("routed publish: reason %#x", r.ReasonCode)
		}
		if recs := kafkaRecords(t, f.mux.Addr(), "allowed", 1); len(recs) != 1 || string(recs[0].Key) != "allowed/x" {
			t.Fatalf("allowed topic holds %d records", len(recs))
		}
		if s := f.srv.Metrics().Snapshot(); s.RouteRefused[0] != 1 {
			t.Fatalf("refused as unrouted: %d, want 1", s.RouteRefused[0])
		}
		if hw := highWatermark(t, f, f.mux.MessagesTopic()); hw != 0 {
			t.Fatalf("messages topic holds %d records, want none", hw)
		}
	})
	t.Run("accept", func(t *testing.T) {
		f := startFerry(t, server.Routes([]string{"allowed/#>allowed"}, false))
		pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-accept", CleanStart: true})
		if r := pub.pub(t, &paho.Publish{Topic: "other/x", QoS: 1, Payload: []byte("ok")}); r.ReasonCode != 0 {
			t.Fatalf("unrouted publish: reason %#x", r.ReasonCode)
		}
		if recs := kafkaRecords(t, f.mux.Addr(), f.mux.MessagesTopic(), 1); len(recs) != 1 || string(recs[0].Key) != "other/x" {
			t.Fatalf("messages topic holds %d records, want other/x", len(recs))
		}
	})
	t.Run("illegal", func(t *testing.T) {
		f := startFerry(t, server.Routes([]string{"t/{x}/#>t-{x}"}, false))
		pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-illegal", CleanStart: true})
		if r := pubReason(pub, "t/a b/c"); r != 0x90 {
			t.Fatalf("publish to an illegal Kafka topic: reason %#x, want 0x90", r)
		}
		if s := f.srv.Metrics().Snapshot(); s.RouteRefused[1] != 1 {
			t.Fatalf("refused as illegal: %d, want 1", s.RouteRefused[1])
		}
	})
}

// pubReason publishes at QoS 1 and returns the PUBACK's reason code (paho reports ≥ 0x80 as an error too).
func pubReason(c *v5, topic string) byte {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, _ := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
	if r == nil {
		return 0xff
	}
	return r.ReasonCode
}

func highWatermark(t *testing.T, f *ferry, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := f.mux.Admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// A persistent session subscribed to place/# resumes and receives, in order per topic, what was published
// while it was away to two routed topics that existed when it left, and to one created meanwhile.
func TestRouteSessionResume(t *testing.T) {
	f := startFerry(t, server.Routes(routeRules, false))
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: "rt-persist", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	}
	sub, err := connectV5(f.addr, cp())
	if err != nil {
		t.Fatal(err)
	}
	sub.sub(t, paho.SubscribeOptions{Topic: "place/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "rt-persist-pub", CleanStart: true})
	for _, site := range []string{"a", "b"} { // the routed topics exist and are followed before the session leaves
		pub.pub(t, &paho.Publish{Topic: "place/" + site + "/device/d/t", QoS: 1, Payload: []byte("first")})
		if m := sub.next(t); string(m.Payload) != "first" {
			t.Fatalf("got %q", m.Payload)
		}
	}
	_ = sub.Disconnect(&paho.Disconnect{ReasonCode: 0})
	time.Sleep(300 * time.Millisecond)

	const n = 10
	for i := 0; i < n; i++ {
		for _, site := range []string{"a", "b", "c"} { // devices-c is created while the session is away
			pub.pub(t, &paho.Publish{Topic: "place/" + site + "/device/d/t", QoS: 1, Payload: []byte(fmt.Sprint(i))})
		}
	}
	time.Sleep(300 * time.Millisecond)
	back := dialV5(t, f.addr, cp())
	if !back.connack.SessionPresent {
		t.Fatal("session not present")
	}
	next := map[string]int{}
	resent := map[string]bool{}
	for i := 0; i < 3*n; i++ {
		m := back.next(t)
		if string(m.Payload) == "first" && m.Duplicate() && next[m.Topic] == 0 && !resent[m.Topic] {
			// The DISCONNECT overtook the client's PUBACK of "first" (paho sends it after the message is handed
			// on): unacknowledged, it is sent again first, marked DUP [MQTT-4.4.0-1]. Not a message missed.
			resent[m.Topic] = true
			i--
			continue
		}
		if want := fmt.Sprint(next[m.Topic]); string(m.Payload) != want {
			t.Fatalf("%s: got %q (DUP %v), want %q (in order, once)", m.Topic, m.Payload, m.Duplicate(), want)
		}
		next[m.Topic]++
	}
	back.none(t, 500*time.Millisecond)
}

// spreadBy returns n MQTT topics made by name whose record keys Kafka's key hash puts in n different partitions
// of a topic with n partitions.
func spreadBy(n int, name func(i int) string) []string {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("any")
	out := make([]string, n)
	for i, found := 0, 0; found < n; i++ {
		topic := name(i)
		if part := p.Partition(&kgo.Record{Key: []byte(topic)}, n); out[part] == "" {
			out[part] = topic
			found++
		}
	}
	return out
}

// Shared subscriptions receive from routed Kafka topics too: with a fixed routed topic (existing at start) and a
// templated one (created by the test's first publish, so each instance finds it later), three members of
// $share/g/place/# over two instances share 3,000 QoS 1 messages published to both routed topics and the
// messages topic — each delivered once in total, a third to each member ±20%. A Kafka-born record in the wrong
// routed topic is skipped by the share group as by the shared reader.
func TestSharedRouted(t *testing.T) {
	const filter = "$share/g/place/#"
	rules := []string{"place/{site}/device/#>share-dev-{site}", "place/+/alarm>share-alarms"}
	_, kafka := startKafka(t)
	a := startInstance(t, kafka, server.Routes(rules, false))
	b := startInstance(t, kafka, server.Routes(rules, false))
	member := func(addr, id string) *v5 {
		c := dialV5(t, addr, &paho.Connect{ClientID: id, CleanStart: true})
		if sa := c.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1}); sa.Reasons[0] != 1 {
			t.Fatalf("SUBACK %v", sa.Reasons)
		}
		return c
	}
	ms := []*v5{member(a.addr, "rs-a0"), member(a.addr, "rs-a1"), member(b.addr, "rs-b0")}
	// The messages topic and share-alarms, 3 partitions each, split 2:1.
	waitPartitions(t, a.srv, 4)
	waitPartitions(t, b.srv, 2)

	const n = 3000
	devs := spreadBy(3, func(i int) string { return "place/x/device/d" + strconv.Itoa(i) })
	alarms := spreadBy(3, func(i int) string { return "place/s" + strconv.Itoa(i) + "/alarm" })
	plain := spreadBy(3, func(i int) string { return "place/other/" + strconv.Itoa(i) }) // no rule: messages topic
	topics := append(append(append([]string{}, devs...), alarms...), plain...)

	tl := newTally(len(ms))
	tl.srvs = []*server.Server{a.srv, b.srv}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go tl.collect(i, m, stop, &wg)
	}
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "rs-boss", CleanStart: true})
	// Message 0 creates share-dev-x: each instance's discovery adds it to the share group, which reads it from
	// its start (message 0 is in it already) and splits its partitions 2:1 once both read it.
	if r := pub.pub(t, &paho.Publish{Topic: devs[0], QoS: 1, Payload: []byte("0")}); r.ReasonCode != 0 {
		t.Fatalf("publish: reason %#x", r.ReasonCode)
	}
	waitPartitions(t, a.srv, 6)
	waitPartitions(t, b.srv, 3)
	var pw sync.WaitGroup
	for k := 0; k < 8; k++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := 1 + k; i < n; i += 8 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := pub.Publish(ctx, &paho.Publish{Topic: topics[i%len(topics)], QoS: 1, Payload: []byte(strconv.Itoa(i))})
				cancel()
				if err != nil || r.ReasonCode != 0 {
					t.Errorf("publish %d: %v %v", i, r, err)
					return
				}
			}
		}()
	}
	pw.Wait()
	tl.waitUnique(t, n, 30*time.Second)
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("%d messages delivered more than once, e.g. %v", len(d), d[:min(len(d), 5)])
	}
	tl.mu.Lock()
	total := tl.total
	tl.mu.Unlock()
	if total != n {
		t.Errorf("%d deliveries for %d messages", total, n)
	}
	checkFair(t, tl.counts(), n)
	for _, kt := range []string{"share-dev-x", "share-alarms", a.mux.MessagesTopic()} {
		if hw := highWatermark(t, a.ferry, kt); hw < n/3 {
			t.Errorf("Kafka topic %s holds %d records, want about %d", kt, hw, n/3)
		}
	}

	// A Kafka producer writes place/other/… (no rule: the messages topic) into share-alarms: skipped; a
	// correctly routed record written next to it is delivered once.
	alarmsDeliveredOnce(t, kafka, alarms, tl, n, 10*time.Second, stop, &wg)
}

// alarmsDeliveredOnce writes the Kafka-born records of produceAlarms, waits until the members have n of their
// own plus one per key, stops the collectors, and checks that no member got the misrouted record and nothing
// came twice.
func alarmsDeliveredOnce(t *testing.T, kafka string, keys []string, tl *tally, n int, wait time.Duration, stop chan struct{}, wg *sync.WaitGroup) {
	t.Helper()
	produceAlarms(t, kafka, keys)
	tl.waitUnique(t, n+len(keys), wait)
	close(stop)
	wg.Wait()
	for i, m := range tl.by {
		if m["wrong"] > 0 {
			t.Errorf("member %d received a misrouted record", i)
		}
	}
	if d := tl.duplicates(); len(d) > 0 {
		t.Errorf("duplicates after the Kafka-born records: %v", d[:min(len(d), 5)])
	}
}

// produceAlarms writes, as a Kafka application would, into share-alarms for each key a record with a key no
// route rule sends there ("wrong") and one with the key itself ("right <key>"). One pair per key: with a key
// per partition, one pair in each partition, whoever holds it.
func produceAlarms(t *testing.T, kafka string, keys []string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, key := range keys {
		if err := cl.ProduceSync(ctx,
			&kgo.Record{Topic: "share-alarms", Key: []byte("place/other/x"), Value: []byte("wrong")},
			&kgo.Record{Topic: "share-alarms", Key: []byte(key), Value: []byte("right " + key)},
		).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}
