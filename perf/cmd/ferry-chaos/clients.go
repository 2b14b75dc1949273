package main

import (
	"encoding/binary"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/perf/internal/stats"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

// pubCfg configures one publishing client.
type pubCfg struct {
	target, src string
	cid, topic  string
	pub         uint32 // publisher id stamped into every payload
	qos         byte
	retain      bool
	clean       bool
	keepAlive   uint16        // seconds; PINGREQ after keepAlive/2 without a write
	rate        float64       // msg/s; 0 = as fast as the window allows
	window      int           // unacknowledged QoS 1/2 messages at most
	payload     int           // bytes (at least the stamp)
	maxMsgs     uint64        // 0 = unbounded (the run's duration bounds it)
	reconnect   bool          // reconnect after the connection dropped (else the client ends)
	retryEvery  time.Duration // between failed connection attempts
}

type flight struct {
	seq  uint64
	sent int64
	rel  bool // PUBREC received, PUBREL sent: waiting for PUBCOMP
}

// pubClient publishes numbered messages to one topic and keeps every in-flight message until its
// acknowledgement, re-sending them (DUP, or PUBREL) after a reconnect as MQTT requires [MQTT-4.4.0-1].
type pubClient struct {
	cfg   pubCfg
	onAck func(k ackKey, latNs int64) // a QoS 1 PUBACK or QoS 2 PUBREC; runs on the reader goroutine

	mu      sync.Mutex
	fl      map[uint16]*flight
	seq     uint64
	nextPID uint16
	wake    chan struct{}
	pingAt  atomic.Int64 // unix ns of the unanswered PINGREQ, 0 = none

	sent, acked, connects, disconnects, sessionLost, pingTimeouts, connectFails atomic.Int64
	lastErr                                                                     atomic.Value // string
}

func newPub(cfg pubCfg, onAck func(ackKey, int64)) *pubClient {
	if cfg.window <= 0 {
		cfg.window = 1
	}
	if cfg.payload < stats.PayloadHeader {
		cfg.payload = stats.PayloadHeader
	}
	if cfg.retryEvery == 0 {
		cfg.retryEvery = 100 * time.Millisecond
	}
	return &pubClient{cfg: cfg, onAck: onAck, fl: map[uint16]*flight{}, wake: make(chan struct{}, 1)}
}

func (p *pubClient) inflight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.fl)
}

// connectRetry connects until it succeeds or hardStop closes (nil then).
func connectRetry(target, src string, c wire.Connect, retry time.Duration, hardStop <-chan struct{}, fails *atomic.Int64, lastErr *atomic.Value) (*mconn, bool) {
	for {
		m, sp, err := connect(target, src, c, 5*time.Second)
		if err == nil {
			return m, sp
		}
		fails.Add(1)
		lastErr.Store(err.Error())
		select {
		case <-hardStop:
			return nil, false
		case <-time.After(retry + time.Duration(rand.Int64N(int64(retry)+1))):
		}
	}
}

// run publishes until stop closes (or maxMsgs are sent), then waits for the in-flight messages to be
// acknowledged, reconnecting if needed, until hardStop closes.
func (p *pubClient) run(stop, hardStop <-chan struct{}) {
	everConnected := false
	for {
		m, sp := connectRetry(p.cfg.target, p.cfg.src, wire.Connect{ClientID: p.cfg.cid, KeepAlive: p.cfg.keepAlive, CleanSession: p.cfg.clean},
			p.cfg.retryEvery, hardStop, &p.connectFails, &p.lastErr)
		if m == nil {
			return
		}
		p.connects.Add(1)
		if everConnected && !p.cfg.clean && !sp {
			p.sessionLost.Add(1)
		}
		everConnected = true
		p.pingAt.Store(0)
		dead := make(chan struct{})
		go p.read(m, dead)
		finished := p.resend(m) == nil && p.loop(m, dead, stop, hardStop)
		if finished {
			_ = m.write(wire.AppendDisconnect(nil))
			m.close()
			<-dead
			return
		}
		m.close()
		<-dead
		p.disconnects.Add(1)
		if !p.cfg.reconnect {
			return
		}
		select {
		case <-hardStop:
			return
		default:
		}
	}
}

func (p *pubClient) resend(m *mconn) error {
	p.mu.Lock()
	fs := make([]*flight, 0, len(p.fl))
	pids := map[*flight]uint16{}
	for pid, f := range p.fl {
		fs = append(fs, f)
		pids[f] = pid
	}
	p.mu.Unlock()
	sort.Slice(fs, func(i, j int) bool { return fs[i].seq < fs[j].seq })
	var b []byte
	for _, f := range fs {
		if f.rel {
			b = wire.AppendAck(b, wire.PUBREL, pids[f])
		} else {
			b = wire.AppendPublish(b, p.cfg.topic, p.cfg.qos, p.cfg.retain, true, pids[f], p.payload(f.seq, f.sent))
		}
	}
	if len(b) == 0 {
		return nil
	}
	return m.write(b)
}

func (p *pubClient) payload(seq uint64, sent int64) []byte {
	b := make([]byte, p.cfg.payload)
	stats.PutStamp(b, stats.Stamp{SentNs: sent, Pub: p.cfg.pub, Seq: seq})
	return b
}

// loop publishes on m; it returns true when the client is done (stopped and drained, or hardStop), false
// when the connection died.
func (p *pubClient) loop(m *mconn, dead, stop, hardStop <-chan struct{}) bool {
	var interval time.Duration
	if p.cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / p.cfg.rate)
	}
	next := time.Now()
	for {
		select {
		case <-dead:
			return false
		case <-hardStop:
			return true
		default:
		}
		p.keepAlive(m)
		stopping := isClosed(stop) || (p.cfg.maxMsgs > 0 && uint64(p.sent.Load()) >= p.cfg.maxMsgs)
		n := p.inflight()
		if stopping {
			if n == 0 || p.cfg.qos == 0 {
				return true
			}
			p.wait(dead, hardStop, 100*time.Millisecond)
			continue
		}
		if p.cfg.qos > 0 && n >= p.cfg.window {
			p.wait(dead, hardStop, 100*time.Millisecond)
			continue
		}
		if interval > 0 {
			now := time.Now()
			if d := next.Sub(now); d > 0 {
				select {
				case <-dead:
					return false
				case <-hardStop:
					return true
				case <-stop:
					continue
				case <-time.After(d):
				}
			}
			next = next.Add(interval)
			if late := time.Now().Add(-time.Second); next.Before(late) {
				next = late // after a stall, catch up by at most one second's worth
			}
		}
		if err := p.publishOne(m); err != nil {
			return false
		}
	}
}

func (p *pubClient) wait(dead, hardStop <-chan struct{}, d time.Duration) {
	select {
	case <-p.wake:
	case <-dead:
	case <-hardStop:
	case <-time.After(d):
	}
}

func (p *pubClient) keepAlive(m *mconn) {
	if p.cfg.keepAlive == 0 {
		return
	}
	now := time.Now().UnixNano()
	ka := int64(p.cfg.keepAlive) * int64(time.Second)
	if at := p.pingAt.Load(); at != 0 {
		if now-at > ka && p.pingAt.CompareAndSwap(at, -at) { // counted once per PINGREQ
			p.pingTimeouts.Add(1)
		}
		return
	}
	if now-m.lastOut.Load() >= ka/2 {
		p.pingAt.Store(now)
		_ = m.write(wire.AppendPingreq(nil))
	}
}

func (p *pubClient) publishOne(m *mconn) error {
	sent := stats.NowNs()
	p.mu.Lock()
	seq := p.seq
	p.seq++
	var pid uint16
	if p.cfg.qos > 0 {
		for {
			p.nextPID++
			if p.nextPID == 0 {
				p.nextPID = 1
			}
			if p.fl[p.nextPID] == nil {
				break
			}
		}
		pid = p.nextPID
		p.fl[pid] = &flight{seq: seq, sent: sent}
	}
	p.mu.Unlock()
	p.sent.Add(1)
	return m.write(wire.AppendPublish(nil, p.cfg.topic, p.cfg.qos, p.cfg.retain, false, pid, p.payload(seq, sent)))
}

func (p *pubClient) read(m *mconn, dead chan struct{}) {
	defer close(dead)
	for {
		f, err := m.next()
		if err != nil {
			if !m.closed.Load() {
				p.lastErr.Store("read: " + err.Error())
			}
			return
		}
		switch f.Type {
		case wire.PINGRESP:
			p.pingAt.Store(0)
		case wire.PUBACK, wire.PUBREC, wire.PUBCOMP:
			pid, err := wire.AckPID(f)
			if err != nil {
				return
			}
			now := stats.NowNs()
			p.mu.Lock()
			fl := p.fl[pid]
			var k ackKey
			ack := false
			switch {
			case fl == nil:
			case f.Type == wire.PUBACK && p.cfg.qos == 1:
				delete(p.fl, pid)
				ack = true
			case f.Type == wire.PUBREC && p.cfg.qos == 2 && !fl.rel:
				fl.rel = true
				ack = true
			case f.Type == wire.PUBCOMP && p.cfg.qos == 2 && fl.rel:
				delete(p.fl, pid)
			}
			if ack {
				k = ackKey{qos: p.cfg.qos, pub: p.cfg.pub, seq: fl.seq}
			}
			p.mu.Unlock()
			if f.Type == wire.PUBREC {
				_ = m.write(wire.AppendAck(nil, wire.PUBREL, pid)) // [MQTT-4.3.3-3], also for a repeated PUBREC
			}
			if ack {
				p.acked.Add(1)
				if p.onAck != nil {
					p.onAck(k, now-fl.sent)
				}
			}
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// message is a PUBLISH a subscriber received, its bytes copied.
type message struct {
	topic   string
	payload []byte
	qos     byte
	dup     bool
	retain  bool
	at      int64
}

// subCfg configures one subscribing client.
type subCfg struct {
	target, src string
	cid         string
	filters     []string
	qos         byte
	clean       bool
	keepAlive   uint16
	reconnect   bool
	cycle       time.Duration // > 0: disconnect and reconnect after a random time in [cycle, 2·cycle)
	retryEvery  time.Duration
}

// subClient subscribes once (a persistent session keeps its subscriptions: a reconnect does not subscribe
// again, so a lost subscription shows as messages that never arrive) and acknowledges every delivery.
type subClient struct {
	cfg    subCfg
	onMsg  func(message) // runs on the reader goroutine
	onConn func(*mconn)  // called with every new connection once subscribed (may be nil)

	subscribed bool
	pingAt     atomic.Int64

	connects, disconnects, sessionLost, pingTimeouts, connectFails, received atomic.Int64
	lastConnect                                                              atomic.Int64 // unix ns
	lastErr                                                                  atomic.Value
	ready                                                                    chan struct{} // closed after the first SUBACK
	readyOnce                                                                sync.Once
}

func newSub(cfg subCfg, onMsg func(message)) *subClient {
	if cfg.retryEvery == 0 {
		cfg.retryEvery = 100 * time.Millisecond
	}
	return &subClient{cfg: cfg, onMsg: onMsg, ready: make(chan struct{})}
}

// run keeps the subscriber connected until stop closes.
func (s *subClient) run(stop <-chan struct{}) {
	everConnected := false
	for {
		m, sp := connectRetry(s.cfg.target, s.cfg.src, wire.Connect{ClientID: s.cfg.cid, KeepAlive: s.cfg.keepAlive, CleanSession: s.cfg.clean},
			s.cfg.retryEvery, stop, &s.connectFails, &s.lastErr)
		if m == nil {
			return
		}
		s.connects.Add(1)
		s.lastConnect.Store(time.Now().UnixNano())
		if everConnected && !s.cfg.clean && !sp {
			s.sessionLost.Add(1)
		}
		everConnected = true
		if s.cfg.clean || !s.subscribed {
			if err := m.subscribe(1, s.cfg.qos, 10*time.Second, func(f wire.Frame) { s.handle(m, f) }, s.cfg.filters...); err != nil {
				s.lastErr.Store(err.Error())
				m.close()
				s.disconnects.Add(1)
				if !s.cfg.reconnect {
					return
				}
				continue
			}
			s.subscribed = true
		}
		s.readyOnce.Do(func() { close(s.ready) })
		if s.onConn != nil {
			s.onConn(m)
		}
		s.pingAt.Store(0)
		dead := make(chan struct{})
		go s.read(m, dead)
		var cycle <-chan time.Time
		if s.cfg.cycle > 0 {
			cycle = time.After(s.cfg.cycle + time.Duration(rand.Int64N(int64(s.cfg.cycle))))
		}
		tick := time.NewTicker(250 * time.Millisecond)
	conn:
		for {
			select {
			case <-stop:
				tick.Stop()
				_ = m.write(wire.AppendDisconnect(nil))
				m.close()
				<-dead
				return
			case <-cycle:
				_ = m.write(wire.AppendDisconnect(nil))
				m.close()
				<-dead
				break conn
			case <-dead:
				m.close()
				s.disconnects.Add(1)
				break conn
			case <-tick.C:
				s.keepAlive(m)
			}
		}
		tick.Stop()
		if !s.cfg.reconnect && cycle == nil {
			return
		}
	}
}

func (s *subClient) keepAlive(m *mconn) {
	if s.cfg.keepAlive == 0 {
		return
	}
	now := time.Now().UnixNano()
	ka := int64(s.cfg.keepAlive) * int64(time.Second)
	if at := s.pingAt.Load(); at != 0 {
		if now-at > ka && s.pingAt.CompareAndSwap(at, -at) {
			s.pingTimeouts.Add(1)
		}
		return
	}
	if now-m.lastOut.Load() >= ka/2 {
		s.pingAt.Store(now)
		_ = m.write(wire.AppendPingreq(nil))
	}
}

func (s *subClient) read(m *mconn, dead chan struct{}) {
	defer close(dead)
	for {
		f, err := m.next()
		if err != nil {
			if !m.closed.Load() {
				s.lastErr.Store("read: " + err.Error())
			}
			return
		}
		s.handle(m, f)
	}
}

func (s *subClient) handle(m *mconn, f wire.Frame) {
	switch f.Type {
	case wire.PINGRESP:
		s.pingAt.Store(0)
	case wire.PUBREL:
		if pid, err := wire.AckPID(f); err == nil {
			_ = m.write(wire.AppendAck(nil, wire.PUBCOMP, pid))
		}
	case wire.PUBLISH:
		p, err := wire.ParsePublish(f)
		if err != nil {
			return
		}
		msg := message{topic: string(p.Topic), payload: append([]byte(nil), p.Payload...), qos: p.QoS, dup: p.Dup, retain: p.Retain, at: stats.NowNs()}
		s.received.Add(1)
		if s.onMsg != nil {
			s.onMsg(msg)
		}
		switch p.QoS {
		case 1:
			_ = m.write(wire.AppendAck(nil, wire.PUBACK, p.PID))
		case 2:
			_ = m.write(wire.AppendAck(nil, wire.PUBREC, p.PID))
		}
	}
}

// stampOf reads the stamp of a payload.
func stampOf(b []byte) (stats.Stamp, bool) { return stats.ReadStamp(b) }

var _ = binary.BigEndian
