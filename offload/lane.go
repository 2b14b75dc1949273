package offload

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// Lane is one event loop's bounded path to Kafka and the owner of its back-pressure (see the package doc).
// Its loop publishes on it, and so may any other goroutine (the server publishes wills on lane 0 from timers
// and readers); completions and OnSpace run on franz-go's producer callback goroutines. The lane's mutex is
// held only for counter updates, never across a call out.
type Lane struct {
	o   *Offload
	idx int

	maxRecs, maxBytes int
	resumePct         int // resume mark in percent of the record limit in force
	resumeByt         int
	maxDelay          time.Duration // time bound (LaneDelay); 0 = off
	minRecs           int           // floor of the time bounds
	qos0Delay         time.Duration // QoS 0 time budget (LaneQoS0Delay); 0 = off

	mu      sync.Mutex
	recs    int
	bytes   int
	paused  bool // returned ErrFull since the last OnSpace call
	onSpace func()
	// The time bound: limRecs is the record limit in force, min(maxRecs, what Kafka completes in maxDelay at
	// the rate of the last window). A window closes every laneWindow of completions.
	limRecs   int
	winStart  time.Time
	winDone   int           // records completed in the window
	winMin    time.Duration // fastest completion in the window
	winFull   bool          // the limit turned a record away in the window
	baseMin   time.Duration // fastest completion over the last laneBaseHorizon: Kafka's own round trip
	baseStart time.Time
	// The QoS 0 budget (LaneQoS0Delay): qos0Recs is the records in flight above which a QoS 0 message is
	// refused, moved at the end of every window of laneQoS0Window (qos0Bound).
	qos0Recs  int
	q0Start   time.Time     // start of the window; zero: starts at the next completion
	q0Done    int           // records completed in the window
	q0Lat     time.Duration // their latencies added up
	q0Refused bool          // the QoS 0 budget turned a message away in the window
	q0Held    bool          // HoldQoS0 said a QoS 0 message would be late: call onSpace once back under the budget

	published, failed, full, late uint64 // counters, guarded by mu
}

// TryPublish produces msg to the messages topic without blocking. It runs on
// the lane's event loop (or any goroutine, see [Lane]). When msg.Retain is set it also produces msg to the
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
func (l *Lane) TryPublish(msg *kafkamux.Message, done func(err error)) error {
	return l.TryPublishWith(msg, "", nil, done)
}

// TryPublishWith is TryPublish with one more record for the sessions topic (sessKey not empty; sessValue nil
// writes a tombstone) that Kafka must store together with the message: with transactions (kafkamux option
// Transactions) the message, its retained copy and the session record commit or abort as one, which is how a
// QoS 2 message and its packet-id state are stored exactly once. The session record counts against the budget
// like the others; done reports them all, with the first error.
func (l *Lane) TryPublishWith(msg *kafkamux.Message, sessKey string, sessValue []byte, done func(err error)) error {
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
func (l *Lane) TryPublishRouted(msg *kafkamux.Message, rt Route, sessKey string, sessValue []byte, done func(err error)) error {
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

	if err := l.take(recs, size, msg.QoS == 0); err != nil {
		return err
	}

	start := time.Now() // produce latency, carried by the closure that exists anyway (kafkamux.Mux.ProduceLatency)
	if recs == 1 {
		produce := l.o.mux.Produce
		if msg.QoS == 0 {
			produce = l.o.mux.ProduceQoS0 // the QoS 0 acks level, when one is set (kafkamux.QoS0Acks)
		}
		produce(context.Background(), r, func(_ *kafkamux.Record, err error) {
			lat := time.Since(start)
			l.o.latMessages.Observe(lat)
			l.release(1, size, err != nil, lat)
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

// take counts recs records of size bytes against the budget, or says why they do not fit: ErrFull, which
// pauses the lane until OnSpace, or ErrLate for a QoS 0 message (qos0) past the QoS 0 budget, which leaves the
// lane as it is.
func (l *Lane) take(recs, size int, qos0 bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.recs > 0 && (l.recs+recs > l.limRecs || l.bytes+size > l.maxBytes) {
		l.paused = true
		l.full++
		l.winFull = true
		return ErrFull
	}
	if qos0 && l.recs > 0 && l.recs+recs > l.qos0Recs {
		l.late++
		l.q0Refused = true
		return ErrLate
	}
	if l.recs == 0 {
		l.q0Start = time.Time{} // the lane was idle: the QoS 0 budget's next window starts at its next completion
	}
	l.recs += recs
	l.bytes += size
	return nil
}

// HoldQoS0 reports whether a QoS 0 message would now be refused with ErrLate (the QoS 0 budget,
// LaneQoS0Delay). If so, the lane calls its OnSpace function once its records in flight fall to the budget's
// resume mark, as after ErrFull: a caller that holds its QoS 0 publishes back instead of dropping them (the
// server stops reading their connections) knows when to go on. Runs on any goroutine; never blocks.
func (l *Lane) HoldQoS0() bool {
	if l.qos0Delay == 0 {
		return false
	}
	l.mu.Lock()
	late := l.recs > 0 && l.recs+1 > l.qos0Recs
	if late {
		l.q0Held = true
	}
	l.mu.Unlock()
	return late
}

// Pub is a message on its way through a lane in storage its caller keeps: its Kafka record, the bytes the
// record copies from the message and the produce callback are built once and reused, so handing a message of
// a usual shape to Kafka allocates nothing (the server keeps one Pub in each pooled publish request).
type Pub struct {
	Msg kafkamux.Message

	rec   kafkamux.Record
	buf   []byte // the record's copies of Msg's string bytes
	cb    func(*kafkamux.Record, error)
	l     *Lane
	size  int
	start time.Time
	done  func(error)
}

// Reset clears p for its next message and keeps its storage.
func (p *Pub) Reset() {
	props, hdrs, buf, cb := p.Msg.UserProps[:0], p.rec.Headers[:0], p.buf[:0], p.cb
	clear(hdrs[:cap(hdrs)]) // a pooled Pub keeps no header value (correlation data, schema) reachable
	*p = Pub{cb: cb, buf: buf}
	p.Msg.UserProps, p.rec.Headers = props, hdrs
}

// TryPublishPub is TryPublish for a message held in p: the record is built in p's storage, and p must stay
// unchanged until done has run (it may be reused after). A retained message goes through TryPublish (it is two
// records, which cost allocations to join).
func (l *Lane) TryPublishPub(p *Pub, done func(err error)) error {
	msg := &p.Msg
	if msg.Retain {
		return l.TryPublish(msg, done)
	}
	p.buf = msg.RecordInto(&p.rec, p.buf, l.o.topic)
	size := kafkamux.RecordSize(&p.rec)
	if err := l.take(1, size, msg.QoS == 0); err != nil {
		return err
	}
	if p.cb == nil {
		p.cb = p.produced // bound once per Pub, not per message
	}
	p.l, p.size, p.done, p.start = l, size, done, time.Now()
	if msg.QoS == 0 {
		l.o.mux.ProduceQoS0(context.Background(), &p.rec, p.cb)
	} else {
		l.o.mux.Produce(context.Background(), &p.rec, p.cb)
	}
	return nil
}

// produced runs on a Kafka callback goroutine when p's record is acknowledged or failed.
func (p *Pub) produced(_ *kafkamux.Record, err error) {
	l, size, done := p.l, p.size, p.done // done may hand p back to its owner: p is not read after it
	lat := time.Since(p.start)
	l.o.latMessages.Observe(lat)
	l.release(1, size, err != nil, lat)
	l.finish(err, done)
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
		if fn := p.l.o.onRetained; fn != nil && err == nil {
			fn(r.Partition, r.Offset)
		}
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
	p.l.release(p.recs, p.size, err != nil, time.Since(p.start))
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

// laneWindow is how often a lane re-derives its time bound from the completions it saw; laneBaseHorizon is
// how long the fastest completion counts as Kafka's own round trip.
const (
	laneWindow      = 50 * time.Millisecond
	laneBaseHorizon = 10 * time.Second
	// laneQoS0Window is the window of the QoS 0 budget: short, as a QoS 0 flood fills a lane in milliseconds.
	laneQoS0Window = 5 * time.Millisecond
)

// release returns size bytes and recs records, which took lat from hand-off to completion, to the budget and,
// if the lane is paused and now at or below its resume mark, calls OnSpace. Runs on a Kafka callback
// goroutine.
func (l *Lane) release(recs, size int, failed bool, lat time.Duration) {
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
	if l.maxDelay > 0 || l.qos0Delay > 0 {
		now := time.Now()
		if l.maxDelay > 0 {
			l.timeBound(recs, lat, now)
		}
		if l.qos0Delay > 0 {
			l.qos0Bound(recs, lat, now)
		}
	}
	var fn func()
	if l.paused && l.recs <= l.limRecs*l.resumePct/100 && l.bytes <= l.resumeByt {
		l.paused = false
		fn = l.onSpace
	}
	if l.q0Held && l.recs <= l.qos0Recs*l.resumePct/100 {
		l.q0Held = false
		fn = l.onSpace
	}
	l.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// timeBound counts recs completions that took lat, and at the end of a window moves the record limit.
//
// The lane's delay is its LaneDelay, or twice Kafka's own round trip (the fastest completion of the last
// laneBaseHorizon) when that is longer, so a distant cluster is not mistaken for a queue. A standing queue —
// every completion of the window took longer than the delay, so records wait in Kafka's hands longer than the
// delay whatever the burst — tightens the limit to what Kafka completes in the delay at the window's rate
// (records in flight ÷ completion rate is the time a new record waits: Little's law). Without one, a limit
// that turned records away in the window grows by half, back up to the count budget. So a burst while Kafka
// keeps up is taken whole, and only a Kafka that falls behind bounds the queue by time. l.mu is held.
func (l *Lane) timeBound(recs int, lat time.Duration, now time.Time) {
	if l.winStart.IsZero() {
		l.winStart, l.winMin = now, lat
	}
	l.winDone += recs
	l.winMin = min(l.winMin, lat)
	el := now.Sub(l.winStart)
	if el < laneWindow {
		return
	}
	if l.baseStart.IsZero() || now.Sub(l.baseStart) >= laneBaseHorizon {
		l.baseMin, l.baseStart = l.winMin, now
	} else {
		l.baseMin = min(l.baseMin, l.winMin)
	}
	delay := max(l.maxDelay, 2*l.baseMin)
	switch {
	case l.winMin > delay:
		l.limRecs = max(l.minRecs, min(l.maxRecs, int(float64(l.winDone)*float64(delay)/float64(el))))
	case l.winFull:
		l.limRecs = min(l.maxRecs, l.limRecs+l.limRecs/2)
	}
	l.winStart, l.winDone, l.winMin, l.winFull = now, 0, lat, false
}

// qos0Bound counts recs completions that took lat, and at the end of a window of laneQoS0Window moves the QoS
// 0 budget.
//
// The budget bounds the time a QoS 0 message waits in the lane, which QoS 0 does not need to do at all: past
// it, the message is dropped (as QoS 0 allows) rather than queued. The delay is the lane's LaneQoS0Delay, or
// twice Kafka's own round trip when that is longer (see timeBound). A window whose completions took longer than
// the delay on average is a queue: the budget becomes what Kafka completed in the delay at the window's rate
// (records in flight ÷ completion rate is the time a new record waits: Little's law), never below the floor.
// A window under the delay in which the budget turned messages away grows it by half, up to the count budget.
// So a burst while Kafka keeps up is taken whole, and only a lane whose records wait longer than the delay
// sheds QoS 0; QoS 1 and 2 messages are never refused by this budget. The window measures the lane while it
// works: a lane that had nothing in flight starts a new one at its next completion (take), so idle time never
// counts as a slow rate, while the gaps of a slow Kafka answering in bursts do. l.mu is held.
func (l *Lane) qos0Bound(recs int, lat time.Duration, now time.Time) {
	if l.q0Start.IsZero() {
		l.q0Start, l.q0Done, l.q0Lat, l.q0Refused = now, 0, 0, false
	}
	l.q0Done += recs
	l.q0Lat += time.Duration(recs) * lat
	el := now.Sub(l.q0Start)
	if el < laneQoS0Window {
		return
	}
	delay := max(l.qos0Delay, 2*l.baseMin)
	switch {
	case l.q0Lat > time.Duration(l.q0Done)*delay:
		l.qos0Recs = max(l.minRecs, min(l.maxRecs, int(float64(l.q0Done)*float64(delay)/float64(el))))
	case l.q0Refused:
		l.qos0Recs = min(l.maxRecs, l.qos0Recs+l.qos0Recs/2)
	}
	l.q0Start, l.q0Done, l.q0Lat, l.q0Refused = now, 0, 0, false
}

// OnSpace sets the function called when a lane that returned ErrFull has
// space again (its in-flight records and bytes fell to the resume mark). It
// runs on a Kafka callback goroutine, once per ErrFull episode (and once per
// HoldQoS0 episode), and must not block. Set it before publishing; a later call replaces it.
func (l *Lane) OnSpace(fn func()) {
	l.mu.Lock()
	l.onSpace = fn
	l.mu.Unlock()
}

// Stats are a lane's counters since it was created.
type Stats struct {
	Published                      uint64 // publishes Kafka acknowledged
	Failed                         uint64 // publishes that failed (done got an error)
	Full                           uint64 // TryPublish calls refused with ErrFull
	Late                           uint64 // QoS 0 messages refused with ErrLate (LaneQoS0Delay)
	InFlightRecords, InFlightBytes int
	LimitRecords                   int // the record limit in force: the count budget, or lower by the time bound (LaneDelay)
	LimitQoS0                      int // the records in flight above which a QoS 0 message is refused (LaneQoS0Delay)
}

// Stats returns the lane's counters. Safe from any goroutine.
func (l *Lane) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Published: l.published, Failed: l.failed, Full: l.full, Late: l.late, InFlightRecords: l.recs, InFlightBytes: l.bytes,
		LimitRecords: l.limRecs, LimitQoS0: l.qos0Recs}
}
