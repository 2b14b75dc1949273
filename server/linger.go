package server

import (
	"golang.org/x/sys/unix"

	"github.com/panjf2000/gnet/v2"
)

// Lingering close: a DISCONNECT (or CONNACK refusal) the client can read.
//
// When Ferry ends a connection with a reason code while the client is still sending — it pipelines QoS 2
// PUBLISHes past the Receive Maximum (0x93), sends a packet over the Maximum Packet Size (0x95), or its
// CONNECT is refused — closing the socket at once with the client's bytes unread makes the kernel answer with
// a reset (RFC 1122 4.2.2.13), and a reset makes the client's kernel drop what it received but the client has
// not read yet: the DISCONNECT. So, as HTTP servers do:
//
//  1. the reason is written and the MQTT side of the connection ends at once, as with close (the session is
//     detached, the will decided, metrics counted): nothing MQTT happens on the socket after this;
//  2. once gnet's outbound buffer is empty, the write side is shut (FIN after the reason);
//  3. whatever the client still sends is read and discarded, for at most LingerTimeout and LingerBytes — but a
//     client that floods past LingerBytes still gets a full second before the close (lingerBytesSpent): a
//     reset sent while its reader has not yet read the reason would destroy the reason;
//  4. then, or when the client closes its side, the socket is closed.
//
// On TLS and WebSocket connections the layers' goodbye (close_notify, a close frame) goes out before the FIN,
// as with close; what the client sends afterwards is discarded undecoded.
//
// Bounded: each event loop lingers at most LingerMax / event loops sockets at once; past that a connection is
// closed at once as before. A flood of refused connections holds a socket for at most LingerTimeout (rounded up to the loop's
// one-second tick) and costs only the discarded reads.
//
// Everything here runs on the connection's event loop.

// closeLinger ends c after a reason was written to it (see the file comment); it falls back to close. The
// session lock must not be held: the session is detached here (endSession).
func (c *conn) closeLinger() {
	l := c.l
	cfg := &l.srv.cfg
	if c.closed {
		return
	}
	if cfg.lingerTimeout <= 0 || l.lingering >= cfg.lingerPerLoop() {
		if cfg.lingerTimeout > 0 {
			l.srv.metrics.lingerSkipped.Add(1)
		}
		c.close()
		return
	}
	c.flushOut()
	if c.tr != nil {
		c.tr.Goodbye() // TLS close_notify, WebSocket close frame: before the FIN, as close does
	}
	c.closed = true
	c.phase = phaseLinger
	l.lingering++
	l.srv.metrics.lingering.Add(1)
	// The MQTT connection ends now, as in OnClose; the socket stays open to be read.
	l.srv.metrics.connClosed(c)
	c.forgetLimits()
	c.endSession()
	c.lastRead = l.now // when the linger began
	c.lingerBytes = 0
	// What gnet already holds is the caller's to consume; later reads are discarded (lingerTraffic).
	c.shutWrite()
	l.wheel.schedule(c, c.lingerDeadline())
}

// lingerDeadline is the second at which a lingering c is closed whatever happens.
func (c *conn) lingerDeadline() int64 {
	return c.lastRead + int64(c.l.srv.cfg.lingerTimeout.Seconds()+0.999)
}

// lingerTraffic runs from OnTraffic for a lingering c: the client's bytes are discarded. It reports gnet.Close
// once the bytes allowed are used up.
func (c *conn) lingerTraffic() gnet.Action {
	c.discardInbound()
	c.shutWrite()
	if c.lingerBytesSpent() {
		return gnet.Close
	}
	return gnet.None
}

// lingerBytesSpent reports whether a lingering c has sent more than LingerBytes and has had at least a whole
// second (two ticks of the loop's one-second clock) to read the reason: a client flooding the socket is
// usually also slow to read, and closing with its bytes unread sends the reset that drops the reason.
func (c *conn) lingerBytesSpent() bool {
	return int(c.lingerBytes) > c.l.srv.cfg.lingerBytes && c.l.now-c.lastRead >= 2
}

// discardInbound drops what gnet holds for c, counting it against the linger's bytes.
func (c *conn) discardInbound() {
	if n := c.gc.InboundBuffered(); n > 0 {
		_, _ = c.gc.Discard(n)
		c.lingerBytes = int32(min(int64(c.lingerBytes)+int64(n), 1<<30))
	}
}

// shutWrite half-closes c's socket once gnet has sent everything written to it: the client reads the reason,
// then end-of-stream. Until then it is retried on the next read or tick.
func (c *conn) shutWrite() {
	if c.halfClosed || c.gc.OutboundBuffered() > 0 {
		return
	}
	c.halfClosed = true
	_ = unix.Shutdown(c.gc.Fd(), unix.SHUT_WR)
}

// lingerTick runs when a lingering c's wheel slot comes round: close at the deadline, else try the half-close
// again a second later.
func (c *conn) lingerTick() {
	if c.l.now >= c.lingerDeadline() || c.lingerBytesSpent() {
		_ = c.gc.Close()
		return
	}
	c.shutWrite()
	next := c.lingerDeadline()
	if !c.halfClosed {
		next = c.l.now + 1
	}
	c.l.wheel.schedule(c, next)
}

// lingerClosed runs from OnClose for a connection that lingered: its MQTT end was done by closeLinger.
func (c *conn) lingerClosed() {
	// Out of the wheel's reach: the socket is gone and its descriptor may already be another connection's.
	c.phase = phaseClosing
	c.l.lingering--
	c.l.srv.metrics.lingering.Add(-1)
	if c.tr != nil {
		c.tr.Release()
	}
}

// lingerPerLoop is how many sockets one event loop may hold lingering at once.
func (c *cfg) lingerPerLoop() int {
	return (c.lingerMax + c.eventLoops - 1) / c.eventLoops
}
