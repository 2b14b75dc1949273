package server_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

func holdIndex(reason string) int {
	for i, n := range server.HoldReasonNames {
		if n == reason {
			return i
		}
	}
	panic("no hold reason " + reason)
}

// qos0Publish is a v5 QoS 0 PUBLISH of payload to topic.
func qos0Publish(dst []byte, topic, payload string) []byte {
	p := mqttcodec.Publish{Topic: []byte(topic), Payload: []byte(payload)}
	return mqttcodec.AppendPublish(dst, &p, mqttcodec.Version5)
}

// While the shared reader lags past --read-lag-limit, a connection whose next packet is a QoS 0 PUBLISH is not
// read: the PUBLISH is neither handed to Kafka nor dropped, and the PINGREQ behind it is not answered. A QoS 1
// publisher meanwhile is read, acknowledged and delivered. Once the lag is back under the limit the held
// connection is read again: its PUBLISH is delivered and its PINGREQ answered.
func TestQoS0HeldWhileReaderLagsNotQoS1(t *testing.T) {
	f := startFerry(t, server.ReadLagLimit(50*time.Millisecond), server.QoS0Hold(true))
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "hold-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "hold/#", QoS: 1})
	held := func() uint64 { return f.srv.Metrics().Snapshot().QoS0Holds[holdIndex("read_lag")] }
	dropped := func() uint64 { return f.srv.Metrics().Snapshot().Drops[dropIndex("read_lag")] }

	server.HoldReadLag(f.srv, time.Second)
	t.Cleanup(func() { server.HoldReadLag(f.srv, -1) })
	q0 := dialRaw(t, f.addr)
	q0.connect(mqttcodec.Version5, "hold-q0")
	q0.send(mqttcodec.AppendPingreq(qos0Publish(nil, "hold/q0", "held")))
	waitCounter(t, "QoS 0 publishers held for the reader's lag", 1, held)

	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "hold-q1", CleanStart: true})
	if r := pub.pub(t, &paho.Publish{Topic: "hold/q1", QoS: 1, Payload: []byte("read")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish while the reader lags: reason 0x%02x, want success", r.ReasonCode)
	}
	if m := sub.next(t); m.Topic != "hold/q1" {
		t.Fatalf("first delivery %q, want hold/q1: the held QoS 0 PUBLISH was read", m.Topic)
	}

	server.HoldReadLag(f.srv, 0)
	if m := sub.next(t); m.Topic != "hold/q0" || string(m.Payload) != "held" {
		t.Fatalf("delivery after the lag fell: %q %q, want hold/q0 \"held\"", m.Topic, m.Payload)
	}
	if fh, _ := q0.packet(); fh.Type != mqttcodec.PINGRESP {
		t.Fatalf("held publisher got %s, want PINGRESP once read again", mqttcodec.TypeName(fh.Type))
	}
	if n := dropped(); n != 0 {
		t.Fatalf("%d QoS 0 publishes dropped as read_lag, want 0: the publisher was held", n)
	}
}

// Without --qos0-hold (the default), the same lag drops instead of holding: the connection is read and nothing
// is held.
func TestQoS0HoldOff(t *testing.T) {
	f := startFerry(t, server.ReadLagLimit(50*time.Millisecond))
	server.HoldReadLag(f.srv, time.Second)
	t.Cleanup(func() { server.HoldReadLag(f.srv, -1) })
	q0 := dialRaw(t, f.addr)
	q0.connect(mqttcodec.Version5, "nohold-q0")
	q0.send(mqttcodec.AppendPingreq(qos0Publish(nil, "nohold/q0", "x")))
	if fh, _ := q0.packet(); fh.Type != mqttcodec.PINGRESP {
		t.Fatalf("got %s, want PINGRESP: the connection is read", mqttcodec.TypeName(fh.Type))
	}
	if s := f.srv.Metrics().Snapshot(); s.QoS0Holds != [len(server.HoldReasonNames)]uint64{} {
		t.Fatalf("holds %v with --qos0-hold off", s.QoS0Holds)
	}
}

// While a loop's records wait for Kafka past its QoS 0 budget (offload.LaneQoS0Delay), a QoS 0 publisher is held
// instead of dropped; the lane's OnSpace reads it again once Kafka catches up, and its later publish is delivered
// and its PINGREQ answered. A QoS 1 publish meanwhile is taken and acknowledged.
func TestQoS0HeldForLaneDelay(t *testing.T) {
	f := startFerryLanes(t, []offload.Opt{offload.LaneQoS0Delay(time.Millisecond), offload.LaneMinRecords(8), offload.LaneDelay(0)},
		server.ReadLagLimit(0), server.QoS0Hold(true)) // only the lane decides here
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "lhold-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "lhold/#", QoS: 1})
	held := func() uint64 { return f.srv.Metrics().Snapshot().QoS0Holds[holdIndex("lane_delay")] }

	// Kafka falls behind: every produce request is answered 20 ms late, until slow is cleared.
	var slow atomic.Bool
	slow.Store(true)
	c := f.mux.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if slow.Load() {
			c.SleepControl(func() { time.Sleep(20 * time.Millisecond) })
		}
		return nil, nil, false
	})
	q0 := dialRaw(t, f.addr)
	q0.connect(mqttcodec.Version5, "lhold-q0")
	var batch []byte
	for range 50 {
		batch = qos0Publish(batch, "lhold/q0", "01234567890123456789")
	}
	for deadline := time.Now().Add(10 * time.Second); held() == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no QoS 0 publisher held after 10 s against a Kafka answering 20 ms late (stats %+v)", f.off.Stats())
		}
		q0.send(batch)
	}

	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "lhold-q1", CleanStart: true})
	if r := pub.pub(t, &paho.Publish{Topic: "lhold/q1", QoS: 1, Payload: []byte("kept")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish while QoS 0 is held: reason 0x%02x, want success", r.ReasonCode)
	}

	slow.Store(false)
	q0.send(mqttcodec.AppendPingreq(qos0Publish(nil, "lhold/last", "after")))
	for {
		fh, _ := q0.packet()
		if fh.Type == mqttcodec.PINGRESP {
			break
		}
	}
	for {
		if m := sub.next(t); m.Topic == "lhold/last" {
			break
		}
	}
}
