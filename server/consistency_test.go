package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Read your writes across instances (docs/sessions.md, "Consistency"): an instance decides nothing about a
// client before it has read the client's sessions partition up to where it stood when the CONNECT arrived.

// loadQoS1 keeps QoS 1 publishers busy on every address until the test ends, with a subscriber on each, so
// the instances' shared readers have a backlog to work through while a session moves.
func loadQoS1(t *testing.T, addrs ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var sent atomic.Int64
	for i, addr := range addrs {
		sub := dialV5(t, addr, &paho.Connect{ClientID: fmt.Sprintf("load-sub-%d", i), CleanStart: true})
		sub.sub(t, paho.SubscribeOptions{Topic: "load/#", QoS: 1})
		go func() { // keep the subscriber's channel from filling up
			for {
				select {
				case <-sub.msgs:
				case <-ctx.Done():
					return
				}
			}
		}()
		for j := 0; j < 2; j++ {
			p := dialV5(t, addr, &paho.Connect{ClientID: fmt.Sprintf("load-pub-%d-%d", i, j), CleanStart: true})
			wg.Add(1)
			go func() {
				defer wg.Done()
				payload := make([]byte, 200)
				for ctx.Err() == nil {
					pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := p.Publish(pctx, &paho.Publish{Topic: fmt.Sprintf("load/%d", j), QoS: 1, Payload: payload})
					pcancel()
					if err != nil {
						return
					}
					sent.Add(1)
				}
			}()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for sent.Load() < 1000 && time.Now().Before(deadline) { // the issue saw it after a burst of 1,000
		time.Sleep(10 * time.Millisecond)
	}
}

// The fast takeover: a v5 client subscribes on A (Clean Start 1, Session Expiry 600), then within a
// millisecond connects to B with Clean Start 0, while other clients load both instances with QoS 1 traffic.
// Every time: A's connection gets DISCONNECT 0x8E [MQTT-3.1.4-3], B answers Session Present 1 [MQTT-3.2.2-2],
// and the subscription made on A delivers on B.
func TestFastTakeoverReadsYourWrites(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	loadQoS1(t, a.addr, b.addr)
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "fast-pub", CleanStart: true})

	const rounds = 20
	for i := 0; i < rounds; i++ {
		id, topic := fmt.Sprintf("fast-%d", i), fmt.Sprintf("fast/%d", i)
		cp := &paho.Connect{ClientID: id, CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}}
		first := dialV5(t, a.addr, cp)
		first.sub(t, paho.SubscribeOptions{Topic: topic, QoS: 1})
		second := dialV5(t, b.addr, &paho.Connect{ClientID: id, CleanStart: false,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}})
		if !second.connack.SessionPresent {
			t.Fatalf("round %d: MQTT-3.2.2-2: B answered Session Present 0 right after the subscribe on A", i)
		}
		select {
		case d := <-first.discons:
			if d.ReasonCode != byte(mqttcodec.SessionTakenOver) {
				t.Fatalf("round %d: A's connection got DISCONNECT %#x, want 0x8E", i, d.ReasonCode)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: MQTT-3.1.4-3: A's connection was not told of the takeover", i)
		}
		pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(id)})
		select {
		case m := <-second.msgs:
			if m.Topic != topic || string(m.Payload) != id {
				t.Fatalf("round %d: got %s %q", i, m.Topic, m.Payload)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the subscription made on A did not deliver on B", i)
		}
		_ = second.Disconnect(&paho.Disconnect{})
	}
}
