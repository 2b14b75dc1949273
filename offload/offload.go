package offload

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ferrymq/ferry/internal/throttle"
	"github.com/ferrymq/ferry/kafkamux"
)

// ErrFull is returned by TryPublish when the lane's in-flight budget is
// exhausted. Nothing was produced; the caller holds the message (or drops it,
// at QoS 0) and tries again after the lane's OnSpace function has run.
var ErrFull = errors.New("offload: lane full")

// ErrLate is returned by TryPublish for a QoS 0 message when the lane's records already wait longer than its
// QoS 0 delay ([LaneQoS0Delay]): nothing was produced, and the caller drops the message, as QoS 0 allows. It
// wraps ErrFull, so a caller that retries on ErrFull (a will) retries it too; unlike ErrFull it does not pause
// the lane, and OnSpace is not called for it.
var ErrLate = fmt.Errorf("%w: QoS 0 message past the lane's QoS 0 delay", ErrFull)

// Opt configures an Offload.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	laneBytes   int
	laneRecords int
	resumePct   int
	maxDelay    time.Duration
	minRecords  int
	qos0Delay   time.Duration
}

func defaults() cfg {
	return cfg{laneBytes: 8 << 20, laneRecords: 8192, resumePct: 75, maxDelay: 10 * time.Millisecond, minRecords: 256,
		qos0Delay: 5 * time.Millisecond}
}

func (c *cfg) validate() error {
	switch {
	case c.laneBytes < 1:
		return fmt.Errorf("invalid lane bytes %d: must be positive", c.laneBytes)
	case c.laneRecords < 1:
		return fmt.Errorf("invalid lane records %d: must be positive", c.laneRecords)
	case c.resumePct < 0 || c.resumePct > 100:
		return fmt.Errorf("invalid resume mark %d%%: must be 0 to 100", c.resumePct)
	case c.maxDelay < 0:
		return fmt.Errorf("invalid lane delay %v: must be 0 (off) or positive", c.maxDelay)
	case c.minRecords < 1:
		return fmt.Errorf("invalid lane minimum records %d: must be positive", c.minRecords)
	case c.qos0Delay < 0:
		return fmt.Errorf("invalid lane QoS 0 delay %v: must be 0 (off) or positive", c.qos0Delay)
	}
	return nil
}

// LaneBytes bounds the bytes (key + value + headers, as the producer counts
// them) one lane may have in flight to Kafka. Default 8 MiB. A single message
// larger than the budget is accepted when the lane is otherwise empty, so an
// oversized message cannot wedge a lane.
func LaneBytes(n int) Opt { return opt(func(c *cfg) { c.laneBytes = n }) }

// LaneRecords bounds the records one lane may have in flight. Default 8192.
func LaneRecords(n int) Opt { return opt(func(c *cfg) { c.laneRecords = n }) }

// LaneDelay bounds a lane by time as well as by count: the records a lane may have in flight are also limited
// to what Kafka completes in that time at the rate it is completing them now (Little's law), so when Ferry is
// pushed past what Kafka takes, records wait in Kafka's hands about this long, not as long as the count budget
// allows. QoS 0 messages beyond it are dropped (as QoS 0 allows) and QoS 1/2 publishes wait on their
// connection, as with the count budget. When Kafka's own round trip is longer, the bound follows it (twice the
// fastest completion of the last window), so a slow cluster is never throttled below its throughput. 0 turns
// the time bound off. Default 10 ms.
func LaneDelay(d time.Duration) Opt { return opt(func(c *cfg) { c.maxDelay = d }) }

// LaneMinRecords is the floor of the time bounds (LaneDelay, LaneQoS0Delay): a lane may always have this many
// records in flight, whatever the rate. Default 256.
func LaneMinRecords(n int) Opt { return opt(func(c *cfg) { c.minRecords = n }) }

// LaneQoS0Delay bounds the time a QoS 0 message may wait in a lane: while the lane's records take longer than
// this from hand-off to Kafka's acknowledgement, a QoS 0 message is refused with [ErrLate] once the lane has
// what Kafka completes in this time in flight (Little's law, measured every few milliseconds), and dropped by
// the caller. A QoS 0 message has no sender waiting for it and no retry; queued behind tens of milliseconds of
// records it only arrives late, and makes every record behind it later. QoS 1 and 2 messages are not bounded
// by it (they wait on their connections under the count budget and LaneDelay), nor is a burst while Kafka
// keeps up. As with LaneDelay, the bound follows Kafka's own round trip when that is longer (measured by
// LaneDelay's windows: with LaneDelay 0 the bound is this delay alone). 0 turns it off.
// Default 5 ms.
func LaneQoS0Delay(d time.Duration) Opt { return opt(func(c *cfg) { c.qos0Delay = d }) }

// ResumeAt sets the resume mark, in percent of both budgets: a lane that
// returned ErrFull calls its OnSpace function once its in-flight records and
// bytes are both at or below this share of the budget. Lower values pause
// connections longer but resume them in larger batches. Default 75.
func ResumeAt(percent int) Opt { return opt(func(c *cfg) { c.resumePct = percent }) }

// Offload is the set of lanes of one server instance.
type Offload struct {
	mux      *kafkamux.Mux
	topic    string // messages
	retained string
	log      *slog.Logger
	rl       throttle.Limiter // produce failures: one line per error text per minute
	lanes    []*Lane

	latMessages, latRetained *kafkamux.Histogram // produce latency, owned by the mux

	onRetained func(partition int32, offset int64) // OnRetainedWritten
}

// OnRetainedWritten sets fn, called on a Kafka callback goroutine with the partition and offset of each
// retained-topic record Kafka acknowledges, before the publish's done function runs (so before its PUBACK).
// The server uses it to answer a SUBSCRIBE only from an index that holds the retained messages this instance
// has acknowledged. Set it before the first publish; fn must not block.
func (o *Offload) OnRetainedWritten(fn func(partition int32, offset int64)) { o.onRetained = fn }

// New creates loops lanes over mux, producing to mux's messages topic. The
// lanes' combined budgets must fit in the mux's producer buffer, so a lane
// that is not full never sees kgo.ErrMaxBuffered.
func New(mux *kafkamux.Mux, loops int, opts ...Opt) (*Offload, error) {
	c := defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("invalid offload configuration: %w", err)
	}
	if mux == nil {
		return nil, errors.New("invalid offload configuration: nil mux")
	}
	if loops < 1 {
		return nil, fmt.Errorf("invalid offload configuration: %d loops, want at least 1", loops)
	}
	maxRecs, maxBytes := mux.ProducerLimits()
	if loops*c.laneRecords > maxRecs || loops*c.laneBytes > maxBytes {
		return nil, fmt.Errorf("invalid offload configuration: %d lanes of %d records and %d bytes exceed the Kafka producer buffer of %d records and %d bytes",
			loops, c.laneRecords, c.laneBytes, maxRecs, maxBytes)
	}
	o := &Offload{
		mux:      mux,
		topic:    mux.MessagesTopic(),
		retained: mux.RetainedTopic(),
		log:      mux.Logger(),
		rl:       throttle.Limiter{Window: time.Minute},
		lanes:    make([]*Lane, loops),

		latMessages: mux.ProduceLatency(mux.MessagesTopic()),
		latRetained: mux.ProduceLatency(mux.RetainedTopic()),
	}
	for i := range o.lanes {
		l := &Lane{
			o:         o,
			idx:       i,
			maxRecs:   c.laneRecords,
			maxBytes:  c.laneBytes,
			resumePct: c.resumePct,
			resumeByt: c.laneBytes * c.resumePct / 100,
			maxDelay:  c.maxDelay,
			minRecs:   min(c.minRecords, c.laneRecords),
			qos0Delay: c.qos0Delay,
			limRecs:   c.laneRecords,
			qos0Recs:  c.laneRecords,
		}
		o.lanes[i] = l
	}
	return o, nil
}

// Lane returns the lane of event loop i, 0 <= i < loops.
func (o *Offload) Lane(i int) *Lane { return o.lanes[i] }

// Lanes returns the number of lanes.
func (o *Offload) Lanes() int { return len(o.lanes) }

// Stats returns the counters of all lanes added up.
func (o *Offload) Stats() Stats {
	var s Stats
	for _, l := range o.lanes {
		ls := l.Stats()
		s.Published += ls.Published
		s.Failed += ls.Failed
		s.Full += ls.Full
		s.InFlightRecords += ls.InFlightRecords
		s.InFlightBytes += ls.InFlightBytes
		s.Late += ls.Late
		s.LimitRecords += ls.LimitRecords
		s.LimitQoS0 += ls.LimitQoS0
	}
	return s
}

func (o *Offload) logFailure(err error) {
	if ok, n := o.rl.Allow(err.Error()); ok {
		o.log.Warn("cannot write MQTT message to Kafka", "err", err, "suppressed", n)
	}
}
