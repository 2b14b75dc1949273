package server

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/ratelimit"
	"github.com/ferrymq/ferry/server/transport"
)

// Limits at the edge, besides the per-connection budgets of options.go:
//
//   - --max-connection-rate: CONNECTs per second per source address (IPv4 address, or IPv6 /64 — one host or
//     customer usually holds a whole /64, so counting single IPv6 addresses would let one host rotate through
//     2^64 of them), with a burst. Over it a v5 client gets CONNACK 0x9F Connection Rate Exceeded, a v3
//     client return code 3. The check is made at CONNECT, not when the socket opens, because only a CONNACK
//     can say why; it costs one hash, one striped lock and a few compares, after the CONNECT is decoded
//     (decoding is a bounded, allocation-light parse of bytes already read; the CONNECT timeout bounds what
//     a socket that never sends one can cost).
//   - --max-publish-rate: PUBLISH packets per second per connection, with a burst. Over it the connection is
//     first slowed: its packets stay unread until a one-second tick of its loop has refilled the bucket
//     (gnet keeps buffering what the socket receives, so bytes piling up past the inbound budget end it). A
//     client that is still over the rate after the grace period (5 s by default) is disconnected: v5 with
//     DISCONNECT 0x96 Message Rate Too High, v3 by closing the socket.
//
// Both are token buckets. Refusals are counted by reason code (ferry_connects_refused_total{code="0x9F"},
// ferry_protocol_errors_total{code="0x96"}), throttling and table evictions in limitMetrics.

// limitMetrics are the counters of the rate limits.
type limitMetrics struct {
	pubThrottled   atomic.Uint64 // times a connection was paused for going over --max-publish-rate
	rateEvictions  atomic.Uint64 // connection-rate entries dropped while still limiting, to make room
	drainRedirects atomic.Uint64 // clients told DISCONNECT 0x9C with a Server Reference by a drain
}

// LimitStats are the counters of the rate limits and of redirects.
type LimitStats struct {
	PublishThrottled        uint64 // connections paused for exceeding the publish rate
	ConnectionRateEvictions uint64 // source addresses forgotten while still limited because the table was full
	DrainRedirects          uint64 // v5 clients sent to another instance by a drain (DISCONNECT 0x9C)
}

// Limits returns the counters of the rate limits and redirects.
func (m *Metrics) Limits() LimitStats {
	return LimitStats{PublishThrottled: m.limits.pubThrottled.Load(),
		ConnectionRateEvictions: m.limits.rateEvictions.Load(), DrainRedirects: m.limits.drainRedirects.Load()}
}

// MaxConnectionRate limits new connections per source address (IPv4 address or IPv6 /64) to perSecond per
// second, with bursts of burst (0 = one second's worth, at least 1). CONNECTs over it get CONNACK 0x9F (v5) /
// return code 3 (v3). Default 0 = no limit. Up to 65,536 source addresses are tracked at once (about 1.6 MB);
// see ratelimit.ConnTable.
func MaxConnectionRate(perSecond float64, burst int) Opt {
	return opt(func(c *cfg) { c.connRate, c.connBurst = perSecond, burst })
}

// MaxPublishRate limits the PUBLISH packets of one connection to perSecond per second, with bursts of burst
// (0 = one second's worth, at least 1). A connection over it is not read until its loop's next one-second
// tick refills the bucket; one still over it after grace (0 = 5 s) is disconnected (v5: DISCONNECT 0x96).
// Default 0 = no limit.
func MaxPublishRate(perSecond float64, burst int, grace time.Duration) Opt {
	return opt(func(c *cfg) { c.pubRate, c.pubBurst, c.pubGrace = perSecond, burst, grace })
}

// validateLimits checks the rate limit and redirect settings. Called by cfg.validate.
func (c *cfg) validateLimits() error {
	switch {
	case c.connRate < 0 || math.IsNaN(c.connRate) || math.IsInf(c.connRate, 0):
		return fmt.Errorf("max connection rate must be 0 (off) or a positive number per second, not %v", c.connRate)
	case c.connBurst < 0:
		return fmt.Errorf("connection burst must not be negative, not %d", c.connBurst)
	case c.pubRate < 0 || math.IsNaN(c.pubRate) || math.IsInf(c.pubRate, 0):
		return fmt.Errorf("max publish rate must be 0 (off) or a positive number per second, not %v", c.pubRate)
	case c.pubRate > 0 && c.pubRate < 0.001:
		return fmt.Errorf("max publish rate must be at least 0.001 per second, not %v", c.pubRate)
	case c.pubBurst < 0 || c.pubBurst > 1<<20:
		return fmt.Errorf("publish burst must be 0 to %d, not %d", 1<<20, c.pubBurst)
	case c.pubGrace < 0:
		return fmt.Errorf("publish rate grace must not be negative, not %v", c.pubGrace)
	}
	return c.validateRedirect()
}

// connectRateOK applies --max-connection-rate to c's CONNECT. Runs on c's loop.
func (c *conn) connectRateOK() bool {
	t := c.l.srv.connRate
	if t == nil {
		return true
	}
	return t.Allow(transport.AddrPort(c.remoteAddr()).Addr(), time.Now().UnixNano())
}

// --- Publish rate per connection ---

// pubLimit is the publish token bucket of one connection, kept only when --max-publish-rate is set, in its
// loop's pubLimits map rather than in conn: conn is on every idle connection's budget (its malloc size class
// is full), while this costs only the connections of an instance that enables the limit, about 80 bytes
// each, and one map lookup per PUBLISH (no allocation after the connection's first). Tokens are counted in
// thousandths of a message and refilled from the loop's one-second clock (l.now), so a PUBLISH costs no
// clock read: the bucket is refilled in one-second steps, which is as fine as the resume tick anyway.
type pubLimit struct {
	milli     int64 // tokens × 1000
	at        int64 // loop second of the last refill
	overSince int64 // loop second the current excess began; 0 = not over
	lastOver  int64 // loop second the connection was last throttled
	throttled bool  // paused by the rate (listed in l.throttled)
}

// refill adds the tokens earned since the last refill. Runs on the loop.
func (p *pubLimit) refill(now int64, cfg *cfg) {
	if now > p.at {
		p.milli = min(int64(ratelimit.Burst(cfg.pubRate, cfg.pubBurst)*1000), p.milli+(now-p.at)*int64(cfg.pubRate*1000))
		p.at = now
	}
}

// errMessageRate ends a connection that stayed over --max-publish-rate for the grace period.
var errMessageRate = refuse(mqttcodec.PUBLISH, mqttcodec.MessageRateTooHigh,
	"publish rate above the server's limit for too long")

// publishRate takes a token for one PUBLISH. Out of tokens, the publish is still handled, but nothing more
// is read from the connection until a tick refills its bucket (resumeThrottled); a connection still over
// the rate after the grace period gets errMessageRate, which protocolError turns into DISCONNECT 0x96 (v5)
// or a close (v3). Runs on the loop; allocates only at a connection's first PUBLISH.
func (c *conn) publishRate() error {
	l := c.l
	cfg := &l.srv.cfg
	p := l.pubLimits[c]
	if p == nil {
		p = &pubLimit{milli: int64(ratelimit.Burst(cfg.pubRate, cfg.pubBurst) * 1000), at: l.now}
		if l.pubLimits == nil {
			l.pubLimits = make(map[*conn]*pubLimit)
		}
		l.pubLimits[c] = p
	}
	p.refill(l.now, cfg)
	if p.milli >= 1000 {
		p.milli -= 1000
		return nil
	}
	// Over the rate: a new excess starts unless the previous throttle was just before (it is still the
	// same excess, read again after a tick).
	if p.overSince == 0 || l.now-p.lastOver > 2 {
		p.overSince = l.now
	}
	p.lastOver = l.now
	grace := cfg.pubGrace
	if grace == 0 {
		grace = 5 * time.Second
	}
	if l.now-p.overSince >= int64(grace/time.Second) {
		return errMessageRate
	}
	if !p.throttled {
		p.throttled = true
		l.throttled = append(l.throttled, c)
		l.srv.metrics.limits.pubThrottled.Add(1)
	}
	c.paused = true
	return nil
}

// throttled reports whether c is paused by its publish rate. Runs on the loop.
func (c *conn) throttled() bool {
	if c.l.pubLimits == nil {
		return false
	}
	p := c.l.pubLimits[c]
	return p != nil && p.throttled
}

// forgetLimits drops the per-connection limit state of a closed connection. Runs on the loop.
func (c *conn) forgetLimits() {
	if c.l.pubLimits != nil {
		delete(c.l.pubLimits, c)
	}
}

// resumeThrottled reads again from the connections whose publish bucket has refilled. Runs on the loop's
// one-second tick.
func (l *loop) resumeThrottled() {
	if len(l.throttled) == 0 {
		return
	}
	keep := l.throttled[:0]
	var resume []*conn
	for _, c := range l.throttled {
		p := l.pubLimits[c]
		if c.closed || p == nil {
			continue
		}
		p.refill(l.now, &l.srv.cfg)
		if p.milli < 1000 {
			keep = append(keep, c)
			continue
		}
		p.throttled = false
		// The inbound QoS>0 window may still hold a v3 client (pauseIfFull); flushAcks lifts that pause.
		c.paused = c.version < mqttcodec.Version5 && c.toKafka() >= int(l.srv.cfg.receiveMaximum)
		resume = append(resume, c)
	}
	clear(l.throttled[len(keep):])
	l.throttled = keep
	for _, c := range resume {
		if !c.closed {
			c.service()
		}
	}
}

// pausedOverflow ends a paused connection whose client keeps sending past what the server buffers for it:
// gnet goes on reading a socket whose packets Ferry does not handle, so this is what bounds that memory.
// Runs on the loop.
func (c *conn) pausedOverflow() {
	cfg := &c.l.srv.cfg
	if c.closed || c.inboundBuffered() <= cfg.maxPacketSize+2*cfg.outboundBudget {
		return
	}
	if c.throttled() {
		c.l.srv.warn("closing connection: client keeps publishing above the rate limit", "client", c.clientID())
		c.protocolError(errMessageRate)
		return
	}
	c.l.srv.warn("closing connection: client exceeds the in-flight window", "client", c.clientID())
	c.closeWhy = closeQuota
	c.close()
}
