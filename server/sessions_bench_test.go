package server_test

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
)

// connectOnce connects a raw v5 client and returns the CONNECT→CONNACK time and whether a session was present.
func connectOnce(tb testing.TB, addr, id string, clean bool) (time.Duration, bool, *raw) {
	r := dialRaw(tb, addr)
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, CleanStart: clean, KeepAlive: 30, ClientID: []byte(id)}
	p.Props.SessionExpiry = 300
	p.Props.Set(mqttcodec.PropSessionExpiry)
	start := time.Now()
	r.send(mqttcodec.AppendConnect(nil, &p))
	fh, body := r.packet()
	d := time.Since(start)
	var ack mqttcodec.Connack
	if fh.Type != mqttcodec.CONNACK || ack.Decode(fh, body, 5) != nil || ack.Reason != 0 {
		tb.Fatalf("no successful CONNACK")
	}
	return d, ack.SessionPresent, r
}

func reportPercentiles(b *testing.B, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkConnectNewSession: CONNECT→CONNACK of a new persistent session (writes o: and s: to Kafka).
func BenchmarkConnectNewSession(b *testing.B) {
	_, kafka := startKafka(b)
	a := startInstance(b, kafka)
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, _, r := connectOnce(b, a.addr, fmt.Sprintf("new-%d", i), true)
		ds = append(ds, d)
		r.nc.Close()
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

// BenchmarkConnectResumedSession: CONNECT→CONNACK of a session stored in Kafka by another instance (restore
// from the sessions index, subscriptions into the trie; the replay runs after the CONNACK).
func BenchmarkConnectResumedSession(b *testing.B) {
	_, kafka := startKafka(b)
	a := startInstance(b, kafka)
	bb := startInstance(b, kafka)
	for i := 0; i < b.N; i++ {
		c := dialV5(b, a.addr, persistent(fmt.Sprintf("res-%d", i), true))
		c.sub(b, paho.SubscribeOptions{Topic: fmt.Sprintf("res/%d/#", i), QoS: 1})
		_ = c.Disconnect(&paho.Disconnect{})
	}
	time.Sleep(500 * time.Millisecond)
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, present, r := connectOnce(b, bb.addr, fmt.Sprintf("res-%d", i), false)
		if !present {
			b.Fatal("session not present")
		}
		ds = append(ds, d)
		r.nc.Close()
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

// TestResumeTenThousand: a session with 10,000 QoS 1 messages waiting resumes on another instance and gets
// them all, in order; the time to the last one is logged for the figures.
func TestResumeTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 messages")
	}
	_, kafka := startKafka(t)
	a := startInstance(t, kafka)
	b := startInstance(t, kafka)
	c := dialV5(t, a.addr, persistent("backlog", true))
	c.sub(t, paho.SubscribeOptions{Topic: "bl", QoS: 1})
	_ = c.Disconnect(&paho.Disconnect{})
	r := dialRaw(t, a.addr)
	r.connect(5, "backlog-pub")
	const n = 10000
	var batch []byte
	for i := 1; i <= n; i++ {
		p := mqttcodec.Publish{Topic: []byte("bl"), QoS: 1, PacketID: uint16(i%60000 + 1), Payload: []byte(fmt.Sprint(i))}
		batch = mqttcodec.AppendPublish(batch, &p, 5)
		if i%500 == 0 {
			r.send(batch)
			batch = batch[:0]
			for j := 0; j < 500; j++ {
				if fh, _ := r.packet(); fh.Type != mqttcodec.PUBACK {
					t.Fatalf("got %s", mqttcodec.TypeName(fh.Type))
				}
			}
		}
	}
	start := time.Now()
	back := dialV5(t, b.addr, persistent("backlog", false))
	connack := time.Since(start)
	for i := 1; i <= n; i++ {
		if m := back.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
	}
	t.Logf("resume of %d queued messages on another instance: CONNACK after %v, last message after %v", n, connack, time.Since(start))
}

// BenchmarkConnectConcurrent: CONNECT→CONNACK of new persistent sessions, 32 clients connecting at once (the
// fences of concurrent CONNECTs share produce batches and fetches); connects/s is the rate reached.
func BenchmarkConnectConcurrent(b *testing.B) {
	_, kafka := startKafka(b)
	a := startInstance(b, kafka)
	var mu sync.Mutex
	ds := make([]time.Duration, 0, b.N)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			d, _, r := connectOnce(b, a.addr, fmt.Sprintf("conc-%d", n.Add(1)), true)
			mine = append(mine, d)
			r.nc.Close()
		}
		mu.Lock()
		ds = append(ds, mine...)
		mu.Unlock()
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "connects/s")
	b.StopTimer()
	reportPercentiles(b, ds)
}
