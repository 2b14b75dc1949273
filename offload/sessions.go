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

// ReadRange calls fn for every message of the messages topic's partition with from ≤ offset < to, from the
// recent-records cache or Kafka. It blocks: resumes call it on their own goroutine, never on an event loop.
func (o *Offload) ReadRange(ctx context.Context, partition int32, from, to int64, fn func(off int64, m *Message) error) error {
	return o.mux.ReadRange(ctx, o.topic, partition, from, to, fn)
}

// Record is a Kafka record, for topics followed raw (FollowSpec.Raw).
type Record = kafkamux.Record

// Transactional reports whether records are written in Kafka transactions (see TryPublishWith).
func (o *Offload) Transactional() bool { return o.mux.Transactional() }

// SessionsTopic is the name of the sessions topic.
func (o *Offload) SessionsTopic() string { return o.mux.SessionsTopic() }
