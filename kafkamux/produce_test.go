package kafkamux

// Producing through a Mux: the end-to-end latency of a record, QoS 0 acknowledgements.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func produceSync(t testing.TB, m *Mux, r *kgo.Record) *kgo.Record {
	t.Helper()
	errc := make(chan error, 1)
	m.Produce(context.Background(), r, func(_ *kgo.Record, err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("produce: no ack after 15s")
	}
	return r
}

// TestEndToEndLatency measures produce-ack and produce-to-handler latency
// through the embedded cluster (logged; asserted loosely).
func TestEndToEndLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	m := newMux(t)
	topic := m.MessagesTopic()
	const n = 500
	var sent [n]time.Time
	e2e := make([]time.Duration, 0, n)
	var mu sync.Mutex
	done := make(chan struct{})
	if err := m.Follow(topic, func(_ int32, _ int64, msg *Message) {
		var i int
		fmt.Sscanf(msg.Topic, "lat/%d", &i)
		mu.Lock()
		e2e = append(e2e, time.Since(sent[i]))
		if len(e2e) == n {
			close(done)
		}
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	acks := make([]time.Duration, n)
	for i := 0; i < n; i++ {
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		start := time.Now()
		produceSync(t, m, (&Message{Topic: fmt.Sprintf("lat/%d", i), Payload: []byte("p"), QoS: 1}).Record(topic))
		acks[i] = time.Since(start)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("not all records delivered")
	}
	pct := func(d []time.Duration, p int) time.Duration {
		s := append([]time.Duration(nil), d...)
		slices.Sort(s)
		return s[len(s)*p/100]
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("sequential QoS 1 produce: ack p50 %v p99 %v; produce-to-handler p50 %v p99 %v",
		pct(acks, 50), pct(acks, 99), pct(e2e, 50), pct(e2e, 99))
	if p := pct(e2e, 50); p > 100*time.Millisecond {
		t.Fatalf("produce-to-handler p50 %v: the reader is waiting out FetchMaxWait", p)
	}
}

// With a QoS 0 acks level, QoS 0 records go to Kafka at that level on their own client, the others stay
// acks=all; both are stored.
func TestQoS0Acks(t *testing.T) {
	m := newMux(t, QoS0Acks(1))
	var mu sync.Mutex
	acks := map[int16]int{}
	c := m.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		acks[req.(*kmsg.ProduceRequest).Acks]++
		mu.Unlock()
		return nil, nil, false
	})
	errc := make(chan error, 2)
	m.ProduceQoS0(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("q0"), Value: []byte("fast")},
		func(_ *kgo.Record, err error) { errc <- err })
	m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("q1"), Value: []byte("safe")},
		func(_ *kgo.Record, err error) { errc <- err })
	for i := 0; i < 2; i++ {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if acks[1] == 0 || acks[-1] == 0 {
		t.Fatalf("produce requests by acks level: %v; want some with acks=1 (QoS 0) and some with acks=-1", acks)
	}
}
