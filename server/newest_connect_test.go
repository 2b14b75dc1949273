package server_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/server"
)

// The newest CONNECT of a client wins [MQTT-3.1.4-3], whichever of two CONNECTs finishes waiting first. H holds
// the client and its fetches are held, so the client's CONNECT on A (the older) waits for H's hand-over; a
// newer CONNECT of the client arrives meanwhile, on A itself or on B. Before, the newer one was answered
// first (on A it did not wait at all: the view's owner was A's own loading CONNECT), and when H's hand-over
// then ended the older one's wait, the older one was accepted too: on A it took the newer connection over
// (DISCONNECT 0x8E to the newer client, CONNACK to the older — the history checker's debug log), on B both
// stayed connected. Now the older CONNECT is refused (v5 CONNACK 0x83) once its wait ends, and the newer one,
// which waits for the older one's end, resumes H's handed-over session.
func TestNewestConnectWins(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sameInst bool // the newer CONNECT arrives on A too; else on B
	}{{"same instance", true}, {"other instance", false}} {
		t.Run(tc.name, func(t *testing.T) {
			_, kafka := startKafka(t)
			opts := []server.Opt{server.HandoffTimeout(20 * time.Second)}
			gh := newFetchGate()
			h := startGated(t, kafka, gh, opts...)
			a := startInstance(t, kafka, opts...)
			b := startInstance(t, kafka, opts...)
			t.Cleanup(gh.release)
			newerAddr := b.addr
			if tc.sameInst {
				newerAddr = a.addr
			}

			first := dialV5(t, h.addr, persistent("newest", true))
			first.sub(t, paho.SubscribeOptions{Topic: "newest/t", QoS: 1})
			time.Sleep(300 * time.Millisecond) // A and B have read H's records
			gh.hold()                          // H reads nothing of what follows: its hand-over waits
			// Kafka answers a fetch waiting for records as soon as there are some: H's next answer is held with
			// this one in it.
			dialV5(t, a.addr, &paho.Connect{ClientID: "newest-wake", CleanStart: true})
			time.Sleep(300 * time.Millisecond)

			older := make(chan error, 1)
			go func() {
				c, err := connectV5(a.addr, persistent("newest", false))
				if err == nil {
					_ = c.Disconnect(&paho.Disconnect{})
				}
				older <- err
			}()
			time.Sleep(500 * time.Millisecond) // A has read the older CONNECT's owner record: it waits for H
			newer := connectAsync(t, newerAddr, persistent("newest", false))
			select {
			case c := <-newer:
				if c != nil {
					_ = c.Disconnect(&paho.Disconnect{})
				}
				t.Fatal("the newer CONNECT was answered while the older one still waited for H's hand-over")
			case <-time.After(time.Second):
			}
			gh.release() // H hands the session over to the older CONNECT, which ends its wait

			second := connackOf(t, newer, "no CONNACK for the newer CONNECT within 15 s")
			if !second.connack.SessionPresent {
				t.Error("MQTT-3.2.2-2: Session Present 0 for the newer CONNECT")
			}
			select {
			case err := <-older:
				if err == nil {
					t.Fatal("MQTT-3.1.4-3: the older CONNECT was accepted after the newer one")
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the older CONNECT was not answered")
			}
			takenOver(t, first, "MQTT-3.1.4-3: H did not disconnect its connection with 0x8E")
			select {
			case d := <-second.discons:
				t.Fatalf("MQTT-3.1.4-3: the newer connection was disconnected (%#x) by the older CONNECT", d.ReasonCode)
			case <-time.After(time.Second):
			}
			pub := dialV5(t, h.addr, &paho.Connect{ClientID: "newest-pub", CleanStart: true})
			pub.pub(t, &paho.Publish{Topic: "newest/t", QoS: 1, Payload: []byte("m1")})
			if m := second.next(t); string(m.Payload) != "m1" {
				t.Fatalf("got %q, want m1 through the subscription H handed over", m.Payload)
			}
		})
	}
}
