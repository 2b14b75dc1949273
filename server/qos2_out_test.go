package server_test

import (
	"context"
	"strconv"
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

// A stream of QoS 2 deliveries to a persistent session starts at most two delivery records holding QoS 2 steps
// per QoS2StateGap, each carrying every step held since the one before, and every step still goes out: here
// 30 messages published 10 ms apart (60 held steps: each PUBLISH, then each PUBREL) take a handful of records.
// Without the gap a record follows each Kafka round trip, one or two per message.
func TestQoS2StateRecordsCoalescedByGap(t *testing.T) {
	const n, gap = 30, 400 * time.Millisecond
	_, kafka := startKafka(t)
	a := startInstance(t, kafka, server.SaveEvery(time.Hour), server.QoS2StateGap(gap))

	sub := q2subscribed(t, a.addr, "q2g/#")
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "q2g-pub", CleanStart: true})
	before := a.srv.Metrics().Snapshot().HeldSaves
	start := time.Now()
	pubErr := make(chan error, 1)
	go func() {
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := pub.Publish(ctx, &paho.Publish{Topic: "q2g/x", QoS: 2, Payload: []byte(strconv.Itoa(i))})
			cancel()
			if err != nil {
				pubErr <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		pubErr <- nil
	}()
	sub.receiveAll(n, n, func(i int, p *mqttcodec.Publish) {
		if p.Dup || p.QoS != 2 || string(p.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d: dup %v QoS %d payload %q", i, p.Dup, p.QoS, p.Payload)
		}
	})
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	records := a.srv.Metrics().Snapshot().HeldSaves - before
	// Two records may start at once, then at most two per gap: the last one started before the last PUBREL came.
	if most := 2 + 2*uint64(time.Since(start)/gap); records > most || records == 0 {
		t.Fatalf("%d records held the %d QoS 2 steps in %v, want 1 to %d (two per %v at most)", records, 2*n, time.Since(start).Round(time.Millisecond), most, gap)
	}
}

// q2subscribed connects a new persistent session of q2sub and subscribes it to filter at QoS 2.
func q2subscribed(t *testing.T, addr, filter string) q2sub {
	t.Helper()
	sub := q2subConnect(t, addr, true, false)
	s := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte(filter), QoS: 2}}}
	sub.send(mqttcodec.AppendSubscribe(nil, &s, 5))
	if fh, _ := sub.packet(); fh.Type != mqttcodec.SUBACK {
		t.Fatalf("got %s, want SUBACK", mqttcodec.TypeName(fh.Type))
	}
	return sub
}

// receiveAll reads n PUBLISHes, checked in order by check, and completes each: PUBACK for QoS 1; PUBREC, then
// PUBCOMP for the PUBREL of QoS 2, of which there are q2.
func (c q2sub) receiveAll(n, q2 int, check func(i int, p *mqttcodec.Publish)) {
	c.t.Helper()
	got, done := 0, 0
	for got < n || done < q2 {
		fh, body, err := c.readUntil(time.Now().Add(10 * time.Second))
		if err != nil {
			c.t.Fatalf("after %d messages and %d QoS 2 completed: %v", got, done, err)
		}
		switch fh.Type {
		case mqttcodec.PUBLISH:
			var p mqttcodec.Publish
			if err := p.Decode(fh, body, 5); err != nil {
				c.t.Fatal(err)
			}
			check(got, &p)
			got++
			if p.QoS == 1 {
				c.ack(mqttcodec.PUBACK, p.PacketID)
			} else {
				c.ack(mqttcodec.PUBREC, p.PacketID)
			}
		case mqttcodec.PUBREL:
			var rel mqttcodec.Ack
			if err := rel.Decode(fh, body, 5); err != nil {
				c.t.Fatal(err)
			}
			done++
			c.ack(mqttcodec.PUBCOMP, rel.PacketID)
		default:
			c.t.Fatalf("got %s, want PUBLISH or PUBREL", mqttcodec.TypeName(fh.Type))
		}
	}
}

// A QoS 1 message queued behind a held QoS 2 PUBLISH of a persistent session goes into flight with it and out
// right after it, in order [MQTT-4.6.0-6], with no record of its own: messages of both QoS interleaved take a
// few records (here 10 QoS 2 and 10 QoS 1 take at most 6 for their 20 held QoS 2 steps), not one per QoS 2
// message, which the session's queue would wait for one gap after another.
func TestQoS1BehindHeldQoS2GoesWithIt(t *testing.T) {
	const n = 20
	_, kafka := startKafka(t)
	a := startInstance(t, kafka, server.SaveEvery(time.Hour), server.QoS2StateGap(400*time.Millisecond))

	sub := q2subscribed(t, a.addr, "q2b/#")
	pub := dialV5(t, a.addr, &paho.Connect{ClientID: "q2b-pub", CleanStart: true})
	before := a.srv.Metrics().Snapshot().HeldSaves
	for i := range n {
		pub.pub(t, &paho.Publish{Topic: "q2b/x", QoS: byte(2 - i%2), Payload: []byte(strconv.Itoa(i))})
	}
	sub.receiveAll(n, n/2, func(i int, p *mqttcodec.Publish) {
		if string(p.Payload) != strconv.Itoa(i) || int(p.QoS) != 2-i%2 {
			t.Fatalf("message %d: QoS %d payload %q, want QoS %d %q (in order)", i, p.QoS, p.Payload, 2-i%2, strconv.Itoa(i))
		}
	})
	if records := a.srv.Metrics().Snapshot().HeldSaves - before; records > 6 {
		t.Fatalf("%d records held the 20 QoS 2 steps, want at most 6: each QoS 2 message waited for its own", records)
	}
}
