package offload

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// Lane is one event loop's bounded path to Kafka. TryPublish is called by the
// owning loop; completions arrive on franz-go's promise goroutine. The lane's
// mutex is held only for counter updates, never across a call out.
type Lane struct {
	o   *Offload
	idx int

	maxRecs, maxBytes    int
	resumeRec, resumeByt int

	mu      sync.Mutex
	recs    int
	bytes   int
	paused  bool // returned ErrFull since the last OnSpace call
	onSpace func()

	published, failed, full uint64 // counters, guarded by mu
}

// TryPublish produces msg to the messages topic without blocking. It runs on
// the lane's event loop. When msg.Retain is set it also produces msg to the
// retained topic (an empty payload as a tombstone, see
// [kafkamux.Message.RetainedRecord]); done then reports both, with the first
// error, and the message counts as two records against the budget.
//
// It returns ErrFull, and produces nothing, when the message would take the
// lane's in-flight records or bytes over budget; the lane then calls its
// OnSpace function once space is back. Otherwise it returns nil and done is
// called exactly once, on a Kafka callback goroutine, with nil when Kafka
// acknowledged the record (acks=all) or the error that failed it (after
// franz-go's retries, at most the mux's RecordDeliveryTimeout). The lane's
// budget is released before done is called. done must not block; nil is
// allowed.
//
// Buffer ownership: the records reference msg.Payload and
// msg.CorrelationData (no copy) until done is called (or, on ErrFull, until
// TryPublish returns); the caller keeps those bytes unchanged until then and
// may reuse them afterwards. The bytes of msg's string fields are copied,
// except user property names, which are Go strings and kept as they are (do
// not build them with unsafe over a reused buffer). msg itself and its
// UserProps slice may be reused as soon as TryPublish returns.
func (l *Lane) TryPublish(msg *Message, done func(err error)) error {
	return l.TryPublishWith(msg, "", nil, done)
}

// TryPublishWith is TryPublish with one more record for the sessions topic (sessKey not empty; sessValue nil
// writes a tombstone) that Kafka must store together with the message: with transactions (kafkamux option
// Transactions) the message, its retained copy and the session record commit or abort as one, which is how a
// QoS 2 message and its packet-id state are stored exactly once. The session record counts against the budget
// like the others; done reports them all, with the first error.
func (l *Lane) TryPublishWith(msg *Message, sessKey string, sessValue []byte, done func(err error)) error {
	return l.TryPublishRouted(msg, Route{}, sessKey, sessValue, done)
}

// Route says where a message goes when it is not the messages topic (route rules, server/route).
type Route struct {
	// Topic is the Kafka topic of the message; "" = the messages topic. Its retained copy still goes to the
	// retained topic.
	Topic string
	// KeyFrom and KeyTo, when KeyTo > KeyFrom or HasKey, select the partition key as a byte range of
	// msg.Topic: the record carries it in the kafkamux.HeaderPartitionKey header (its last), and the
	// instance's partitioner hashes it instead of the record key, so the messages of one device stay in one
	// partition whatever topic they go to.
	KeyFrom, KeyTo int
	HasKey         bool
}

// TryPublishRouted is TryPublishWith for a message that goes to rt.Topic, with an optional partition key.
// The zero Route is the messages topic, exactly as TryPublishWith.
func (l *Lane) TryPublishRouted(msg *Message, rt Route, sessKey string, sessValue []byte, done func(err error)) error {
	topic := l.o.topic
	if rt.Topic != "" {
		topic = rt.Topic
	}
	r := msg.Record(topic)
	if rt.HasKey {
		// The key range points into the record's own copy of the topic (r.Key = msg.Topic's bytes): no copy.
		r.Headers = append(r.Headers, kafkamux.RecordHeader{Key: kafkamux.HeaderPartitionKey, Value: r.Key[rt.KeyFrom:rt.KeyTo:rt.KeyTo]})
	}
	size := kafkamux.RecordSize(r)
	var rr, sr *kafkamux.Record
	recs := 1
	if msg.Retain {
		rr = msg.RetainedRecord(l.o.retained)
		size += kafkamux.RecordSize(rr)
		recs++
	}
	if sessKey != "" {
		sr = &kafkamux.Record{Topic: l.o.mux.SessionsTopic(), Key: []byte(sessKey), Value: sessValue}
		size += kafkamux.RecordSize(sr)
		recs++
	}

	l.mu.Lock()
	if l.recs > 0 && (l.recs+recs > l.maxRecs || l.bytes+size > l.maxBytes) {
		l.paused = true
		l.full++
		l.mu.Unlock()
		return ErrFull
	}
	l.recs += recs
	l.bytes += size
	l.mu.Unlock()

	start := time.Now() // produce latency, carried by the closure that exists anyway (kafkamux.Mux.ProduceLatency)
	if recs == 1 {
		produce := l.o.mux.Produce
		if msg.QoS == 0 {
			produce = l.o.mux.ProduceQoS0 // the QoS 0 acks level, when one is set (kafkamux.QoS0Acks)
		}
		produce(context.Background(), r, func(_ *kafkamux.Record, err error) {
			l.o.latMessages.Observe(time.Since(start))
			l.release(1, size, err != nil)
			l.finish(err, done)
		})
		return nil
	}
	p := &joinedPub{l: l, recs: recs, size: size, done: done, start: start}
	p.left.Store(int32(recs))
	all := [3]*kafkamux.Record{r}
	batch := all[:1]
	if rr != nil {
		batch = append(batch, rr)
	}
	if sr != nil {
		batch = append(batch, sr)
	}
	if msg.QoS == 0 && sr == nil {
		for _, b := range batch {
			l.o.mux.ProduceQoS0(context.Background(), b, p.complete)
		}
		return nil
	}
	l.o.mux.ProduceTogether(batch, p.complete)
	return nil
}

// joinedPub joins the produces of a message with its retained copy or session record.
type joinedPub struct {
	l     *Lane
	recs  int
	size  int
	done  func(error)
	start time.Time
	left  atomic.Int32
	mu    sync.Mutex
	err   error
}

func (p *joinedPub) complete(r *kafkamux.Record, err error) {
	switch r.Topic {
	case p.l.o.retained:
		p.l.o.latRetained.Observe(time.Since(p.start))
	case p.l.o.mux.SessionsTopic():
	default: // the messages topic or a routed one
		p.l.o.latMessages.Observe(time.Since(p.start))
	}
	if err != nil {
		p.mu.Lock()
		if p.err == nil {
			p.err = fmt.Errorf("record for %s: %w", r.Topic, err)
		}
		p.mu.Unlock()
	}
	if p.left.Add(-1) != 0 {
		return
	}
	p.mu.Lock()
	err = p.err
	p.mu.Unlock()
	p.l.release(p.recs, p.size, err != nil)
	p.l.finish(err, p.done)
}

func (l *Lane) finish(err error, done func(error)) {
	if err != nil {
		err = fmt.Errorf("cannot write MQTT message to Kafka: %w", err)
		l.o.logFailure(err)
	}
	if done != nil {
		done(err)
	}
}

// release returns size bytes and recs records to the budget and, if the lane
// is paused and now at or below its resume mark, calls OnSpace. Runs on a
// Kafka callback goroutine.
func (l *Lane) release(recs, size int, failed bool) {
	l.mu.Lock()
	if failed {
		l.failed++
	} else {
		l.published++
	}
	l.recs -= recs
	l.bytes -= size
	if l.recs < 0 || l.bytes < 0 {
		l.mu.Unlock()
		panic(fmt.Sprintf("BUG: offload lane %d released more than it took: %d records, %d bytes", l.idx, l.recs, l.bytes))
	}
	var fn func()
	if l.paused && l.recs <= l.resumeRec && l.bytes <= l.resumeByt {
		l.paused = false
		fn = l.onSpace
	}
	l.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// OnSpace sets the function called when a lane that returned ErrFull has
// space again (its in-flight records and bytes fell to the resume mark). It
// runs on a Kafka callback goroutine, once per ErrFull episode, and must not
// block. Set it before publishing; a later call replaces it.
func (l *Lane) OnSpace(fn func()) {
	l.mu.Lock()
	l.onSpace = fn
	l.mu.Unlock()
}

// InFlight returns the records and bytes the lane has produced and not yet
// seen completed.
func (l *Lane) InFlight() (records, bytes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recs, l.bytes
}

// Stats are a lane's counters since it was created.
type Stats struct {
	Published                      uint64 // publishes Kafka acknowledged
	Failed                         uint64 // publishes that failed (done got an error)
	Full                           uint64 // TryPublish calls refused with ErrFull
	InFlightRecords, InFlightBytes int
}

// Stats returns the lane's counters. Safe from any goroutine.
func (l *Lane) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Published: l.published, Failed: l.failed, Full: l.full, InFlightRecords: l.recs, InFlightBytes: l.bytes}
}
