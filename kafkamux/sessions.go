package kafkamux

import (
	"context"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/internal/sessionkey"
)

// The sessions topic is keyed "<kind>:<client id>". All keys of a client go to one partition, chosen from the
// client id alone with Kafka's default key hash (murmur2), so the records of a client stay ordered and a
// consumer group over the topic gives each client to exactly one member.

// partitioner is the instance's record partitioner: Kafka's key hash everywhere, on the client id part of
// the key for the sessions topic.
type partitioner struct{ sessions string }

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	base := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	if topic != p.sessions {
		return partitionKeyPartitioner{base}
	}
	return clientIDPartitioner{base}
}

// partitionKeyPartitioner hashes the value of a [HeaderPartitionKey] header instead of the key when the record
// carries one (route rules with a partition key, see README.md): Ferry writes it as the last header, so the
// check costs one comparison for every other record.
type partitionKeyPartitioner struct{ kgo.TopicPartitioner }

func (p partitionKeyPartitioner) Partition(r *kgo.Record, n int) int {
	if h := len(r.Headers); h > 0 && r.Headers[h-1].Key == HeaderPartitionKey {
		v := r.Headers[h-1].Value
		if v == nil {
			v = []byte{} // an empty key is still a key (hashed), not "no key" (sticky)
		}
		return p.TopicPartitioner.Partition(&kgo.Record{Key: v}, n)
	}
	return p.TopicPartitioner.Partition(r, n)
}

type clientIDPartitioner struct{ kgo.TopicPartitioner }

func (c clientIDPartitioner) Partition(r *kgo.Record, n int) int {
	return c.TopicPartitioner.Partition(&kgo.Record{Key: sessionkey.ClientID(r.Key)}, n)
}

// PutSession writes one record of the sessions topic: value nil writes a tombstone. It never blocks; done runs
// on a franz-go goroutine once Kafka acked (acks=all) or failed the record.
func (m *Mux) PutSession(key string, value []byte, done func(error)) {
	r := &kgo.Record{Topic: m.cfg.topicSessions, Key: []byte(key), Value: value}
	start := time.Now()
	m.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
		m.stats.latency[roleSessions].Observe(time.Since(start))
		done(err)
	})
}

// PutSessionTombstone writes a tombstone of the sessions topic that carries epoch in the
// [sessionkey.EpochHeader] header, so a reader can tell the end of an older connection that reached Kafka
// late from the end of the newest one. It never blocks; done runs as for PutSession.
func (m *Mux) PutSessionTombstone(key string, epoch int64, done func(error)) {
	r := &kgo.Record{Topic: m.cfg.topicSessions, Key: []byte(key),
		Headers: []kgo.RecordHeader{{Key: sessionkey.EpochHeader, Value: strconv.AppendInt(nil, epoch, 10)}}}
	start := time.Now()
	m.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
		m.stats.latency[roleSessions].Observe(time.Since(start))
		done(err)
	})
}
