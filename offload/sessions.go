package offload

import (
	"context"

	"github.com/ferrymq/ferry/kafkamux"
)

// PutSession writes one record of the sessions topic (value nil = tombstone), partitioned by the client id
// part of key. It never blocks; done runs on a franz-go goroutine when Kafka acked or failed it. Session
// records are few and small, so they do not count against any lane's budget.
func (o *Offload) PutSession(key string, value []byte, done func(error)) {
	o.mux.PutSession(key, value, done)
}

// PutSessionTombstone writes a tombstone of the sessions topic carrying the epoch of the connection it ends;
// see kafkamux.Mux.PutSessionTombstone. It never blocks.
func (o *Offload) PutSessionTombstone(key string, epoch int64, done func(error)) {
	o.mux.PutSessionTombstone(key, epoch, done)
}

// ReadSessionsUpTo waits until every record the sessions topic held when it was called has been handed to
// its raw follower, or ctx ends; see kafkamux.Mux.ReadUpTo. It blocks: never call it on an event loop.
func (o *Offload) ReadSessionsUpTo(ctx context.Context) error {
	return o.mux.ReadUpTo(ctx, o.mux.SessionsTopic())
}

// ReadRange calls fn for every message of the messages topic's partition with from ≤ offset < to, from the
// recent-records cache or Kafka. It blocks: resumes call it on their own goroutine, never on an event loop.
func (o *Offload) ReadRange(ctx context.Context, partition int32, from, to int64, fn func(off int64, m *Message) error) error {
	return o.mux.ReadRange(ctx, o.topic, partition, from, to, fn)
}

// ReadRangeOf is ReadRange for any followed topic of MQTT messages (a routed topic): only the messages topic
// has a recent-records cache, so the others are read with Kafka fetches.
func (o *Offload) ReadRangeOf(ctx context.Context, topic string, partition int32, from, to int64, fn func(off int64, m *Message) error) error {
	return o.mux.ReadRange(ctx, topic, partition, from, to, fn)
}

// StorageFull reports whether the embedded Kafka's data dir is full (kafkamux.Mux.StorageFull): a record
// that failed meanwhile failed for want of space. An atomic load: callable from an event loop.
func (o *Offload) StorageFull() bool { return o.mux.StorageFull() }

// CreatesTopics, CreateTopic and ListTopicNames pass through to kafkamux: routed topics (server/route).
func (o *Offload) CreatesTopics() bool { return o.mux.CreatesTopics() }

// CreateTopic creates a routed topic with the messages topic's settings; see kafkamux.Mux.CreateTopic. It
// blocks: never call it on an event loop.
func (o *Offload) CreateTopic(ctx context.Context, name string) error {
	return o.mux.CreateTopic(ctx, name)
}

// ListTopicNames lists the cluster's topics; see kafkamux.Mux.ListTopicNames. It blocks.
func (o *Offload) ListTopicNames(ctx context.Context) ([]string, error) {
	return o.mux.ListTopicNames(ctx)
}

// Record is a Kafka record, for topics followed raw (FollowSpec.Raw).
type Record = kafkamux.Record

// Transactional reports whether records are written in Kafka transactions (see TryPublishWith).
func (o *Offload) Transactional() bool { return o.mux.Transactional() }

// SessionsTopic is the name of the sessions topic.
func (o *Offload) SessionsTopic() string { return o.mux.SessionsTopic() }
