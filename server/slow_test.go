package server_test

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// A subscriber that stops reading does not slow the others or grow memory past its budgets: it is
// disconnected with 0x97 once its session queue is full, its session keeps its offsets in Kafka, and when it
// comes back it gets every message it had not acknowledged.
func TestDeadSubscriber(t *testing.T) {
	f := startFerry(t, server.SessionQueue(500), server.OutboundBudget(64<<10))
	healthy := dialV5(t, f.addr, &paho.Connect{ClientID: "healthy-sub", CleanStart: true})
	healthy.sub(t, paho.SubscribeOptions{Topic: "slow/#", QoS: 1})

	dead := dialRaw(t, f.addr)
	cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, KeepAlive: 60, ClientID: []byte("dead-sub"), CleanStart: true}
	cp.Props.SessionExpiry = 300
	cp.Props.Set(mqttcodec.PropSessionExpiry)
	cp.Props.ReceiveMaximum = 10
	cp.Props.Set(mqttcodec.PropReceiveMaximum)
	dead.send(mqttcodec.AppendConnect(nil, &cp))
	dead.packet()
	s := mqttcodec.Subscribe{PacketID: 1, Subs: []mqttcodec.Subscription{{Filter: []byte("slow/#"), QoS: 1}}}
	dead.send(mqttcodec.AppendSubscribe(nil, &s, 5))
	dead.packet() // SUBACK; from now on it reads nothing

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	pub := dialRaw(t, f.addr)
	pub.connect(5, "slow-pub")
	const n = 3000
	payload := make([]byte, 1024)
	start := time.Now()
	for j := 1; j <= n; j++ {
		copy(payload, strconv.Itoa(j)+" ")
		p := mqttcodec.Publish{Topic: []byte("slow/t"), QoS: 1, PacketID: uint16(j%60000 + 1), Payload: payload}
		pub.send(mqttcodec.AppendPublish(nil, &p, 5))
		if j%500 == 0 {
			for k := 0; k < 500; k++ {
				if fh, _ := pub.packet(); fh.Type != mqttcodec.PUBACK {
					t.Fatalf("got %s", mqttcodec.TypeName(fh.Type))
				}
			}
		}
	}
	for j := 1; j <= n; j++ {
		m := healthy.next(t)
		if got := string(m.Payload[:len(strconv.Itoa(j))]); got != strconv.Itoa(j) {
			t.Fatalf("healthy subscriber: message %d is %q", j, got)
		}
	}
	t.Logf("healthy subscriber got %d × 1 KiB in %v beside a dead one", n, time.Since(start))
	runtime.GC() // what is retained, not the garbage of 3,000 deliveries not yet collected
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
		t.Fatalf("heap grew by %d MiB: the dead subscriber's backlog is not bounded", grew>>20)
	}
	t.Logf("live heap grew by %d KiB while the dead subscriber held its backlog", (int64(after.HeapInuse)-int64(before.HeapInuse))>>10)

	// The dead subscriber was told why: somewhere after the PUBLISHes its socket holds DISCONNECT 0x97.
	sawQuota := false
	for !sawQuota {
		fh, body, err := dead.tryPacket()
		if err != nil {
			t.Fatalf("the dead subscriber was not disconnected with 0x97: %v", err)
		}
		var d mqttcodec.Disconnect
		if fh.Type == mqttcodec.DISCONNECT && d.Decode(fh, body, 5) == nil {
			if d.Reason != mqttcodec.QuotaExceeded {
				t.Fatalf("DISCONNECT %s, want 0x97", d.Reason)
			}
			sawQuota = true
		}
	}

	// Back with its session: every message it had not acknowledged arrives (re-sends with DUP allowed).
	back := dialV5(t, f.addr, persistent("dead-sub", false))
	if !back.connack.SessionPresent {
		t.Fatal("the session did not survive the disconnect")
	}
	seen := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(seen) < n {
		select {
		case m := <-back.msgs:
			var num int
			fmt.Sscanf(string(m.Payload), "%d", &num)
			seen[strconv.Itoa(num)] = true
		case <-deadline:
			t.Fatalf("after the resume %d of %d distinct messages arrived", len(seen), n)
		}
	}
}
