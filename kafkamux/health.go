package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Per-topic counters are indexed by the topic's role.
const (
	roleMessages = iota
	roleRetained
	roleSessions
	roleOther // a topic produced to through Client by someone else; counted, not reported
	roles
)

// kstats counts the Mux's records per topic and keeps what Healthy needs. Its hook runs on a franz-go goroutine
// for every produced record; it costs a few atomic operations (and a clock read only on a failure, or on the
// first success after one) and never blocks. (franz-go's HookProduceBatchWritten would cost less per record
// but starts a goroutine per produce response and runs after the records' promises, so a caller could see
// its record acknowledged before the Mux does.) Scrapes read it with atomic loads only.
type kstats struct {
	topics [roleOther]string // messages, retained, sessions

	produced [roles]atomic.Uint64
	errors   [roles]atomic.Uint64
	read     [roles]atomic.Uint64
	latency  [roles]Histogram // TryPublish/PutSession → acks=all ack or failure; see ProduceLatency

	failing   atomic.Bool  // a record failed for a reason on Kafka's side and none was acknowledged since
	failAt    atomic.Int64 // unix ns of that failure
	lastErrAt atomic.Int64 // unix ns: when lastErr was stored (at most once a second)
	lastErr   atomic.Pointer[string]
}

var _ kgo.HookProduceRecordUnbuffered = (*kstats)(nil)

func (s *kstats) role(topic string) int {
	for i, t := range s.topics {
		if t == topic {
			return i
		}
	}
	return roleOther
}

// OnProduceRecordUnbuffered runs on a franz-go goroutine for every record, just before its promise.
func (s *kstats) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if err == nil {
		s.produced[s.role(r.Topic)].Add(1)
		if s.failing.Load() {
			s.failing.Store(false)
		}
		return
	}
	s.errors[s.role(r.Topic)].Add(1)
	if !kafkaSide(err) {
		return
	}
	now := time.Now().UnixNano()
	s.failAt.Store(now)
	s.failing.Store(true)
	if at := s.lastErrAt.Load(); now-at > int64(time.Second) && s.lastErrAt.CompareAndSwap(at, now) {
		msg := err.Error() // at most one string a second, however many records fail
		s.lastErr.Store(&msg)
	}
}

// kafkaSide reports whether a produce error says something about Kafka (unreachable, no leader, not enough
// replicas, timed out, buffer full because Kafka is slow) rather than about the one record (too large,
// invalid) or about Ferry stopping.
func kafkaSide(err error) bool {
	switch {
	case errors.Is(err, kgo.ErrClientClosed), errors.Is(err, context.Canceled),
		errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge),
		errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage),
		errors.Is(err, kerr.InvalidTimestamp), errors.Is(err, kerr.InvalidTopicException):
		return false
	}
	return true
}

// HealthTimeout is how long Kafka may leave the Mux's requests unanswered before [Mux.Healthy] reports it
// unhealthy. Default 10s; at least 100ms. The shared reader always has a fetch outstanding that brokers answer
// within FetchMaxWait (500ms) even when there is nothing to read, so silence this long means no broker is
// reachable, not that the fleet is idle.
func HealthTimeout(d time.Duration) Opt { return opt(func(c *cfg) { c.healthTimeout = d }) }

// Healthy reports whether Kafka serves this instance, and if not, why. It is false while
//
//   - the embedded Kafka's data dir is full ([Mux.StorageFull]) and its filesystem has not had a few MiB free
//     since; or
//   - the Mux waits for Kafka (a topic is followed, so a fetch is always outstanding, or produced records are
//     buffered) and no discovered broker has answered any request for [HealthTimeout]; or
//   - the last record that failed for a reason on Kafka's side (not a record too large or invalid, not the
//     client closing) failed after the last record Kafka acknowledged, and less than the record delivery
//     timeout ago. franz-go retries a record until that timeout, so such a failure means Kafka refused
//     writes for that long; readiness comes back with the next acknowledged record, or one delivery timeout
//     after the failure, when new records can tell again (a not-ready instance that gets no new clients
//     must not stay not ready only because nothing was produced since).
//
// Both flip back within about a FetchMaxWait (plus franz-go's reconnect backoff, at most a second) once a
// broker answers again. Cheap: atomic loads and the producer's buffer count. Safe for concurrent use.
func (m *Mux) Healthy() (bool, string) {
	if full, why := m.storage.check(); full {
		return false, why
	}
	now := time.Now()
	if m.waitsForKafka() {
		if age := m.LastResponseAge(); age > m.cfg.healthTimeout {
			if m.conns.lastGoodRead.Load() == 0 {
				return false, "no Kafka broker has answered yet"
			}
			return false, fmt.Sprintf("no Kafka broker answered for %v", age.Round(100*time.Millisecond))
		}
	}
	st := &m.stats
	if st.failing.Load() && now.Sub(time.Unix(0, st.failAt.Load())) < m.cfg.deliveryTimeout {
		why := "records fail to reach Kafka"
		if e := st.lastErr.Load(); e != nil {
			why += ": " + *e
		}
		return false, why
	}
	return true, ""
}

// LastResponseAge returns how long ago a discovered broker last answered a request of the Mux's client
// (successfully at the transport level: a response with an error code counts as an answer).
func (m *Mux) LastResponseAge() time.Duration {
	last := m.conns.lastGoodRead.Load()
	if last == 0 {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(time.Unix(0, last))
}

// waitsForKafka reports whether the client has a request outstanding that a live broker answers soon.
func (m *Mux) waitsForKafka() bool {
	return len(*m.followers.Load()) > 0 || m.cl.BufferedProduceRecords() > 0 || (m.txn != nil && m.txn.buffered() > 0)
}

// TopicStats are the counters of one of the Mux's three topics since it started.
type TopicStats struct {
	Topic          string
	Produced       uint64            // records Kafka acknowledged
	ProduceErrors  uint64            // records that failed, for any reason
	Read           uint64            // records the shared reader fetched (transaction markers not counted)
	ProduceLatency HistogramSnapshot // see ProduceLatency
}

// TopicStats returns the counters of the messages, retained and sessions topics, in that order.
func (m *Mux) TopicStats() []TopicStats {
	st := &m.stats
	out := make([]TopicStats, len(st.topics))
	for i, t := range st.topics {
		out[i] = TopicStats{Topic: t, Produced: st.produced[i].Load(), ProduceErrors: st.errors[i].Load(),
			Read: st.read[i].Load(), ProduceLatency: st.latency[i].Snapshot()}
	}
	return out
}

// ProduceLatency returns the histogram of produce latency of one of the Mux's topics (nil for another topic):
// from the hand-off to the producer until Kafka acknowledged (acks=all) or failed the record. PutSession
// observes it for the sessions topic; offload observes it for messages and retained records, because the
// closure it passes to Produce already exists there and can carry the start time for free — timing inside
// Produce would cost a closure allocation per record (franz-go's own record timestamp is truncated to the
// millisecond, too coarse for a p99 budget of 5 ms).
func (m *Mux) ProduceLatency(topic string) *Histogram {
	r := m.stats.role(topic)
	if r == roleOther {
		return nil
	}
	return &m.stats.latency[r]
}
