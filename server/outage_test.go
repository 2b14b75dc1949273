package server_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// Kafka stops answering produce requests for a while under QoS 1 load: Ferry keeps the MQTT connections and
// their keep-alives, withholds every PUBACK, holds no more than its budgets (lane: 100 records per loop; per
// client: Receive Maximum), drops and counts QoS 0, and once Kafka answers again acknowledges and delivers
// everything, in order per topic, with nothing lost.
func TestKafkaOutageUnderLoad(t *testing.T) {
	f := buildFerry(t, []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir("")},
		[]offload.Opt{offload.LaneRecords(100)})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.srv.Stop(ctx)
		f.mux.Close()
	}()
	addr, mux, srv := f.addr, f.mux, f.srv

	sub := dialV5(t, addr, &paho.Connect{ClientID: "outage-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "out/#", QoS: 1})

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const clients, each = 5, 300
	pubs := make([]*raw, clients)
	for i := range pubs {
		pubs[i] = dialRaw(t, addr)
		pubs[i].connect(5, fmt.Sprintf("outage-pub-%d", i))
	}
	qos0 := dialRaw(t, addr)
	qos0.connect(5, "outage-qos0")

	// The outage: every produce request waits at the broker until the gate opens. The clients connected
	// before it: a CONNECT during it is refused with 0x88 once SessionsReadWait passes (consistency.go).
	gate := make(chan struct{})
	c := mux.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-gate })
		return nil, nil, false
	})
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	defer release()

	for i := range pubs {
		var batch []byte
		for j := 1; j <= each; j++ {
			p := mqttcodec.Publish{Topic: []byte(fmt.Sprintf("out/%d", i)), QoS: 1, PacketID: uint16(j), Payload: []byte(strconv.Itoa(j))}
			batch = mqttcodec.AppendPublish(batch, &p, 5)
		}
		pubs[i].send(batch)
	}
	var burst []byte
	for j := 0; j < 2000; j++ {
		p := mqttcodec.Publish{Topic: []byte("out0/x"), Payload: make([]byte, 100)}
		burst = mqttcodec.AppendPublish(burst, &p, 5)
	}
	qos0.send(burst)

	// During the outage: no PUBACK, but PINGREQ is answered (the connection and its keep-alive live on).
	time.Sleep(2 * time.Second)
	for i, r := range pubs {
		r.send(mqttcodec.AppendPingreq(nil))
		fh, _ := r.packet()
		if fh.Type != mqttcodec.PINGRESP {
			t.Fatalf("publisher %d: got %s during the outage, want only PINGRESP", i, mqttcodec.TypeName(fh.Type))
		}
	}
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	grew := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d KiB during the outage with %d QoS 1 and 2,000 QoS 0 publishes waiting", grew>>10, clients*each)
	if grew > 64<<20 {
		t.Fatalf("heap grew by %d MiB during the outage", grew>>20)
	}
	if drops := srv.Metrics().Snapshot().Drops; drops[0] == 0 {
		t.Fatal("no QoS 0 publish counted as dropped while Kafka's budget was full")
	}

	release()
	for i, r := range pubs {
		for j := 1; j <= each; j++ {
			fh, body := r.packet()
			var a mqttcodec.Ack
			if fh.Type != mqttcodec.PUBACK || a.Decode(fh, body, 5) != nil || a.PacketID != uint16(j) || a.Reason != 0 {
				t.Fatalf("publisher %d: ack %d is %s id %d reason %v, want PUBACK %d success in order", i, j, mqttcodec.TypeName(fh.Type), a.PacketID, a.Reason, j)
			}
		}
	}
	next := make([]int, clients)
	for n := 0; n < clients*each; n++ {
		m := sub.next(t)
		var i int
		fmt.Sscanf(m.Topic, "out/%d", &i)
		next[i]++
		if string(m.Payload) != strconv.Itoa(next[i]) {
			t.Fatalf("topic %s: got %q, want %d (order per topic)", m.Topic, m.Payload, next[i])
		}
	}
}
