package server_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
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

// connackReason sends a CONNECT of the given version and returns the CONNACK's reason (v3: return code) and
// how long it took.
func connackReason(t *testing.T, addr string, version byte, id string) (byte, time.Duration) {
	t.Helper()
	r := dialRaw(t, addr)
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: version, CleanStart: false, KeepAlive: 30, ClientID: []byte(id)}
	if version == mqttcodec.Version5 {
		p.Props.SessionExpiry = 300
		p.Props.Set(mqttcodec.PropSessionExpiry)
	}
	start := time.Now()
	r.send(mqttcodec.AppendConnect(nil, &p))
	fh, body := r.packet()
	took := time.Since(start)
	var ack mqttcodec.Connack
	if fh.Type != mqttcodec.CONNACK {
		t.Fatalf("got %s, want CONNACK", mqttcodec.TypeName(fh.Type))
	}
	if err := ack.Decode(fh, body, version); err != nil {
		t.Fatalf("CONNACK: %v", err)
	}
	if ack.Reason != 0 {
		r.expectClosed()
	}
	return byte(ack.Reason), took
}

// When Kafka does not let the instance read the client's sessions partition in time — writes that are not
// acknowledged, or reads that do not return — the CONNECT is refused within SessionsReadWait with 0x88 Server
// Unavailable (v3: return code 3), never answered with a session decided on a partial view; once Kafka
// answers again, the same clients connect.
func TestConnectSessionsReadBound(t *testing.T) {
	for _, stall := range []kmsg.Key{kmsg.Produce, kmsg.Fetch} {
		t.Run(stall.Name(), func(t *testing.T) {
			const wait = 700 * time.Millisecond
			f := startFerry(t, server.SessionsReadWait(wait))
			gate := make(chan struct{})
			var open sync.Once
			release := func() { open.Do(func() { close(gate) }) }
			defer release()
			c := f.mux.Cluster()
			c.ControlKey(int16(stall), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				c.SleepControl(func() { <-gate })
				return nil, nil, false
			})
			time.Sleep(100 * time.Millisecond) // a fetch already at the broker may still return once
			for _, v := range []byte{mqttcodec.Version5, mqttcodec.Version311} {
				want := byte(mqttcodec.ServerUnavailable)
				if v != mqttcodec.Version5 {
					want = 3
				}
				id := fmt.Sprintf("stalled-v%d", v)
				reason, took := connackReason(t, f.addr, v, id)
				if reason != want {
					t.Fatalf("v%d: CONNACK %#x while Kafka stalls, want %#x", v, reason, want)
				}
				if took < wait/2 || took > wait+time.Second {
					t.Fatalf("v%d: refused after %v, want about the read wait (%v)", v, took, wait)
				}
			}
			release()
			for _, v := range []byte{mqttcodec.Version5, mqttcodec.Version311} {
				deadline := time.Now().Add(10 * time.Second)
				for {
					reason, _ := connackReason(t, f.addr, v, fmt.Sprintf("stalled-v%d", v))
					if reason == 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("v%d: CONNACK %#x after Kafka answers again", v, reason)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
}

// A dead instance is noticed by its missing heartbeats (docs/sessions.md documents the bound, deadAfter +
// heartbeatEvery, and BENCHMARKS.md measures it): the ends of its connections are claimed then, so its clients'
// wills (delay 0) go out once; and its clients are takeable on another instance: once the death is noticed, a
// CONNECT there resumes the session without waiting for a hand-over that cannot come. The test pins the
// mechanism, not the clock: the will comes after the heartbeats have gone stale and long before anything else
// could publish it (keep-alive 60 s, session expiry 600 s), and the CONNACK comes within the client's 10 s
// while a hand-over would be waited for 30 s.
func TestInstanceDeathBound(t *testing.T) {
	const every, deadAfter = 250 * time.Millisecond, time.Second
	_, kafka := startKafka(t)
	hb := server.Heartbeats(every, deadAfter)
	a := startInstance(t, kafka, hb, server.HandoffTimeout(30*time.Second))
	b := startInstance(t, kafka, hb, server.HandoffTimeout(30*time.Second))
	watch := dialV5(t, b.addr, &paho.Connect{ClientID: "death-watch", CleanStart: true})
	watch.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})
	mortal := dialV5(t, a.addr, &paho.Connect{ClientID: "mortal", CleanStart: true, KeepAlive: 60,
		Properties:  &paho.ConnectProperties{SessionExpiryInterval: u32(600)},
		WillMessage: &paho.WillMessage{Topic: "wills/mortal", Payload: []byte("gone"), QoS: 1}})
	mortal.sub(t, paho.SubscribeOptions{Topic: "mortal/in", QoS: 1})
	time.Sleep(300 * time.Millisecond) // the subscription's record is in Kafka

	start := time.Now()
	a.crash()
	m := watch.next(t)
	took := time.Since(start)
	if m.Topic != "wills/mortal" || string(m.Payload) != "gone" {
		t.Fatalf("got %s %q", m.Topic, m.Payload)
	}
	t.Logf("will of a dead instance's client published %v after the death (bound: deadAfter %v + heartbeat %v)", took, deadAfter, every)
	// The last heartbeat was at most one interval before the death, so nothing can have noticed it sooner.
	if took < deadAfter-every {
		t.Fatalf("will %v after the death, before its heartbeats could be stale (%v)", took, deadAfter-every)
	}

	// connectV5 gives up after 10 s: a CONNACK that waited for the dead instance's hand-over (30 s) fails here.
	back := dialV5(t, b.addr, &paho.Connect{ClientID: "mortal", CleanStart: false, KeepAlive: 60,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}})
	if !back.connack.SessionPresent {
		t.Fatal("MQTT-3.2.2-2: session present = 0 for a dead instance's client")
	}
	pub := dialV5(t, b.addr, &paho.Connect{ClientID: "death-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "mortal/in", QoS: 1, Payload: []byte("after")})
	if m := back.next(t); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	}
	watch.none(t, time.Second) // the will went out once
}

// A clean start on another instance right after a SUBSCRIBE discards that subscription too: the SUBSCRIBE's
// record, written by the first instance just before the client moved, must not land after the clean start's
// tombstones and bring the subscription back. Back on A with Clean Start 0, the session is there and holds no
// subscription. The race was found by `ferry-chaos sessions` (about 1 in 4,000 moves, three instances); this
// test pins the behaviour but does not reliably lose the race on one in-process Kafka without the fix.
func TestFastCleanStartDiscardsEverything(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	loadQoS1(t, a.addr, b.addr)
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "clean-pub", CleanStart: true})
	for i := 0; i < 10; i++ {
		id, topic := fmt.Sprintf("clean-%d", i), fmt.Sprintf("clean/%d", i)
		cp := func(clean bool) *paho.Connect {
			return &paho.Connect{ClientID: id, CleanStart: clean, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(600)}}
		}
		first := dialV5(t, a.addr, cp(true))
		first.sub(t, paho.SubscribeOptions{Topic: topic, QoS: 1})
		dialV5(t, b.addr, cp(true)) // [MQTT-3.1.2-4] discards the session, subscription included
		back := dialV5(t, a.addr, cp(false))
		if !back.connack.SessionPresent {
			t.Fatalf("round %d: session present = 0 after the clean start made one", i)
		}
		pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("stale")})
		back.none(t, 300*time.Millisecond)
	}
}
