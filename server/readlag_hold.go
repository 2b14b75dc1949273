package server

import "time"

// Holding QoS 0 publishers back: back-pressure before dropping.
//
// A QoS 0 publish that would wait too long is dropped at ingest: when the loop's records wait in Kafka's hands
// past --inflight-qos0-delay (the lane's QoS 0 budget, offload/lane.go; reason lane_delay), and in a growing
// share while the shared reader lags past --read-lag-limit (readlag.go; reason read_lag). A dropped publish
// costs the loop almost nothing, so a publisher that paces itself on the server's answers (a PINGRESP, a
// window of its own) is answered sooner and sends faster: the loops stay busy taking in publishes that are
// then dropped, and every queue of the round trip stays as long as before. A broker that is one thread
// (Mosquitto) never reads more from its publishers than it delivers.
//
// So with --qos0-hold (off by default), before a loop handles a QoS 0 PUBLISH it asks both questions first, and
// if either answer is "late" it does not read the packet: the PUBLISH and everything behind it stay in the
// connection's input buffer, nothing the client sent after it (a PINGREQ included) is answered, and a client
// that waits for its answers waits.
//
//   - The lane's budget: the lane answers (Lane.HoldQoS0) and, as for a full lane, calls OnSpace once it is
//     back under the budget; the loop then reads its blocked connections again (loop.unblock). The lane
//     stays the one owner of "room in the path to Kafka".
//   - The lateness of deliveries: the shared reader's lag (readlag.go) plus the longest delivery lag of a
//     loop, measured the same way from the reader receiving a record to a loop writing it to a subscriber
//     (the shortest wait among a loop's writes of the last 10 ms, counted only while one of them had at least
//     256 deliveries queued behind it in its session: a standing queue in front of subscribers, not one slow
//     client among many, nor a fan-out's many short queues). At the instance's limit the queue that makes
//     deliveries late may sit in Kafka before the reader or in the session queues after it, depending on
//     whether reading back or writing out is the slower; holding for either keeps both short. Lateness is a
//     measurement, not a budget, and nothing is read back while every publisher is held: a loop that holds
//     connections for it looks again every shedEvery (a timer that wakes the loop, as every hand-back does)
//     and reads them again, in the order they were held, once lateness is at or below --read-lag-limit.
//     A lag counts only while records keep coming (readLag.current): with every publisher held, the records
//     in flight run out and nothing renews the last window's lag, so a lag that no record noted for
//     readLagIdle counts as none, and the held connections are read again.
//
// Rules:
//   - Only a QoS 0 PUBLISH is held. A connection whose next packet is anything else is read as always, so QoS 1
//     and 2 publishes, acknowledgements and SUBSCRIBEs are never held back by this (a QoS 1 publisher is held
//     back by its own window and the lane's count budget); a QoS 0 PUBLISH holds what follows it on its
//     connection, since packets are handled in order.
//   - The event loop goes on reading the socket into the connection's buffer (gnet reads every readable
//     socket), so a client that does not pace itself is not slowed by holding it. Past holdMaxBytes of
//     buffered input a connection is not held but read, and its QoS 0 publishes are dropped as before:
//     dropping stays the last resort, for a queue that holding does not shorten.
//   - Keep-alive: a held connection has sent a whole packet that Ferry has not read, so it is not timed out
//     while held [MQTT-3.1.2-24] (checkTimeout). Its PINGREQ waits behind the held PUBLISH: a hold lasts about
//     as long as Kafka or the reader are late (milliseconds), far below any client's PINGRESP timeout; a client
//     that gives up on its PINGRESP sooner is the trade-off of handling a connection's packets in order.

// holdMaxBytes is the most input a held connection may have buffered; past it the connection is read again
// (and its QoS 0 publishes dropped while they would be late).
const holdMaxBytes = 64 << 10

// Why a QoS 0 publisher was held, for metrics.
const (
	holdLaneDelay = iota // the lane's QoS 0 budget (--inflight-qos0-delay)
	holdReadLag          // late deliveries: the shared reader's lag plus the loops' delivery lag (--read-lag-limit)
	holdReasons
)

// HoldReasonNames are the labels of ferry_qos0_holds_total, by reason.
var HoldReasonNames = [holdReasons]string{"lane_delay", "read_lag"}

// qos0Hold is one loop's holding of QoS 0 publishers for late deliveries. Loop-owned.
type qos0Hold struct {
	on    bool        // deliveries were late past the limit at the last look: QoS 0 publishes are held
	due   int64       // monoNow of the next look at the lag
	conns []*conn     // the connections held for lateness, in the order they were held
	timer *time.Timer // wakes the loop to look at the lag again while conns is not empty
	armed bool        // timer is running
}

// holdQoS0 reports whether c, whose next packet is a QoS 0 PUBLISH, is to be held instead of read, and holds it
// if so (c.q0Held). Runs on the loop.
func (c *conn) holdQoS0() bool {
	l := c.l
	srv := l.srv
	if !srv.cfg.qos0Hold || c.phase != phaseConnected || c.inboundBuffered() > holdMaxBytes {
		return false
	}
	if l.lane.HoldQoS0() {
		c.q0Held = true
		l.block(c) // read again on the lane's OnSpace (loop.unblock)
		srv.metrics.qos0Holds[holdLaneDelay].Add(1)
		return true
	}
	limit := int64(srv.cfg.readLagLimit)
	if limit == 0 {
		return false
	}
	h := &l.hold
	if now := monoNow(); now >= h.due {
		h.look(srv.lateness(now), limit, now)
	}
	if !h.on {
		return false
	}
	c.q0Held = true
	h.conns = append(h.conns, c)
	srv.metrics.qos0Holds[holdReadLag].Add(1)
	if !h.armed {
		h.armed = true
		if h.timer == nil {
			h.timer = time.AfterFunc(shedEvery, l.holdDue)
		} else {
			h.timer.Reset(shedEvery)
		}
	}
	return true
}

// lateness is how late the instance delivers at now (monoNow), in nanoseconds: the shared reader's lag plus the
// longest delivery lag of a loop. Safe for concurrent use.
func (srv *Server) lateness(now int64) int64 {
	return srv.lag.current(now) + srv.deliveryLag(now)
}

// DeliveryLag is the longest delivery lag of an event loop: the shortest wait, from the shared reader receiving
// a record to the loop writing it to a subscriber, among the deliveries the loop wrote in the last 10 ms, while
// one of them had at least 256 deliveries queued behind it in its session (0 otherwise, or with
// --read-lag-limit 0 or --qos0-hold off, which measure nothing). Safe for concurrent use.
func (srv *Server) DeliveryLag() time.Duration { return time.Duration(srv.deliveryLag(monoNow())) }

// deliveryLag is DeliveryLag at now (monoNow), in nanoseconds.
func (srv *Server) deliveryLag(now int64) int64 {
	srv.loopMu.Lock()
	loops := srv.order
	srv.loopMu.Unlock()
	var d int64
	for _, l := range loops {
		d = max(d, l.dlag.current(now))
	}
	return d
}

// look notes the lateness at now against the limit (nanoseconds).
func (h *qos0Hold) look(lag, limit, now int64) {
	h.on = lag > limit
	h.due = now + int64(shedEvery)
}

// holdDue runs on the hold timer's goroutine: the loop looks at lateness again (releaseHeld). Never blocks.
func (l *loop) holdDue() {
	l.mu.Lock()
	l.holdLook = true
	l.wake()
}

// releaseHeld looks at lateness and, if deliveries are on time again, reads the connections held for it, in
// the order they were held; otherwise it looks again after shedEvery. A connection the lane holds too is held
// again by it when read (holdQoS0). Runs on the loop (service).
func (l *loop) releaseHeld() {
	h := &l.hold
	h.armed = false
	if len(h.conns) == 0 {
		return
	}
	now := monoNow()
	h.look(l.srv.lateness(now), int64(l.srv.cfg.readLagLimit), now)
	if h.on {
		h.armed = true
		h.timer.Reset(shedEvery)
		return
	}
	held := h.conns
	h.conns = nil
	for i, c := range held {
		held[i] = nil
		if c.q0Held && !c.closed {
			c.q0Held = false
			c.service()
		}
	}
	if h.conns == nil {
		h.conns = held[:0] // nothing was held again meanwhile: keep the backing array
	}
}
