package kafkamux

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Records produced with each codec are readable by a plain Kafka consumer, and the produce requests carried
// batches compressed with that codec.
func TestProduceCompression(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codec kgo.CompressionCodec
		id    uint8 // record batch attributes & 7
	}{
		{"none", kgo.NoCompression(), 0},
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, ProduceCompression(tc.codec), ProduceLinger(5*time.Millisecond), ProduceBatchMaxBytes(64<<10))
			var mu sync.Mutex
			sent := map[uint8]int{} // codec → batches seen by the broker
			m.Cluster().ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
				req := kr.(*kmsg.ProduceRequest)
				for _, rt := range req.Topics { // only the messages topic is produced to (by name or, v13+, id)
					for _, rp := range rt.Partitions {
						var b kmsg.RecordBatch
						if err := b.ReadFrom(rp.Records); err != nil {
							t.Errorf("cannot decode produced batch: %v", err)
							continue
						}
						mu.Lock()
						sent[uint8(b.Attributes&7)]++
						mu.Unlock()
					}
				}
				return nil, nil, false // observe only
			})
			payload := bytes.Repeat([]byte("temperature=21.5;"), 200) // compresses well
			const n = 20
			for i := 0; i < n; i++ {
				msg := &Message{Topic: "c/" + tc.name, Payload: payload, QoS: 1, ClientID: "dev"}
				produceSync(t, m, msg.Record(m.MessagesTopic()))
			}
			mu.Lock()
			if sent[tc.id] == 0 || len(sent) != 1 {
				t.Errorf("batches by codec id %v, want only codec %d", sent, tc.id)
			}
			mu.Unlock()

			cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.ConsumeTopics(m.MessagesTopic()),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got := 0
			for got < n && ctx.Err() == nil {
				cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
					got++
					if !bytes.Equal(r.Value, payload) || !strings.HasPrefix(string(r.Key), "c/") {
						t.Errorf("record %s@%d: key %q, %d value bytes", r.Topic, r.Offset, r.Key, len(r.Value))
					}
					if c := r.Attrs.CompressionType(); c != tc.id {
						t.Errorf("record %d: stored with codec %d, want %d", r.Offset, c, tc.id)
					}
				})
			}
			if got != n {
				t.Fatalf("read %d of %d records", got, n)
			}
		})
	}
}

// Extra topic configs reach the topics New creates; the role's own value wins.
func TestTopicConfig(t *testing.T) {
	m := newMux(t, TopicConfig("", "retention.ms", "86400000"), TopicConfig("", "max.message.bytes", "2000000"),
		TopicConfig("sessions", "max.message.bytes", "3000000"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := m.Admin().DescribeTopicConfigs(ctx, m.MessagesTopic(), m.RetainedTopic(), m.SessionsTopic())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		m.MessagesTopic(): {"retention.ms": "86400000", "max.message.bytes": "2000000", "cleanup.policy": "delete"},
		m.RetainedTopic(): {"retention.ms": "86400000", "max.message.bytes": "2000000", "cleanup.policy": "compact"},
		m.SessionsTopic(): {"retention.ms": "86400000", "max.message.bytes": "3000000", "cleanup.policy": "compact"},
	}
	for _, rc := range rcs {
		for k, v := range want[rc.Name] {
			found := false
			for _, c := range rc.Configs {
				if c.Key == k && c.Value != nil && *c.Value == v {
					found = true
				}
			}
			if !found {
				t.Errorf("topic %s: no %s=%s in %v", rc.Name, k, v, rc.Configs)
			}
		}
	}
}
