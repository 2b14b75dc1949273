package server_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// q2sub is a v5 subscriber with a persistent session, driven by hand so a test sees every packet id and DUP.
type q2sub struct{ *raw }

func q2subConnect(t *testing.T, addr string, clean, wantPresent bool) q2sub {
	t.Helper()
	return q2sub{connectRaw(t, addr, "q2-out", clean, wantPresent, nil)}
}

// publish reads the next packet, which must be a PUBLISH.
func (c q2sub) publish() mqttcodec.Publish {
	c.t.Helper()
	fh, body := c.packet()
	var p mqttcodec.Publish
	if fh.Type != mqttcodec.PUBLISH {
		c.t.Fatalf("got %s, want PUBLISH", mqttcodec.TypeName(fh.Type))
	}
	if err := p.Decode(fh, body, 5); err != nil {
		c.t.Fatal(err)
	}
	p.Payload = append([]byte(nil), p.Payload...)
	return p
}

func (c q2sub) ack(typ byte, id uint16) {
	c.send(mqttcodec.AppendAck(nil, &mqttcodec.Ack{Type: typ, PacketID: id}, 5))
}

// An outbound QoS 2 message to a persistent session is delivered at most once when the instance that sent it
// is killed right after: the resumed session on another instance sends the PUBLISH again with its packet id and
// DUP [MQTT-4.4.0-1], or — if the client had sent PUBREC and got the PUBREL — only the PUBREL, never the
// message as a new one. Before the in-flight state was stored ahead of the PUBLISH, the resume knew the
// session only as of its last delivery record (here: the SUBSCRIBE's; periodic saves are off) and sent the
// message again with DUP 0, as new; the history checker found 16–18 such duplicates per long run.
func TestQoS2OutboundAcrossInstanceKill(t *testing.T) {
	for _, step := range []string{"after PUBLISH", "after PUBREL"} {
		t.Run("MQTT-4.4.0-1/"+step, func(t *testing.T) {
			_, kafka := startKafka(t)
			opts := []server.Opt{server.HandoffTimeout(time.Second), server.SaveEvery(time.Hour)}
			a := startInstance(t, kafka, opts...)
			b := startInstance(t, kafka, opts...)

			sub := q2subConnect(t, a.addr, true, false)
			s := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte("q2o/#"), QoS: 2}}}
			sub.send(mqttcodec.AppendSubscribe(nil, &s, 5))
			if fh, _ := sub.packet(); fh.Type != mqttcodec.SUBACK {
				t.Fatalf("got %s, want SUBACK", mqttcodec.TypeName(fh.Type))
			}
			pub := dialV5(t, b.addr, &paho.Connect{ClientID: "q2-out-pub", CleanStart: true})
			pub.pub(t, &paho.Publish{Topic: "q2o/x", QoS: 2, Payload: []byte("once")})

			p := sub.publish()
			if p.Dup || string(p.Payload) != "once" || p.QoS != 2 {
				t.Fatalf("first delivery: dup %v qos %d %q", p.Dup, p.QoS, p.Payload)
			}
			id := p.PacketID
			if step == "after PUBREL" {
				sub.ack(mqttcodec.PUBREC, id)
				fh, body := sub.packet()
				var rel mqttcodec.Ack
				if fh.Type != mqttcodec.PUBREL || rel.Decode(fh, body, 5) != nil || rel.PacketID != id {
					t.Fatalf("got %s, want PUBREL %d", mqttcodec.TypeName(fh.Type), id)
				}
			}
			a.crash() // at once: nothing A does after sending reaches Kafka
			sub.nc.Close()

			back := q2subConnect(t, b.addr, false, true)
			fh, body := back.packet()
			switch step {
			case "after PUBLISH":
				var again mqttcodec.Publish
				if fh.Type != mqttcodec.PUBLISH || again.Decode(fh, body, 5) != nil {
					t.Fatalf("got %s, want the PUBLISH again", mqttcodec.TypeName(fh.Type))
				}
				if again.PacketID != id || !again.Dup || string(again.Payload) != "once" {
					t.Fatalf("after the kill: packet id %d dup %v %q, want packet id %d with DUP (a new id or DUP 0 is a second delivery)",
						again.PacketID, again.Dup, again.Payload, id)
				}
				back.ack(mqttcodec.PUBREC, id)
				back.packet() // PUBREL
				back.ack(mqttcodec.PUBCOMP, id)
			case "after PUBREL":
				var rel mqttcodec.Ack
				if fh.Type != mqttcodec.PUBREL || rel.Decode(fh, body, 5) != nil || rel.PacketID != id {
					t.Fatalf("got %s, want PUBREL %d: the client has released the id, a PUBLISH would be a new message",
						mqttcodec.TypeName(fh.Type), id)
				}
				back.ack(mqttcodec.PUBCOMP, id)
			}
			if fh, _, err := back.readUntil(time.Now().Add(time.Second)); err == nil {
				t.Fatalf("then %s, want nothing more", mqttcodec.TypeName(fh.Type))
			}
		})
	}
}
