package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/route"
	"github.com/ferrymq/ferry/server/transport"
)

// Metrics are the server's low-cardinality counters: per listener, per QoS, per reason, never per client.
//
// Every counter is a plain atomic allocated with the Server, indexed by a small integer (QoS, reason code,
// listener index) known where it is counted. An increment is one atomic add: about 6 ns, no lock, no map
// lookup, no allocation, no label hashing. The Prometheus text is written by cmd/ferry from Snapshot and the
// other accessors below, at scrape time, which is the only place that formats or allocates.
//
// Why not a metrics library: measured on the 2-core build machine (go test -bench, Go 1.26), an increment of
// a pre-registered VictoriaMetrics/metrics or prometheus/client_golang counter costs the same atomic add as
// this (6.0 and 6.5 ns against 5.8 ns), so a library buys nothing on the hot path; a client_golang
// CounterVec.WithLabelValues lookup costs 38 ns. Their histograms are slower than kafkamux.Histogram (VM
// 19–26 ns, with a mutex and a log10 per update, and non-standard "vmrange" buckets that Prometheus's
// histogram_quantile cannot use; client_golang 35 ns), and either would be a dependency of server/, offload/
// and kafkamux/, which DESIGN.md keeps to a short list. See docs/operations.md, "Metrics".
type Metrics struct {
	connsOpened       atomic.Uint64
	connsCurrent      atomic.Int64
	sessionsConnected atomic.Int64
	sessionsExpired   atomic.Uint64
	takeovers         atomic.Uint64
	unrecorded        atomic.Uint64 // CONNECTs accepted without an owner record (alone.go)
	heldSaves         atomic.Uint64 // delivery records written to hold QoS 2 steps before they went out (persist.go)
	protocolErrors    atomic.Uint64
	connectTimeouts   atomic.Uint64
	keepAliveTimeouts atomic.Uint64
	qos0Holds         [holdReasons]atomic.Uint64 // QoS 0 publishers held back instead of read, by reason (readlag_hold.go)
	transportErrors   atomic.Uint64              // TLS, WebSocket and PROXY protocol failures
	refused           [256]atomic.Uint64         // CONNECTs refused, by v5 reason code
	protoErrs         [256]atomic.Uint64         // connections closed on a protocol error, by v5 reason code
	publishesIn       [3]atomic.Uint64
	publishesOut      [3]atomic.Uint64
	recordsIn         atomic.Uint64
	bytesIn           atomic.Uint64
	bytesOut          atomic.Uint64
	kafkaErrors       atomic.Uint64
	drops             [dropReasons]atomic.Uint64
	subscriptions     atomic.Int64
	refusedSubs       atomic.Uint64 // subscriptions refused by the per-session quota
	willsSent         atomic.Uint64
	limits            limitMetrics                  // rate limits and redirects (limits.go)
	authDenied        [authDenials]atomic.Uint64    // authorization refusals, by kind (authz.go)
	routeRefused      [route.Refusals]atomic.Uint64 // publishes and wills refused by routing, by reason (routing.go)
	misrouted         atomic.Uint64                 // records read from a Kafka topic their MQTT topic does not route to
	lingering         atomic.Int64                  // sockets in a lingering close (linger.go)
	lingerSkipped     atomic.Uint64                 // closes that would have lingered but found the loop's lingering sockets at their cap

	listeners []listenerMetrics                  // by the index of the listener in the configuration
	which     *transport.Listeners               // which listener accepted a connection
	loopLag   kafkamux.Histogram                 // how late each loop ran its one-second tick
	pubStage  [pubStages]kafkamux.Histogram      // where a QoS 1/2 PUBLISH's time goes (stages.go)
	delStage  [deliveryStages]kafkamux.Histogram // where a delivery's time goes (stages.go)
	stopping  atomic.Bool                        // Stop was called: connections the engine closes end by "server_shutdown"
}

// listenerMetrics are the connection counters of one listener.
type listenerMetrics struct {
	name    string // as configured, e.g. tcp://0.0.0.0:1883
	opened  atomic.Uint64
	current atomic.Int64
	closed  [closeReasons]atomic.Uint64
}

// initListeners prepares the per-listener counters. Called once by New.
func (m *Metrics) initListeners(listeners []string) {
	m.listeners = make([]listenerMetrics, len(listeners))
	for i, l := range listeners {
		m.listeners[i].name = l
	}
	m.which = transport.NewListeners(listeners)
}

// Why a connection ended, for ferry_connections_closed_total{reason}.
const (
	closeUnset          uint8 = iota // not said where it closed: closeReason infers it
	closeNormal                      // the client sent DISCONNECT
	closeClientGone                  // the client closed the socket or it failed, without DISCONNECT
	closeProtocolError               // malformed or forbidden packet (by code: ferry_protocol_errors_total)
	closeKeepAlive                   // no packet for 1.5 × keep-alive
	closeConnectTimeout              // no CONNECT within --connect-timeout
	closeRefused                     // CONNECT refused (by code: ferry_connects_refused_total)
	closeTakeover                    // the client id connected again, here or on another instance
	closeShutdown                    // drain or stop
	closeQuota                       // a budget was exceeded: session queue, inbound window, topic aliases (0x97, 0x93)
	closeKafkaError                  // a v3 client's publish failed in Kafka: closed without the ack so it re-sends
	closeReasons
)

// CloseReasonNames are the label values of the reasons a connection ended, by index.
var CloseReasonNames = [closeReasons]string{"unknown", "normal", "client_gone", "protocol_error", "keep_alive_timeout",
	"connect_timeout", "connect_refused", "takeover", "server_shutdown", "quota", "kafka_error"}

// connOpened counts a new connection of the listener that accepted it. Runs on c's loop.
func (m *Metrics) connOpened(c *conn) {
	m.connsOpened.Add(1)
	m.connsCurrent.Add(1)
	if len(m.listeners) == 0 {
		return
	}
	i := m.which.Of(c.gc.LocalAddr())
	c.listener = uint8(i)
	m.listeners[i].opened.Add(1)
	m.listeners[i].current.Add(1)
}

// connClosed counts the end of c and its reason. Runs on c's loop in OnClose, before c is marked closed and
// before its session is detached.
func (m *Metrics) connClosed(c *conn) {
	m.connsCurrent.Add(-1)
	if len(m.listeners) == 0 {
		return
	}
	why := c.closeReason()
	l := &m.listeners[c.listener]
	l.current.Add(-1)
	l.closed[why].Add(1)
	if srv := c.l.srv; srv.cfg.log.Enabled(context.Background(), slog.LevelDebug) {
		srv.debug("client disconnected", "client", c.clientID(), "reason", CloseReasonNames[why])
	}
}

// closeReason says why c ended. Where Ferry closes a connection it records the reason (closeWhy); the closes
// in connect.go (CONNECT refused, takeover, DISCONNECT) are told apart here by what they leave behind.
// Runs on c's loop in OnClose, before the session is detached; takes the session lock.
func (c *conn) closeReason() uint8 {
	if c.closeWhy != closeUnset {
		return c.closeWhy
	}
	srv := c.l.srv
	if !c.closed { // Ferry did not close it: the peer did, the socket failed, or the engine is stopping
		if srv.metrics.stopping.Load() {
			return closeShutdown
		}
		return closeClientGone
	}
	if c.sess == nil {
		return closeRefused // closed by Ferry before a session was attached
	}
	c.sess.mu.Lock()
	taken := c.sess.c != c // attach and handOver move the session away before they kick the connection
	c.sess.mu.Unlock()
	if taken {
		return closeTakeover
	}
	return closeNormal
}

// protocolError counts a protocol error of c by reason code and marks why c will close. Runs on c's loop.
func (m *Metrics) protocolError(c *conn, r mqttcodec.ReasonCode) {
	m.protocolErrors.Add(1)
	m.protoErrs[r].Add(1)
	c.closeWhy = closeProtocolError
	if r == mqttcodec.QuotaExceeded || r == mqttcodec.ReceiveMaximumExceeded || r == mqttcodec.MessageRateTooHigh {
		c.closeWhy = closeQuota // a budget, not a malformed packet
	}
}

// Reasons a message is dropped.
const (
	dropLaneFull  = iota // QoS 0 publish while Kafka's in-flight budget is exhausted
	dropQueueFull        // session queue full
	dropExpired          // message expiry passed before delivery
	dropTooLarge         // larger than the client's Maximum Packet Size
	dropDenied           // outside the client's privileges: a QoS 0 or v3 publish, or a delivery (authz.go)
	dropReadLag          // QoS 0 publish while the shared reader trails Kafka past --read-lag-limit (readlag.go)
	dropLaneDelay        // QoS 0 publish while the loop's records wait in Kafka's hands past --inflight-qos0-delay
	dropReasons
)

// DropReasonNames names the drop counters for metrics output.
var DropReasonNames = [dropReasons]string{"lane_full", "queue_full", "expired", "too_large", "not_authorized", "read_lag", "lane_delay"}

func (m *Metrics) dropped(reason int) { m.drops[reason].Add(1) }

func (m *Metrics) connectRefused(r mqttcodec.ReasonCode) { m.refused[r].Add(1) }

// loopLag keeps how late one loop ran its one-second tick: the maximum over the current and the previous
// minute. Written by the loop only, read by scrapes.
type loopLag struct {
	// unix ns when the ticker handed a tick to the loop; 0 once a tick has read it. A tick still queued keeps
	// its time, so a loop stuck for several seconds shows all of it.
	tickAt    atomic.Int64
	cur, prev atomic.Int64 // ns; maximum of this minute and of the last one
	minute    int64        // loop-owned: the minute cur belongs to
}

// tickLag records how long the tick handed over at l.lag.tickAt waited for the loop. Runs on l's loop.
func (m *Metrics) tickLag(l *loop, now time.Time) {
	at := l.lag.tickAt.Swap(0)
	if at == 0 {
		return // a second tick queued behind the first: the first measured the wait
	}
	d := now.UnixNano() - at
	m.loopLag.Observe(time.Duration(d))
	if minute := now.Unix() / 60; minute != l.lag.minute {
		prev := int64(0)
		if minute == l.lag.minute+1 {
			prev = l.lag.cur.Load()
		}
		l.lag.prev.Store(prev)
		l.lag.cur.Store(0)
		l.lag.minute = minute
	}
	if d > l.lag.cur.Load() {
		l.lag.cur.Store(d)
	}
}

// Snapshot is a copy of the counters.
type Snapshot struct {
	ConnsOpened, SessionsExpired, Takeovers, ProtocolErrors, ConnectTimeouts, KeepAliveTimeouts uint64
	Unrecorded                                                                                  uint64 // CONNECTs accepted without an owner record (docs/sessions.md)
	ConnsCurrent, SessionsConnected, Subscriptions                                              int64
	PublishesIn, PublishesOut                                                                   [3]uint64
	RecordsIn, BytesIn, BytesOut, KafkaErrors, WillsSent, RefusedSubs                           uint64
	TransportErrors                                                                             uint64
	HeldSaves                                                                                   uint64              // delivery records written before QoS 2 steps of persistent sessions went out
	QoS0Holds                                                                                   [holdReasons]uint64 // QoS 0 publishers held back, by reason, see HoldReasonNames
	Drops                                                                                       [dropReasons]uint64
	AuthDenied                                                                                  [authDenials]uint64    // by kind, see AuthDeniedNames
	RouteRefused                                                                                [route.Refusals]uint64 // by reason, see RouteRefusedNames
	Misrouted                                                                                   uint64                 // records skipped: their MQTT topic routes to another Kafka topic
	Lingering                                                                                   int64                  // sockets in a lingering close (linger.go)
	LingerSkipped                                                                               uint64                 // closes that found the lingering sockets at their cap and closed at once
	Refused                                                                                     map[mqttcodec.ReasonCode]uint64
	ProtocolErrorsByCode                                                                        map[mqttcodec.ReasonCode]uint64
}

// Snapshot copies the counters. Subscriptions is the count of subscriptions added minus removed by clients;
// Server.State().Subscriptions counts the subscription index itself.
func (m *Metrics) Snapshot() Snapshot {
	s := Snapshot{
		ConnsOpened: m.connsOpened.Load(), SessionsExpired: m.sessionsExpired.Load(), Takeovers: m.takeovers.Load(),
		Unrecorded:     m.unrecorded.Load(),
		ProtocolErrors: m.protocolErrors.Load(), ConnectTimeouts: m.connectTimeouts.Load(),
		KeepAliveTimeouts: m.keepAliveTimeouts.Load(), ConnsCurrent: m.connsCurrent.Load(),
		SessionsConnected: m.sessionsConnected.Load(), Subscriptions: m.subscriptions.Load(),
		RecordsIn: m.recordsIn.Load(), BytesIn: m.bytesIn.Load(), BytesOut: m.bytesOut.Load(),
		KafkaErrors: m.kafkaErrors.Load(), WillsSent: m.willsSent.Load(), RefusedSubs: m.refusedSubs.Load(),
		TransportErrors: m.transportErrors.Load(), HeldSaves: m.heldSaves.Load(), Lingering: m.lingering.Load(), LingerSkipped: m.lingerSkipped.Load(),
		Refused: map[mqttcodec.ReasonCode]uint64{}, ProtocolErrorsByCode: map[mqttcodec.ReasonCode]uint64{},
	}
	for i := range s.PublishesIn {
		s.PublishesIn[i], s.PublishesOut[i] = m.publishesIn[i].Load(), m.publishesOut[i].Load()
	}
	for i := range s.Drops {
		s.Drops[i] = m.drops[i].Load()
	}
	for i := range s.QoS0Holds {
		s.QoS0Holds[i] = m.qos0Holds[i].Load()
	}
	for i := range s.AuthDenied {
		s.AuthDenied[i] = m.authDenied[i].Load()
	}
	for i := range s.RouteRefused {
		s.RouteRefused[i] = m.routeRefused[i].Load()
	}
	s.Misrouted = m.misrouted.Load()
	for i := range m.refused {
		if v := m.refused[i].Load(); v != 0 {
			s.Refused[mqttcodec.ReasonCode(i)] = v
		}
		if v := m.protoErrs[i].Load(); v != 0 {
			s.ProtocolErrorsByCode[mqttcodec.ReasonCode(i)] = v
		}
	}
	return s
}

// ListenerStats are the connection counters of one listener.
type ListenerStats struct {
	Listener string // as configured
	Opened   uint64
	Current  int64
	Closed   [closeReasons]uint64 // by reason, see CloseReasonNames
}

// Listeners returns the connection counters of every listener, in configuration order.
func (m *Metrics) Listeners() []ListenerStats {
	out := make([]ListenerStats, len(m.listeners))
	for i := range m.listeners {
		l := &m.listeners[i]
		out[i] = ListenerStats{Listener: l.name, Opened: l.opened.Load(), Current: l.current.Load()}
		for r := range l.closed {
			out[i].Closed[r] = l.closed[r].Load()
		}
	}
	return out
}

// LoopLag returns the histogram of how late the event loops ran their one-second tick (all loops together).
func (m *Metrics) LoopLag() kafkamux.HistogramSnapshot { return m.loopLag.Snapshot() }

// LoopLagMax returns, per event loop that has served a connection (by loop index, which is also its offload
// lane's index), the longest its tick waited in the current and the previous minute.
func (srv *Server) LoopLagMax() []time.Duration {
	srv.loopMu.Lock()
	loops := srv.order
	srv.loopMu.Unlock()
	out := make([]time.Duration, len(loops))
	for i, l := range loops {
		out[i] = time.Duration(max(l.lag.cur.Load(), l.lag.prev.Load()))
	}
	return out
}

// ReadLag returns how far the shared reader trails Kafka, as the loops see it when they move their QoS 0
// shedding share (readlag.go): 0 when the reader is at the end of what it reads, or --read-lag-limit is 0.
func (srv *Server) ReadLag() time.Duration { return time.Duration(srv.lag.age(monoNow())) }

// ReadLagShed returns, per event loop that has served a connection (by loop index), the share of its QoS 0
// publishes it drops at ingest while the shared reader lags (readlag.go), 0–1.
func (srv *Server) ReadLagShed() []float64 {
	srv.loopMu.Lock()
	loops := srv.order
	srv.loopMu.Unlock()
	out := make([]float64, len(loops))
	for i, l := range loops {
		out[i] = l.shed.share()
	}
	return out
}

// State is what the instance holds right now.
type State struct {
	SessionsLocal int // sessions in this instance's memory: connected, and persistent ones offline
	SessionsKnown int // clients the sessions topic knows (every instance's)
	Subscriptions int // entries in the subscription index, offline persistent sessions' included
	Retained      int // retained messages in the index
}

// State counts sessions, subscriptions and retained messages. It takes the registry, store, trie and retained
// locks one after the other, briefly: call it per scrape, not per message.
func (srv *Server) State() State {
	srv.regMu.Lock()
	local := len(srv.sessions)
	srv.regMu.Unlock()
	return State{SessionsLocal: local, SessionsKnown: srv.store.Count(), Subscriptions: srv.trie.size(),
		Retained: srv.RetainedCount()}
}
