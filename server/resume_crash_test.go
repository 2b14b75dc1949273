package server_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// resumeSub is a hand-driven v5 subscriber with a persistent session and a Receive Maximum of 10: it
// acknowledges exactly the messages the test says.
type resumeSub struct{ *raw }

func resumeConnect(t *testing.T, addr string, clean, wantPresent bool) resumeSub {
	t.Helper()
	return resumeSub{connectRaw(t, addr, "replayer", clean, wantPresent, func(p *mqttcodec.Connect) {
		p.Props.ReceiveMaximum = 10
		p.Props.Set(mqttcodec.PropReceiveMaximum)
	})}
}

// next reads the next PUBLISH: its sequence number (the payload), packet id and DUP flag.
func (c resumeSub) next() (int, uint16, bool) {
	c.t.Helper()
	fh, body := c.packet()
	var p mqttcodec.Publish
	if fh.Type == mqttcodec.DISCONNECT {
		var d mqttcodec.Disconnect
		_ = d.Decode(fh, body, 5)
		c.t.Fatalf("got DISCONNECT %s, want PUBLISH", d.Reason)
	}
	if fh.Type != mqttcodec.PUBLISH {
		c.t.Fatalf("got %s, want PUBLISH", mqttcodec.TypeName(fh.Type))
	}
	if err := p.Decode(fh, body, 5); err != nil {
		c.t.Fatal(err)
	}
	n, err := strconv.Atoi(string(p.Payload))
	if err != nil {
		c.t.Fatalf("payload %q", p.Payload)
	}
	return n, p.PacketID, p.Dup
}

func (c resumeSub) puback(id uint16) {
	c.send(mqttcodec.AppendAck(nil, &mqttcodec.Ack{Type: mqttcodec.PUBACK, PacketID: id}, 5))
}

// A resume that an instance crash interrupts keeps its progress: the replay's position is saved while it
// runs (every SaveEvery, like a live session's), so the next instance resumes from what the client had
// acknowledged, not again from the offsets stored before the interrupted resume began. Without that, every
// crash during a resume adds its whole backlog to the next one, and under steady load and repeated crashes
// the subscriber never catches up with live messages (scripts/crash.sh, 200 clients).
func TestResumeInterruptedByCrashKeepsProgress(t *testing.T) {
	_, kafka := startKafka(t)
	opts := []server.Opt{server.SaveEvery(50 * time.Millisecond), server.HandoffTimeout(300 * time.Millisecond), server.SessionQueue(50)}
	// The same transactional id for both incarnations, as a restarted process has: the second fences the
	// first's open transaction at once.
	start := func() *instance {
		in := &instance{ferry: buildFerry(t, []kafkamux.Opt{kafkamux.Brokers(kafka), kafkamux.Transactions("resume-crash")}, nil, opts...)}
		t.Cleanup(in.stop)
		return in
	}
	a := start()

	s := resumeConnect(t, a.addr, true, false)
	sub := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte("rc/#"), QoS: 1}}}
	s.send(mqttcodec.AppendSubscribe(nil, &sub, 5))
	if fh, _ := s.packet(); fh.Type != mqttcodec.SUBACK {
		t.Fatalf("got %s, want SUBACK", mqttcodec.TypeName(fh.Type))
	}
	s.send(mqttcodec.AppendDisconnect(nil, &mqttcodec.Disconnect{}, 5))
	s.expectClosed()
	time.Sleep(200 * time.Millisecond) // the final delivery record is written

	// A backlog of n QoS 1 messages on one topic (one partition, so one order) while the client is away.
	const n, acked = 3000, 1000
	pr, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.DefaultProduceTopic("mqtt-messages"))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte("rc/x"), Value: []byte(strconv.Itoa(i)), Headers: []kgo.RecordHeader{
			{Key: kafkamux.HeaderVersion, Value: []byte("1")}, {Key: kafkamux.HeaderQoS, Value: []byte("1")}}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in0 := a.srv.Metrics().Snapshot().RecordsIn
	if err := pr.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The backlog is behind a's shared reader before the client comes back, so all of it is the replay's.
	for deadline := time.Now().Add(10 * time.Second); a.srv.Metrics().Snapshot().RecordsIn < in0+n; {
		if time.Now().After(deadline) {
			t.Fatal("the instance's reader did not hand on the backlog within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The client resumes on a and acknowledges the first 1,000 messages of the replay; then it stops reading,
	// so the replay waits for it, and the instance dies well after several saves.
	s = resumeConnect(t, a.addr, false, true)
	for want := 0; want < acked; want++ {
		got, id, _ := s.next()
		if got != want {
			t.Fatalf("first resume: message %d, want %d", got, want)
		}
		s.puback(id)
	}
	time.Sleep(500 * time.Millisecond)
	a.crash()
	s.nc.Close()

	// The next incarnation: the dead owner does not hand over, so the session resumes from the last stored
	// state, which is at most SaveEvery old.
	b := start()
	s = resumeConnect(t, b.addr, false, true)
	first, id, dup := s.next()
	if first != acked {
		t.Fatalf("the resume after the crash starts at message %d, want %d: the progress of the interrupted resume "+
			"(%d messages acknowledged, saved every 50 ms) was not stored", first, acked, acked)
	}
	if !dup {
		t.Error("MQTT-4.4.0-1: a message in flight at the crash is re-sent without DUP")
	}
	s.puback(id)
	for want := acked + 1; want < n; want++ {
		got, id, _ := s.next()
		if got != want {
			t.Fatalf("after the crash: message %d, want %d", got, want)
		}
		s.puback(id)
	}
	// Then live messages.
	pub := dialV5(t, b.addr, &paho.Connect{ClientID: "rc-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "rc/x", QoS: 1, Payload: []byte("-1")})
	if got, _, _ := s.next(); got != -1 {
		t.Fatalf("live message after the resume: got %d", got)
	}
}
