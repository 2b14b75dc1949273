package server_test

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func dialV3(t testing.TB, addr, id string, clean bool, onMsg mqtt.MessageHandler) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetKeepAlive(30 * time.Second).SetDefaultPublishHandler(onMsg)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// MQTT 3.1.1 clients publish and subscribe at every QoS, and interoperate with v5 clients.
func TestV311PubSub(t *testing.T) {
	f := startFerry(t)
	got := make(chan mqtt.Message, 100)
	sub := dialV3(t, f.addr, "v3-sub", true, func(_ mqtt.Client, m mqtt.Message) { got <- m })
	if tok := sub.Subscribe("v3/#", 2, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := dialV3(t, f.addr, "v3-pub", true, nil)
	for q := byte(0); q <= 2; q++ {
		t.Run(fmt.Sprintf("MQTT-3.3.1-qos%d", q), func(t *testing.T) {
			topic := fmt.Sprintf("v3/%d", q)
			if tok := pub.Publish(topic, q, false, topic); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
			select {
			case m := <-got:
				if m.Topic() != topic || m.Qos() != q || string(m.Payload()) != topic {
					t.Fatalf("got %s qos %d %q", m.Topic(), m.Qos(), m.Payload())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no message")
			}
		})
	}
}

// A v3.1.1 persistent session (CleanSession=0) keeps its subscriptions and queues QoS 1 messages while the
// client is away; Session Present says so.
func TestV311PersistentSession(t *testing.T) {
	f := startFerry(t)
	got := make(chan mqtt.Message, 1000)
	h := func(_ mqtt.Client, m mqtt.Message) { got <- m }
	c := dialV3(t, f.addr, "v3-persist", false, h)
	if tok := c.Subscribe("persist/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.Disconnect(100)
	pub := dialV3(t, f.addr, "v3-persist-pub", true, nil)
	for i := 0; i < 100; i++ {
		pub.Publish("persist/one", 1, false, fmt.Sprint(i)).Wait() // one topic: MQTT orders per topic
	}
	time.Sleep(300 * time.Millisecond)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + f.addr).SetClientID("v3-persist").SetCleanSession(false).
		SetProtocolVersion(4).SetAutoReconnect(false).SetDefaultPublishHandler(h)
	c2 := mqtt.NewClient(o)
	tok := c2.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c2.Disconnect(100)
	if !tok.(*mqtt.ConnectToken).SessionPresent() {
		t.Fatal("MQTT-3.2.2-2: Session Present is 0 for a resumed session")
	}
	for i := 0; i < 100; i++ {
		select {
		case m := <-got:
			if string(m.Payload()) != fmt.Sprint(i) {
				t.Fatalf("message %d: got %q (out of order)", i, m.Payload())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("received %d of 100 queued messages", i)
		}
	}
}
