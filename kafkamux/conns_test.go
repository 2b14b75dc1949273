package kafkamux

// The Mux's Kafka connections: a constant number under load and over time, seed rotation within the budget.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestConnectionsConstant: 1,000 concurrent producers share the instance's
// fixed set of connections.
func TestConnectionsConstant(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()
	if err := m.Follow(topic, func(int32, int64, *Message) {}); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 1000, 20
	var wg sync.WaitGroup
	var acked, failed atomic.Int64
	maxConns := sampleConns(m, time.Millisecond)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				msg := &Message{Topic: fmt.Sprintf("dev/%d", g), Payload: []byte("payload"), QoS: 1}
				m.Produce(context.Background(), msg.Record(topic), func(_ *kgo.Record, err error) {
					if err != nil {
						failed.Add(1)
					} else {
						acked.Add(1)
					}
				})
			}
		}()
	}
	wg.Wait()
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	maxConns.stop()
	if failed.Load() != 0 || acked.Load() != goroutines*each {
		t.Fatalf("acked %d failed %d, want %d acked", acked.Load(), failed.Load(), goroutines*each)
	}
	t.Logf("connections: max %d during the run, now %d %v", maxConns.max.Load(), m.Connections(), m.ConnectionsByBroker())
	if maxConns.max.Load() > 3 {
		t.Fatalf("up to %d connections to a one-broker cluster, budget is 3", maxConns.max.Load())
	}
}

// TestSeedRotationStaysInBudget: franz-go sends every other "any broker"
// request (metadata, with one broker) to the seed address; the tracker
// parks those connections so the budget holds while requests still work.
func TestSeedRotationStaysInBudget(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()
	var got atomic.Int64
	if err := m.Follow(topic, func(int32, int64, *Message) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	maxConns := sampleConns(m, 100*time.Microsecond)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		m.Client().ForceMetadataRefresh()
		if _, err := m.Admin().ListEndOffsets(ctx, topic); err != nil {
			t.Fatalf("admin request %d: %v", i, err)
		}
		produceSync(t, m, (&Message{Topic: "x", Payload: []byte("y")}).Record(topic))
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "records", func() bool { return got.Load() == 10 })
	maxConns.stop()
	t.Logf("max connections %d, seed connections parked %d", maxConns.max.Load(), m.conns.parked.Load())
	if maxConns.max.Load() > 3 {
		t.Fatalf("%d connections, budget 3", maxConns.max.Load())
	}
}

// TestConnectionsOverTime: with idle reaping and metadata refreshes sped up
// (1s), connections come and go but never exceed the budget.
func TestConnectionsOverTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	m := newMux(t, ExtraKgoOpts(kgo.ConnIdleTimeout(time.Second), kgo.MetadataMaxAge(time.Second)))
	topic := m.MessagesTopic()
	var got atomic.Int64
	if err := m.Follow(topic, func(int32, int64, *Message) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var maxConns int
	deadline := time.Now().Add(4 * time.Second)
	sent := int64(0)
	for i := 0; time.Now().Before(deadline); i++ {
		if i%200 == 0 { // a publish every ~1s: the produce connection idles out in between
			produceSync(t, m, (&Message{Topic: "x", Payload: []byte("y")}).Record(topic))
			sent++
		}
		maxConns = max(maxConns, m.Connections())
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 5*time.Second, "records", func() bool { return got.Load() == sent })
	t.Logf("max connections %d, parked seed connections %d", maxConns, m.conns.parked.Load())
	if maxConns > 3 {
		t.Fatalf("%d connections, budget 3", maxConns)
	}
}

// connSampler keeps the most connections a Mux held, sampled every interval until stop.
type connSampler struct {
	max     atomic.Int64
	stopc   chan struct{}
	sampled chan struct{}
}

func sampleConns(m *Mux, every time.Duration) *connSampler {
	s := &connSampler{stopc: make(chan struct{}), sampled: make(chan struct{})}
	go func() {
		defer close(s.sampled)
		for {
			if c := int64(m.Connections()); c > s.max.Load() {
				s.max.Store(c)
			}
			select {
			case <-s.stopc:
				return
			case <-time.After(every):
			}
		}
	}()
	return s
}

// stop ends the sampling and waits for its last sample.
func (s *connSampler) stop() {
	close(s.stopc)
	<-s.sampled
}
