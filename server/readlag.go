package server

import (
	"sync/atomic"
	"time"
)

// Read lag: how late the shared reader receives records, and what the instance does about it.
//
// Every record an instance takes in goes into Kafka and comes back through the shared reader before it reaches
// a subscriber. A record's wait, from its timestamp (for Ferry's own records, when the loop handed it to the
// producer) to the reader receiving it, spans the queues of that round trip: records in flight to Kafka, the
// broker, and the log ahead of the reader. Ingest and read-back share the instance's CPU; at the instance's
// limit, QoS 0 publishers (which nothing holds back: no window, no acknowledgement) fill those queues, and every
// delivery waits behind them. Their count budgets (in-flight records per loop, the session queue) are sized for
// bursts, so at full rate they are tens of milliseconds deep.
//
// So the reader also bounds the round trip by time. When it receives a record that waited longer than
// --read-lag-limit with at least readLagMinRecords records behind it in its partition, the instance is behind:
// the loops drop QoS 0 publishes at ingest, counted as ferry_dropped_total{reason="read_lag"}, as they drop them
// when Kafka's in-flight budget is spent (lane_full). QoS 1 and 2 publishes are never dropped; each client's
// window already holds them back. The instance is no longer behind once the reader receives a record that
// waited less than half the limit, or one with nothing behind it.
//
// Dropping late deliveries at the reader instead would not bound the queues: the reader still has to fetch every
// record, and while ingest outruns it the wait only grows, until every QoS 0 delivery is late.
//
// The trade-off: the reader follows every partition once any client subscribes, so an instance at its limit
// drops QoS 0 publishes whatever their topics, to keep its deliveries on time. Where QoS 0 is taken in mostly for
// Kafka consumers, --read-lag-limit 0 lets it all reach Kafka however late the read-back (the default favours
// latency).
//
// The record count keeps a pause of the reader (a scheduler hiccup, a garbage collection) at an ordinary rate
// from counting as overload: a few records late is not an instance taking in more than it reads back. Should it
// happen anyway, the reader clears the signal as soon as it has read to the end of the partition.
const readLagMinRecords = 256

// readLag is the instance's "the reader is behind" signal. The shared reader alone writes it (note); the loops
// read it for every QoS 0 publish.
type readLag struct {
	limit  int64 // --read-lag-limit in nanoseconds; 0 = off
	behind atomic.Bool
}

// note updates the signal from one record the reader received: waited is how long it was in Kafka (received −
// record timestamp), after how many records followed it in its partition. Runs on the shared reader's
// goroutine; it writes the shared flag only when it changes.
func (r *readLag) note(waited time.Duration, after int64) {
	if r.limit == 0 {
		return
	}
	w := int64(waited)
	was := r.behind.Load()
	now := was
	switch {
	case !was && w > r.limit && after >= readLagMinRecords:
		now = true
	case was && (w < r.limit/2 || after == 0):
		now = false
	}
	if now != was {
		r.behind.Store(now)
	}
}

// shedQoS0 reports whether a QoS 0 publish is to be dropped at ingest because the reader is behind. Runs on a
// loop.
func (r *readLag) shedQoS0() bool { return r.behind.Load() }
