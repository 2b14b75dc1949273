package kafkamux

// The messages topic's partition count (MessagesPartitions): what a produce request carries, the topics it
// applies to, and the size bound of a data dir made with another count.

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partitionCount returns how many partitions topic has.
func partitionCount(t *testing.T, m *Mux, topic string) int {
	t.Helper()
	td, err := m.Admin().ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return len(td[topic].Partitions)
}

// heldProduce holds the broker on the first produce request to the messages topic while n records with n
// different keys are handed to the producer, then lets it go, and returns the batches of the messages topic
// in each produce request the broker handled. The records handed over while it held one wait in the
// producer: franz-go sends at most five requests before the first is answered, and past them it puts what
// waits for a partition into one batch of the next request.
func heldProduce(t *testing.T, m *Mux, n int) [][]int {
	t.Helper()
	var (
		mu      sync.Mutex
		batches [][]int // per request: records of each messages-topic batch
		held    = make(chan struct{})
		release = make(chan struct{})
		once    sync.Once
	)
	topicID := func(req *kmsg.ProduceRequest, rt kmsg.ProduceRequestTopic) bool {
		return rt.Topic == m.MessagesTopic() || rt.Topic == "" && req.Version >= 13 // v13 names topics by id
	}
	m.Cluster().ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		m.Cluster().KeepControl()
		req := r.(*kmsg.ProduceRequest)
		var per []int
		for _, rt := range req.Topics {
			if !topicID(req, rt) {
				continue
			}
			for _, p := range rt.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(p.Records); err != nil {
					t.Errorf("cannot decode a produced batch: %v", err)
				}
				per = append(per, int(b.NumRecords))
			}
		}
		if len(per) == 0 {
			return nil, nil, false
		}
		mu.Lock()
		batches = append(batches, per)
		mu.Unlock()
		once.Do(func() {
			close(held)
			<-release // the broker's goroutine: every request waits, the producer buffers
		})
		return nil, nil, false
	})
	var wg sync.WaitGroup
	wg.Add(n)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			t.Errorf("produce: %v", err)
		}
		wg.Done()
	}
	m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("held/0")}, done)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first produce request did not reach the broker")
	}
	for i := 1; i < n; i++ {
		m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("held/" + strconv.Itoa(i))}, done)
	}
	time.Sleep(20 * time.Millisecond) // the producer writes what it may while the broker holds the first
	close(release)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return batches
}

// With one partition, what waits for the broker leaves as one batch per request: 200 records handed over
// while the broker held a request reach the messages topic in at most ten batches (the five requests franz-go
// sends before an answer, then one per request). With six partitions, the request after the hold carries a
// batch for every partition: six appends where one partition takes one.
func TestOnePartitionOneBatchPerRequest(t *testing.T) {
	const n = 200
	t.Run("one partition", func(t *testing.T) {
		m := newMux(t, Partitions(6), MessagesPartitions(1))
		reqs := heldProduce(t, m, n)
		total, records := 0, 0
		for _, per := range reqs {
			if len(per) != 1 {
				t.Errorf("a produce request carried %d batches of the messages topic, want 1", len(per))
			}
			total += len(per)
			for _, r := range per {
				records += r
			}
		}
		if records != n || total > 10 {
			t.Fatalf("%d records in %d batches (%v), want %d records in at most 10", records, total, reqs, n)
		}
	})
	t.Run("six partitions", func(t *testing.T) {
		m := newMux(t, Partitions(6))
		reqs := heldProduce(t, m, n)
		most := 0
		for _, per := range reqs {
			most = max(most, len(per))
		}
		if most != 6 {
			t.Fatalf("the fullest produce request carried %d batches (%v), want one per partition, 6", most, reqs)
		}
	})
}

// MessagesPartitions sets the messages topic's partitions and those of routed topics; the retained and
// sessions topics keep Partitions, and the size bound is split by the messages topic's count.
func TestMessagesPartitions(t *testing.T) {
	m := newMux(t, Partitions(4), MessagesPartitions(1))
	for topic, want := range map[string]int{m.MessagesTopic(): 1, m.RetainedTopic(): 4, m.SessionsTopic(): 4} {
		if got := partitionCount(t, m, topic); got != want {
			t.Errorf("%s has %d partitions, want %d", topic, got, want)
		}
	}
	if got, want := describedConfig(t, m, m.MessagesTopic(), "retention.bytes"), strconv.Itoa(DefaultEmbeddedRetentionBytes); got != want {
		t.Errorf("messages topic retention.bytes = %s, want %s (all of it in one partition)", got, want)
	}
	if err := m.CreateTopic(context.Background(), "routed-one"); err != nil {
		t.Fatal(err)
	}
	if got := partitionCount(t, m, "routed-one"); got != 1 {
		t.Errorf("routed topic has %d partitions, want 1 (as the messages topic)", got)
	}
	if got := newMux(t, Partitions(4)).cfg.messagesPartitions(); got != 4 {
		t.Errorf("without MessagesPartitions the messages topic takes %d partitions, want Partitions (4)", got)
	}
}

// A data dir whose messages topic was made with six partitions keeps them when Ferry restarts with another
// count (--partitions 1, or --messages-partitions 1), and the size bound is split between the six it has: per
// partition a sixth, not the whole bound, which would let the topic hold six times what the flags say (the
// split followed --partitions before).
func TestRetentionSplitByThePartitionsATopicHas(t *testing.T) {
	for name, again := range map[string][]Opt{
		"partitions":          {Partitions(1)},
		"messages partitions": {Partitions(6), MessagesPartitions(1)},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			base := []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(dir), Logger(testLogger())}
			m, err := New(context.Background(), append(base, Partitions(6))...)
			if err != nil {
				t.Fatal(err)
			}
			m.Close()
			m, err = New(context.Background(), append(base, again...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if got := partitionCount(t, m, m.MessagesTopic()); got != 6 {
				t.Fatalf("messages topic has %d partitions after the restart, want the 6 it was made with", got)
			}
			want := strconv.Itoa(DefaultEmbeddedRetentionBytes / 6)
			if got := describedConfig(t, m, m.MessagesTopic(), "retention.bytes"); got != want {
				t.Errorf("messages topic retention.bytes = %s after the restart, want %s (a sixth)", got, want)
			}
		})
	}
}
