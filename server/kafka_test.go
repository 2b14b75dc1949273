package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
)

// Every MQTT PUBLISH is a record on the messages topic: key = topic, value = payload, headers = properties.
func TestRecordShape(t *testing.T) {
	f := startFerry(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()), kgo.ConsumeTopics("mqtt-messages"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "shape-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "plant/7/temp", QoS: 1, Payload: []byte("21.5"), Properties: &paho.PublishProperties{
		ContentType: "text/plain", User: paho.UserProperties{{Key: "unit", Value: "C"}}}})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rec *kgo.Record
	for rec == nil {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no record in Kafka within 10s")
		}
		fs.EachRecord(func(r *kgo.Record) { rec = r })
	}
	if string(rec.Key) != "plant/7/temp" || string(rec.Value) != "21.5" {
		t.Fatalf("record key %q value %q", rec.Key, rec.Value)
	}
	h := map[string]string{}
	for _, x := range rec.Headers {
		h[x.Key] = string(x.Value)
	}
	for k, want := range map[string]string{"mqtt.qos": "1", "mqtt.client_id": "shape-pub", "mqtt.content_type": "text/plain", "unit": "C"} {
		if h[k] != want {
			t.Errorf("header %s = %q, want %q (all: %v)", k, h[k], want, h)
		}
	}
}

// A record produced by any Kafka client with key = an MQTT topic reaches matching subscribers.
func TestKafkaBornRecord(t *testing.T) {
	f := startFerry(t)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "kb-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "cmd/+/reboot", QoS: 1})
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()), kgo.DefaultProduceTopic("mqtt-messages"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("cmd/dev9/reboot"), Value: []byte("now")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	m := sub.next(t)
	if m.Topic != "cmd/dev9/reboot" || string(m.Payload) != "now" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	// A record whose key is no valid topic is skipped, and the reader goes on.
	_ = cl.ProduceSync(ctx, &kgo.Record{Key: []byte("bad/+/key"), Value: []byte("x")}, &kgo.Record{Key: nil, Value: []byte("y")},
		&kgo.Record{Key: []byte("cmd/dev9/reboot"), Value: []byte("again")})
	if m := sub.next(t); string(m.Payload) != "again" {
		t.Fatalf("got %q after invalid records", m.Payload)
	}
}

// 1,000 clients publish concurrently at QoS 1: every PUBACKed message reaches the subscriber, none lost, and
// the instance's Kafka connections do not grow with the clients.
func TestThousandPublishers(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 clients")
	}
	f := startFerry(t)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "many-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "many/#", QoS: 1})
	before := f.mux.Connections()

	const clients, each = 1000, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	conns := make(chan *v5, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := connectV5(f.addr, &paho.Connect{ClientID: fmt.Sprintf("many-%d", i), CleanStart: true})
			if err != nil {
				errs <- err
				return
			}
			conns <- c
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for j := 0; j < each; j++ {
				if _, err := c.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("many/%d", i), QoS: 1, Payload: []byte(fmt.Sprint(j))}); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	during := f.mux.Connections()
	seen := map[string]int{}
	deadline := time.After(30 * time.Second)
	for len(seen) < clients*each {
		select {
		case m := <-sub.msgs:
			seen[m.Topic+"#"+string(m.Payload)]++
		case <-deadline:
			t.Fatalf("received %d of %d acknowledged messages", len(seen), clients*each)
		}
	}
	close(conns)
	for c := range conns {
		_ = c.Disconnect(&paho.Disconnect{})
	}
	if during > 3 { // one broker: produce, fetch and metadata connections at most
		t.Fatalf("Kafka connections grew from %d to %d with %d MQTT clients", before, during, clients)
	}
	t.Logf("Kafka connections: %d before, %d with %d MQTT clients", before, during, clients)
}

// With a QoS 0 acks level, QoS 0 messages travel on their own producer client and still reach subscribers;
// QoS 1 messages keep acks=all and their PUBACK.
func TestQoS0OwnAcksLevel(t *testing.T) {
	f := buildFerry(t, []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), kafkamux.QoS0Acks(1)}, nil)
	defer f.stop()
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "q0-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "q0/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "q0-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "q0/a", QoS: 0, Payload: []byte("fast")})
	pub.pub(t, &paho.Publish{Topic: "q0/b", QoS: 1, Payload: []byte("safe")})
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		m := sub.next(t)
		got[string(m.Payload)] = true
	}
	if !got["fast"] || !got["safe"] {
		t.Fatalf("received %v", got)
	}
}
