package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Drain tells v5 clients 0x8B, closes every connection, refuses new ones and reports not ready; the sessions'
// offsets are written, so a client resuming on another instance loses nothing.
func TestDrain(t *testing.T) {
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	c := dialV5(t, a.addr, persistent("drainee", true))
	c.sub(t, paho.SubscribeOptions{Topic: "dr", QoS: 1})
	v3 := dialV3(t, a.addr, "drainee-v3", true, nil)

	pub := dialV5(t, b.addr, &paho.Connect{ClientID: "drain-pub", CleanStart: true})
	for i := 0; i < 20; i++ {
		pub.pub(t, &paho.Publish{Topic: "dr", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	for i := 0; i < 20; i++ {
		c.next(t)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("drained in %v", time.Since(start))
	select {
	case d := <-c.discons:
		if d.ReasonCode != byte(mqttcodec.ServerShuttingDown) {
			t.Fatalf("DISCONNECT %#x, want 0x8B", d.ReasonCode)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("MQTT-3.14.2-1: the v5 client was not told the server is shutting down")
	}
	if v3.IsConnected() {
		// paho.mqtt.golang notices the close asynchronously; give it a moment.
		time.Sleep(500 * time.Millisecond)
		if v3.IsConnectionOpen() {
			t.Fatal("the v3 client is still connected after the drain")
		}
	}
	if ok, why := a.srv.Ready(); ok || why != "draining" {
		t.Fatalf("Ready() = %v %q during a drain", ok, why)
	}
	if _, err := connectV5(a.addr, &paho.Connect{ClientID: "late", CleanStart: true}); err == nil {
		t.Fatal("a CONNECT was accepted during the drain")
	}

	for i := 20; i < 70; i++ {
		pub.pub(t, &paho.Publish{Topic: "dr", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	back := dialV5(t, b.addr, persistent("drainee", false))
	if !back.connack.SessionPresent {
		t.Fatal("session lost in the drain")
	}
	for i := 20; i < 70; i++ {
		m := back.next(t)
		for i == 20 && m.Duplicate() && string(m.Payload) < "20" && len(m.Payload) == 2 {
			// A message the client had received but whose PUBACK was still on its way when the drain closed
			// the connection comes again, with DUP, as QoS 1 allows [MQTT-4.4.0-1].
			t.Logf("re-sent with DUP: %s", m.Payload)
			m = back.next(t)
		}
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q (dup %v)", i, m.Payload, m.Duplicate())
		}
	}
}
