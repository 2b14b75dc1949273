package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server"
)

// Retained messages live in the retained topic in Kafka: these tests run several Ferry instances on one
// in-process Kafka (kfake), stop and start them, and check what subscribers get.

// startKafka starts a one-broker kfake cluster shared by the instances of a test.
func startKafka(t testing.TB) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

// instance is a Ferry on a shared Kafka that a test can stop before the end.
type instance struct {
	*ferry
	stopOnce sync.Once
}

// startInstance starts a Ferry on the Kafka at addr. It does not wait for the retained index to load.
func startInstance(t testing.TB, addr string, opts ...server.Opt) *instance {
	t.Helper()
	in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(addr)}, nil, opts...)}
	t.Cleanup(in.stop)
	return in
}

// stop stops the MQTT side and closes the Kafka client, flushing what it produced.
func (in *instance) stop() {
	in.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = in.srv.Stop(ctx)
		in.mux.Close()
	})
}

// waitRetained waits until the instance's retained index is loaded and holds n messages.
func (in *instance) waitRetained(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !in.srv.RetainedReady() || in.srv.RetainedCount() != n {
		if time.Now().After(deadline) {
			t.Fatalf("retained index: ready=%v with %d messages after 15s, want %d",
				in.srv.RetainedReady(), in.srv.RetainedCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// retainedWaitFor polls cond until it holds, for at most 10s.
func retainedWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// collect reads messages until want have arrived, then checks that no more come for a short while. It returns
// them by topic.
func (c *v5) collect(t testing.TB, want int) map[string]*paho.Publish {
	t.Helper()
	got := make(map[string]*paho.Publish, want)
	for i := 0; i < want; i++ {
		m := c.next(t)
		if _, dup := got[m.Topic]; dup {
			t.Fatalf("%s delivered twice", m.Topic)
		}
		got[m.Topic] = m
	}
	c.none(t, 200*time.Millisecond)
	return got
}

// Retained messages survive a restart of every instance: the retained topic is the source of truth and a
// new instance loads it. A cleared retained message stays cleared [MQTT-3.3.1-6] [MQTT-3.3.1-7].
func TestRetainedSurvivesRestart(t *testing.T) {
	cluster, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	pa := dialV5(t, a.addr, &paho.Connect{ClientID: "rs-pub-a", CleanStart: true})
	pb := dialV5(t, b.addr, &paho.Connect{ClientID: "rs-pub-b", CleanStart: true})
	pa.pub(t, &paho.Publish{Topic: "rs/kept", QoS: 1, Retain: true, Payload: []byte("old")})
	pa.pub(t, &paho.Publish{Topic: "rs/kept", QoS: 1, Retain: true, Payload: []byte("one"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	pb.pub(t, &paho.Publish{Topic: "rs/other", QoS: 0, Retain: true, Payload: []byte("two")})
	pa.pub(t, &paho.Publish{Topic: "rs/cleared", QoS: 1, Retain: true, Payload: []byte("gone soon")})
	pb.pub(t, &paho.Publish{Topic: "rs/cleared", QoS: 1, Retain: true, Payload: nil})
	pa.pub(t, &paho.Publish{Topic: "rs/expiring", QoS: 1, Retain: true, Payload: []byte("brief"),
		Properties: &paho.PublishProperties{MessageExpiry: new(uint32(1))}})
	a.stop()
	b.stop()
	cluster.Compact() // what compaction keeps is enough
	time.Sleep(1100 * time.Millisecond)

	c := startInstance(t, kafka)
	sub := dialV5(t, c.addr, &paho.Connect{ClientID: "rs-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "rs/#", QoS: 1})
	got := sub.collect(t, 2)
	if m := got["rs/kept"]; m == nil || !m.Retain || string(m.Payload) != "one" {
		t.Fatalf("MQTT-3.3.1-9: rs/kept after restart: %+v", m)
	} else if m.Properties.ContentType != "text/plain" || len(m.Properties.User) != 1 || m.Properties.User[0].Value != "v" {
		t.Errorf("rs/kept lost its properties across the restart: %+v", m.Properties)
	}
	if m := got["rs/other"]; m == nil || !m.Retain || string(m.Payload) != "two" {
		t.Fatalf("rs/other (published on the other instance) after restart: %+v", m)
	}
	if !c.srv.RetainedReady() {
		t.Error("RetainedReady is false after the retained messages were delivered")
	}
	c.waitRetained(t, 2)
}

// A retained message published on one instance reaches a subscriber that subscribes later on another, and
// clearing it on the second clears it on the first.
func TestRetainedAcrossInstances(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	a.waitRetained(t, 0)
	b.waitRetained(t, 0)
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "ra-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "ra/state", QoS: 1, Retain: true, Payload: []byte("on")})
	b.waitRetained(t, 1)
	// B reads the messages topic and the retained topic independently: had it read the retained record but not
	// yet the messages one, a subscription made in between would get the message twice, retained and live (a
	// known window, see retained.go). Wait for both, so the test checks what it is about.
	retainedWaitFor(t, "B to read the messages record", func() bool { return b.srv.Metrics().Snapshot().RecordsIn >= 1 })
	sub := dialV5(t, b.addr, &paho.Connect{ClientID: "ra-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "ra/+", QoS: 1})
	if m := sub.next(t); !m.Retain || string(m.Payload) != "on" || m.Topic != "ra/state" {
		t.Fatalf("MQTT-3.3.1-9: subscriber on B got %s retain=%v %q", m.Topic, m.Retain, m.Payload)
	}

	clr := dialV5(t, b.addr, &paho.Connect{ClientID: "ra-clr", CleanStart: true})
	clr.pub(t, &paho.Publish{Topic: "ra/state", QoS: 1, Retain: true})
	if m := sub.next(t); len(m.Payload) != 0 || m.Retain { // the live clearing message, RETAIN=0 [MQTT-3.3.1-12]
		t.Fatalf("live clearing message: retain=%v %q", m.Retain, m.Payload)
	}
	a.waitRetained(t, 0)
	late := dialV5(t, a.addr, &paho.Connect{ClientID: "ra-late", CleanStart: true})
	late.sub(t, paho.SubscribeOptions{Topic: "ra/#", QoS: 1})
	late.none(t, 300*time.Millisecond)
}

// Subscriptions made while the retained index is still loading get their SUBACK at once and their retained
// messages once it has loaded. A Kafka transaction left open on the retained topic keeps the new instance
// loading: the index is complete only once it has read everything written before it started.
func TestRetainedWhileLoading(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "rl-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "rl/1", QoS: 1, Retain: true, Payload: []byte("x")})
	pub.pub(t, &paho.Publish{Topic: "rl/2", QoS: 2, Retain: true, Payload: []byte("y")})
	retainedTopic := a.mux.RetainedTopic()
	a.stop()

	txn, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.TransactionalID("rl-txn"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // no Kafka call may hang the test
	defer cancel()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	r := (&kafkamux.Message{Topic: "rl/aborted", Payload: []byte("z"), Retain: true}).RetainedRecord(retainedTopic)
	if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}

	c := startInstance(t, kafka)
	sub := dialV5(t, c.addr, &paho.Connect{ClientID: "rl-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "rl/+", QoS: 2}, paho.SubscribeOptions{Topic: "rl/1", QoS: 0, RetainHandling: 2})
	sub.none(t, 300*time.Millisecond) // SUBACK came; the retained messages wait for the index
	if c.srv.RetainedReady() {
		t.Fatal("RetainedReady with a transaction still open on the retained topic")
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	got := sub.collect(t, 2)
	if m := got["rl/1"]; m == nil || !m.Retain || string(m.Payload) != "x" || m.QoS != 1 {
		t.Errorf("rl/1: %+v", m)
	}
	if m := got["rl/2"]; m == nil || !m.Retain || string(m.Payload) != "y" || m.QoS != 2 {
		t.Errorf("rl/2: %+v", m)
	}
	if !c.srv.RetainedReady() {
		t.Error("RetainedReady is false after the held-back retained messages were delivered")
	}
}

// With 10,000 retained topics, wildcard subscriptions get exactly the matching ones, on a freshly started
// instance (loading, then loaded) as well as on the one that has followed them all along.
func TestRetainedManyTopics(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka, server.SessionQueue(20000))
	const sites, devs = 100, 100
	// Written straight to the retained topic, as any Kafka producer may: 10,000 MQTT publishes would only
	// make the test slower.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var perr error
	for s := 0; s < sites; s++ {
		for d := 0; d < devs; d++ {
			m := &kafkamux.Message{Topic: fmt.Sprintf("fleet/%d/dev/%d/state", s, d), Payload: fmt.Appendf(nil, "%d.%d", s, d),
				QoS: 1, Retain: true}
			wg.Add(1)
			a.mux.Produce(context.Background(), m.RetainedRecord(a.mux.RetainedTopic()), func(_ *kafkamux.Record, err error) {
				if err != nil {
					mu.Lock()
					perr = err
					mu.Unlock()
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	if perr != nil {
		t.Fatal(perr)
	}
	a.waitRetained(t, sites*devs)

	check := func(in *instance, id, filter string, want func(s, d int) bool) {
		t.Helper()
		sub := dialV5(t, in.addr, &paho.Connect{ClientID: id, CleanStart: true})
		n := 0
		for s := 0; s < sites; s++ {
			for d := 0; d < devs; d++ {
				if want(s, d) {
					n++
				}
			}
		}
		sub.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
		got := sub.collect(t, n)
		for topic, m := range got {
			var s, d int
			if _, err := fmt.Sscanf(topic, "fleet/%d/dev/%d/state", &s, &d); err != nil || !want(s, d) {
				t.Fatalf("%s: %s does not match", filter, topic)
			}
			if !m.Retain || string(m.Payload) != fmt.Sprintf("%d.%d", s, d) {
				t.Fatalf("%s: %s retain=%v payload %q", filter, topic, m.Retain, m.Payload)
			}
		}
	}
	check(a, "many-1", "fleet/7/dev/+/state", func(s, _ int) bool { return s == 7 })
	check(a, "many-2", "fleet/+/dev/42/state", func(_, d int) bool { return d == 42 })
	check(a, "many-3", "fleet/3/#", func(s, _ int) bool { return s == 3 })
	check(a, "many-4", "fleet/12/dev/34/state", func(s, d int) bool { return s == 12 && d == 34 })
	check(a, "many-5", "fleet/+/dev/+/nothing", func(int, int) bool { return false })
	check(a, "many-6", "#", func(int, int) bool { return true })

	b := startInstance(t, kafka, server.SessionQueue(20000)) // subscribes while it may still be loading
	check(b, "many-7", "fleet/+/dev/9/+", func(_, d int) bool { return d == 9 })
	check(b, "many-8", "+/99/#", func(s, _ int) bool { return s == 99 })
	b.waitRetained(t, sites*devs)
}
