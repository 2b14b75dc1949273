package kafkamux

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// outage makes the embedded cluster close the connection of every request while it is on: to the client, the
// broker is unreachable. Turning it off drops the control function, and the cluster serves normally again.
func outage(c *kfake.Cluster) (off func()) {
	var on atomic.Bool
	on.Store(true)
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		if !on.Load() {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		return nil, errors.New("injected outage"), true
	})
	return func() { on.Store(false) }
}

// An idle Mux that follows a topic stays healthy: brokers answer its outstanding fetch within FetchMaxWait even
// when there is nothing to read, so silence is not mistaken for an outage. When every request fails, Healthy
// turns false after HealthTimeout, with the reason, and true again once the broker answers.
func TestHealthyFlipsWithOutage(t *testing.T) {
	m := newMux(t, HealthTimeout(time.Second))
	if err := m.Follow(m.MessagesTopic(), func(int32, int64, *Message) {}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // idle: longer than HealthTimeout
	if ok, why := m.Healthy(); !ok {
		t.Fatalf("idle but reachable Kafka reported unhealthy: %s (last answer %v ago)", why, m.LastResponseAge())
	}
	if age := m.LastResponseAge(); age > time.Second {
		t.Fatalf("idle reader: last answer %v ago, want within FetchMaxWait", age)
	}

	off := outage(m.Cluster())
	start := time.Now()
	waitFor(t, 5*time.Second, "unhealthy during the outage", func() bool { ok, _ := m.Healthy(); return !ok })
	_, why := m.Healthy()
	t.Logf("unhealthy after %v: %s", time.Since(start).Round(time.Millisecond), why)
	if !strings.Contains(why, "no Kafka broker answered") {
		t.Fatalf("reason %q does not say Kafka is not answering", why)
	}
	off()
	start = time.Now()
	waitFor(t, 5*time.Second, "healthy after the outage", func() bool { ok, _ := m.Healthy(); return ok })
	t.Logf("healthy again after %v", time.Since(start).Round(time.Millisecond))
}

// A Mux that follows nothing and buffers nothing has no request that a live broker would answer: it does not
// report an outage it cannot see.
func TestHealthyWithoutDemand(t *testing.T) {
	m := newMux(t, HealthTimeout(100*time.Millisecond))
	off := outage(m.Cluster())
	defer off()
	time.Sleep(300 * time.Millisecond)
	if ok, why := m.Healthy(); !ok {
		t.Fatalf("no outstanding request, yet unhealthy: %s", why)
	}
}

// Records that fail for a reason on Kafka's side make the Mux unhealthy until a batch is acknowledged; records
// failing on their own (too large) do not. Per-topic counters and the produce-latency histogram count them.
func TestHealthyProduceFailures(t *testing.T) {
	m := newMux(t, RecordDeliveryTimeout(time.Second))
	produce := func(value []byte) error {
		errc := make(chan error, 1)
		start := time.Now()
		m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("t"), Value: value},
			func(_ *kgo.Record, err error) {
				m.ProduceLatency(m.MessagesTopic()).Observe(time.Since(start))
				errc <- err
			})
		return <-errc
	}
	if err := produce([]byte("ok")); err != nil {
		t.Fatal(err)
	}

	// One record refused on its own: the instance stays healthy.
	m.stats.OnProduceRecordUnbuffered(&kgo.Record{Topic: m.MessagesTopic()}, kerr.MessageTooLarge)
	if ok, why := m.Healthy(); !ok {
		t.Fatalf("a record too large made Kafka unhealthy: %s", why)
	}

	// Kafka refuses writes: every produce answered with NOT_ENOUGH_REPLICAS until the delivery timeout.
	var refuse atomic.Bool
	refuse.Store(true)
	c := m.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !refuse.Load() {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = pr.Version
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	if err := produce([]byte("refused")); err == nil {
		t.Fatal("a produce went through while Kafka refused writes")
	}
	ok, why := m.Healthy()
	if ok || !strings.Contains(why, "records fail to reach Kafka") {
		t.Fatalf("Healthy() = %v %q after a refused write", ok, why)
	}
	t.Logf("unhealthy: %s", why)
	refuse.Store(false)
	if err := produce([]byte("ok again")); err != nil {
		t.Fatal(err)
	}
	if ok, why := m.Healthy(); !ok {
		t.Fatalf("still unhealthy after an acknowledged record: %s", why)
	}

	ts := m.TopicStats()
	if ts[0].Topic != m.MessagesTopic() || ts[0].Produced != 2 || ts[0].ProduceErrors != 2 {
		t.Fatalf("messages topic stats %+v: want 2 produced, 2 errors (1 injected, 1 refused)", ts[0])
	}
	if ts[0].ProduceLatency.Count != 3 {
		t.Fatalf("produce latency has %d observations, want 3", ts[0].ProduceLatency.Count)
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{-time.Second, 0, 999 * time.Nanosecond, time.Microsecond, 3 * time.Microsecond,
		time.Millisecond, time.Hour} {
		h.Observe(d)
	}
	s := h.Snapshot()
	want := map[int]uint64{0: 3, 1: 1, 2: 1, 10: 1, HistogramBuckets - 1: 1} // 1ms = 1000µs < 2^10µs
	for i, n := range s.Counts {
		if n != want[i] {
			t.Errorf("bucket %d (< %v): %d, want %d", i, HistogramBound(i), n, want[i])
		}
	}
	if s.Count != 7 || s.Sum != time.Hour+time.Millisecond+4*time.Microsecond+999 {
		t.Errorf("count %d sum %v", s.Count, s.Sum)
	}
	if HistogramBound(0) != time.Microsecond || HistogramBound(25) != (1<<25)*time.Microsecond || HistogramBound(26) != -1 {
		t.Errorf("bounds %v %v %v", HistogramBound(0), HistogramBound(25), HistogramBound(26))
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	var h Histogram
	d := 3 * time.Millisecond
	b.ReportAllocs()
	for range b.N {
		h.Observe(d)
	}
}
