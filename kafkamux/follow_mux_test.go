package kafkamux

// Following topics through a Mux: records of any producer, the start position, partitions added later.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFollowIndependentProducer: records written by a plain franz-go
// producer with key = MQTT topic reach the handler, all of them, in per-key
// order; records with invalid keys are skipped and counted.
func TestFollowIndependentProducer(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()

	var mu sync.Mutex
	got := map[string][]int{}
	var n atomic.Int64
	lastOff := map[int32]int64{}
	if err := m.Follow(topic, func(p int32, off int64, msg *Message) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := lastOff[p]; ok && off <= prev {
			t.Errorf("partition %d: offset %d after %d", p, off, prev)
		}
		lastOff[p] = off
		var i int
		fmt.Sscanf(string(msg.Payload), "%d", &i)
		got[msg.Topic] = append(got[msg.Topic], i)
		if msg.QoS != KafkaBornQoS {
			t.Errorf("Kafka-born QoS = %d", msg.QoS)
		}
		n.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Follow(topic, func(int32, int64, *Message) {}); err == nil {
		t.Fatal("second Follow of the same topic succeeded")
	}
	if err := m.Follow("no-such-topic", func(int32, int64, *Message) {}); err == nil {
		t.Fatal("Follow of a missing topic succeeded")
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const keys, per = 20, 50
	ctx := context.Background()
	for i := 0; i < per; i++ {
		for k := 0; k < keys; k++ {
			prod.Produce(ctx, &kgo.Record{
				Key: fmt.Appendf(nil, "dev/%d/temp", k), Value: fmt.Appendf(nil, "%d", i),
				Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("x")}},
			}, nil)
		}
	}
	for _, bad := range [][]byte{nil, {}, []byte("a/+/b"), []byte("a/#"), []byte("a\x00b"), {0xff, 0xfe}} {
		prod.Produce(ctx, &kgo.Record{Key: bad, Value: []byte("bad")}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "all records", func() bool { return n.Load() == keys*per && m.Skipped() == 6 })
	mu.Lock()
	defer mu.Unlock()
	for k := 0; k < keys; k++ {
		seq := got[fmt.Sprintf("dev/%d/temp", k)]
		if len(seq) != per {
			t.Fatalf("key %d: %d records, want %d", k, len(seq), per)
		}
		for i, v := range seq {
			if v != i {
				t.Fatalf("key %d: record %d is %d: out of order", k, i, v)
			}
		}
	}
}

// TestFollowStartsAtEnd: records produced before Follow are not delivered,
// records produced after it returns all are.
func TestFollowStartsAtEnd(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()
	produceSync(t, m, (&Message{Topic: "old", Payload: []byte("x")}).Record(topic))
	var mu sync.Mutex
	var topics []string
	if err := m.Follow(topic, func(_ int32, _ int64, msg *Message) {
		mu.Lock()
		topics = append(topics, msg.Topic)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	produceSync(t, m, (&Message{Topic: "new", Payload: []byte("y")}).Record(topic))
	waitFor(t, 10*time.Second, "new record", func() bool { mu.Lock(); defer mu.Unlock(); return len(topics) > 0 })
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(topics) != 1 || topics[0] != "new" {
		t.Fatalf("delivered %v, want [new]", topics)
	}
}

// TestFollowNewPartitions: partitions added to a followed topic are read
// from their start.
func TestFollowNewPartitions(t *testing.T) {
	m := newMux(t, PartitionRefresh(100*time.Millisecond), Partitions(1))
	topic := m.MessagesTopic()
	var parts sync.Map
	if err := m.Follow(topic, func(p int32, _ int64, _ *Message) { parts.Store(p, true) }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := m.Admin().CreatePartitions(ctx, 2, topic); err != nil {
		t.Fatal(err)
	}
	// Produce to the new partitions right away, before the refresh can
	// have seen them: reading from their start must still deliver.
	prod, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for p := int32(0); p < 3; p++ {
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte("t"), Value: []byte("v")}
		if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "records from all 3 partitions", func() bool {
		n := 0
		parts.Range(func(any, any) bool { n++; return true })
		return n == 3
	})
}
