package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Sessions live in the sessions topic: these tests run several Ferry instances on one in-process Kafka.

func persistent(id string, clean bool) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
}

// Subscribe on A, go away, 1,000 QoS 1 messages are published on B, reconnect to B: all 1,000 arrive, in
// order, from the offsets A stored, without re-subscribing.
func TestResumeOnAnotherInstance(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	c := dialV5(t, a.addr, persistent("roamer", true))
	c.sub(t, paho.SubscribeOptions{Topic: "fleet/roamer/#", QoS: 1})
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	pub := dialV5(t, b.addr, &paho.Connect{ClientID: "roamer-pub", CleanStart: true})
	const n = 1000
	for i := 0; i < n; i++ {
		pub.pub(t, &paho.Publish{Topic: "fleet/roamer/cmd", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	back := dialV5(t, b.addr, persistent("roamer", false))
	if !back.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: session present = 0 on another instance")
	}
	for i := 0; i < n; i++ {
		m := back.next(t)
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
	}
	// Then live messages, with no gap.
	pub.pub(t, &paho.Publish{Topic: "fleet/roamer/cmd", QoS: 1, Payload: []byte("live")})
	if m := back.next(t); string(m.Payload) != "live" {
		t.Fatalf("live message after the resume: got %q", m.Payload)
	}
	back.none(t, 200*time.Millisecond)
}

// A second connection of the same client id on another instance takes the session over: the first gets
// 0x8E, and no QoS 1 message published meanwhile is lost.
func TestTakeoverAcrossInstances(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	first := dialV5(t, a.addr, persistent("mover", true))
	first.sub(t, paho.SubscribeOptions{Topic: "mv", QoS: 1})
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "mover-pub", CleanStart: true})

	const n = 400
	got := map[string]bool{}
	published := make(chan struct{})
	go func() {
		defer close(published)
		ctx := context.Background()
		for i := 0; i < n; i++ {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: "mv", QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for len(got) < n/4 {
		got[string(first.next(t).Payload)] = true
	}
	second := dialV5(t, b.addr, persistent("mover", false))
	select {
	case d := <-first.discons:
		if d.ReasonCode != byte(mqttcodec.SessionTakenOver) {
			t.Fatalf("first connection got DISCONNECT %#x, want 0x8E", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("MQTT-3.1.4-3: the first connection was not told of the takeover")
	}
	if !second.connack.SessionPresent {
		t.Fatal("session present = 0 after a takeover")
	}
	// Messages that reached the first connection before it was closed count too.
drain:
	for {
		select {
		case m := <-first.msgs:
			got[string(m.Payload)] = true
		default:
			break drain
		}
	}
	<-published
	deadline := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case m := <-second.msgs:
			got[string(m.Payload)] = true
		case <-deadline:
			var missing []string
			for i := 0; i < n && len(missing) < 10; i++ {
				if !got[fmt.Sprint(i)] {
					missing = append(missing, fmt.Sprint(i))
				}
			}
			t.Fatalf("%d of %d QoS 1 messages arrived; missing e.g. %v", len(got), n, missing)
		}
	}
}

// When a session expires, every key of the client in the sessions topic is tombstoned.
func TestSessionExpiryTombstones(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	c := dialV5(t, a.addr, &paho.Connect{ClientID: "brief", CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(1)}})
	c.sub(t, paho.SubscribeOptions{Topic: "brief/#", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	// The expiry is processed by the sessions partition's processor on its next heartbeat (every 2 s).
	var last map[string][]byte
	for start := time.Now(); time.Since(start) < 8*time.Second; time.Sleep(500 * time.Millisecond) {
		last = readSessions(t, kafka)
		if v, ok := last["s:brief"]; ok && v == nil {
			break
		}
	}
	var seen []string
	for k, v := range last {
		if strings.HasSuffix(k, ":brief") {
			seen = append(seen, k)
			if v != nil {
				t.Errorf("key %s still holds %s after the session expired", k, v)
			}
		}
	}
	for _, k := range []string{"s:brief", "d:brief", "o:brief"} {
		if _, ok := last[k]; !ok {
			t.Errorf("key %s never written (seen %v)", k, seen)
		}
	}
	// And a session that ends with its connection leaves only tombstones as well.
	d := dialV5(t, a.addr, &paho.Connect{ClientID: "short", CleanStart: true})
	_ = d.Disconnect(&paho.Disconnect{})
	time.Sleep(500 * time.Millisecond)
	if v := readSessions(t, kafka)["o:short"]; v != nil {
		t.Errorf("o:short holds %s after a session without expiry ended", v)
	}
}

// readSessions returns the last value of every key of the sessions topic (nil for a tombstone).
func readSessions(t testing.TB, kafka string) map[string][]byte {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ConsumeTopics("mqtt-sessions"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[string][]byte{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out
		}
		fs.EachRecord(func(r *kgo.Record) { out[string(r.Key)] = r.Value })
	}
}

// A corrupt or unknown-version record on the sessions topic is logged and skipped: the session starts clean
// and the instance keeps serving.
func TestCorruptSessionRecord(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.DefaultProduceTopic("mqtt-sessions"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := cl.ProduceSync(ctx,
		&kgo.Record{Key: []byte("s:broken"), Value: []byte("{not json")},
		&kgo.Record{Key: []byte("s:future"), Value: []byte(`{"v":99,"subs":[]}`)},
		&kgo.Record{Key: []byte("nokind"), Value: []byte(`{}`)},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	for _, id := range []string{"broken", "future"} {
		c := dialV5(t, a.addr, persistent(id, false))
		if c.connack.SessionPresent {
			t.Fatalf("%s: session present from a record that cannot be read", id)
		}
	}
	// A new instance starting on the same topic loads past the bad records too.
	b := startInstance(t, kafka)
	dialV5(t, b.addr, persistent("after", true))
}

// Sessions survive a restart of every instance: subscriptions and the messages published while no instance
// ran the session's connection.
func TestSessionSurvivesRestart(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	c := dialV5(t, a.addr, persistent("sleeper", true))
	c.sub(t, paho.SubscribeOptions{Topic: "sl/#", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	time.Sleep(200 * time.Millisecond)
	a.stop()

	b := startInstance(t, kafka)
	pub := dialV5(t, b.addr, &paho.Connect{ClientID: "sleeper-pub", CleanStart: true})
	for i := 0; i < 50; i++ {
		pub.pub(t, &paho.Publish{Topic: "sl/x", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	b.stop()

	fresh := startInstance(t, kafka)
	back := dialV5(t, fresh.addr, persistent("sleeper", false))
	if !back.connack.SessionPresent {
		t.Fatal("session lost across restarts")
	}
	for i := 0; i < 50; i++ {
		if m := back.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
	}
}
