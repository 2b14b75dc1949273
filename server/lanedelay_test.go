package server_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// While a loop's records wait for Kafka longer than the QoS 0 delay (offload.LaneQoS0Delay), QoS 0 publishes
// past what Kafka completes in it are dropped and counted as lane_delay; a QoS 1 publish meanwhile is taken,
// acknowledged and delivered. Holding the publishers back first (--qos0-hold, readlag_hold_test.go) is off:
// this is what happens without it, or past its buffer bound.
func TestLaneDelayShedsQoS0NotQoS1(t *testing.T) {
	f := startFerryLanes(t, []offload.Opt{offload.LaneQoS0Delay(time.Millisecond), offload.LaneMinRecords(8), offload.LaneDelay(0)},
		server.ReadLagLimit(0), // the reader's own QoS 0 shedding (readlag.go) off: only the lane decides here
		server.QoS0Hold(false))
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "delay-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "delay/#", QoS: 1})
	laneDelay := func() uint64 { return f.srv.Metrics().Snapshot().Drops[dropIndex("lane_delay")] }

	// Kafka falls behind: every produce request is answered 20 ms late.
	c := f.mux.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(20 * time.Millisecond) })
		return nil, nil, false
	})
	q0 := dialRaw(t, f.addr)
	q0.connect(5, "delay-q0")
	var batch []byte
	for range 50 {
		p := mqttcodec.Publish{Topic: []byte("delay/q0"), Payload: make([]byte, 20)}
		batch = mqttcodec.AppendPublish(batch, &p, 5)
	}
	for deadline := time.Now().Add(10 * time.Second); laneDelay() == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no QoS 0 publish dropped as lane_delay after 10 s against a Kafka answering 20 ms late (stats %+v)", f.off.Stats())
		}
		q0.send(batch) // about 25,000/s: the records in flight wait far longer than 1 ms
	}

	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "delay-pub", CleanStart: true})
	if r := pub.pub(t, &paho.Publish{Topic: "delay/q1", QoS: 1, Payload: []byte("kept")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish while QoS 0 is shed: reason 0x%02x, want success", r.ReasonCode)
	}
	for {
		if m := sub.next(t); m.Topic == "delay/q1" {
			break
		}
	}
	if s := f.off.Stats(); s.Late == 0 || s.LimitQoS0 >= 2*8192 {
		t.Fatalf("lane stats %+v: want QoS 0 refused (Late) under a lowered QoS 0 budget", s)
	}
}
