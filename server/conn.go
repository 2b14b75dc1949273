package server

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/topicalias"
	"github.com/ferrymq/ferry/server/transport"
)

type connPhase uint8

const (
	phaseAwaitConnect connPhase = iota // socket open, no CONNECT yet
	phaseLoading                       // CONNECT read; the session is being handed over by another instance
	phaseConnected                     // CONNECT accepted
	phaseClosing                       // DISCONNECT sent or received; no more packets are read
	phaseLinger                        // MQTT ended; the socket is read and discarded until it closes (linger.go)
)

// conn is one MQTT network connection. All fields except notified are owned by the connection's event loop.
type conn struct {
	gc   gnet.Conn
	l    *loop
	sess *session

	phase      connPhase
	version    byte
	closed     bool
	blocked    bool        // holds publishes the lane refused (listed in l.blocked)
	paused     bool        // inbound QoS>0 window is full: further packets stay in gnet's buffer
	q0Held     bool        // its next packet, a QoS 0 PUBLISH, waits for Kafka or the shared reader (readlag_hold.go)
	closeWhy   uint8       // why Ferry closes it, for metrics (closeReason infers the rest)
	listener   uint8       // index of the listener that accepted it, for metrics
	disconnect bool        // a DISCONNECT was received: the end is normal
	halfClosed bool        // lingering: the write side is shut (linger.go)
	pwDone     bool        // the CONNECT's password was checked off the loop; c.auth holds the outcome (authz_password.go)
	unrecorded bool        // connected without an owner record (alone.go); set under the registry lock
	marked     bool        // its connection marker ("c:", sessions/conns.go) was written at CONNECT
	connectID  string      // the client id of a recorded CONNECT (connectSession): its owner record's and marker's
	flushing   bool        // flushOut is handing bytes to gnet, maybe under the session lock (OnClose)
	notified   atomic.Bool // queued in l.ready or l.urgent
	keepAlive  uint16      // seconds, 0 = none
	lastRead   int64       // unix seconds of the last packet
	wheelAt    int64       // the second of c's live entry in the loop's timing wheel
	epoch      int64       // unix nanoseconds of the CONNECT: orders connections of one client across instances
	newer      int64       // deciding: the epoch of a newer CONNECT of the client read meanwhile (newest.go); under regMu

	clientMaxPacket uint32            // from CONNECT; 0 = no limit
	clientRecvMax   uint16            // outbound QoS>0 window the client allows
	clientAliasMax  uint16            // the client's Topic Alias Maximum: outbound aliases it takes (0: none)
	aliases         map[uint16]string // inbound topic aliases
	outAlias        *topicalias.Out   // outbound topic aliases (alias_out.go); nil until the first one

	pq          *pubQueue // inbound QoS>0 publishes until their ack is written; nil when there are none
	lingerBytes int32     // lingering: bytes read and discarded (linger.go)

	held *heldAck             // a SUBACK/UNSUBACK waiting for its session record to be in Kafka: no packet is read meanwhile (subscribe.go)
	will *willMsg             // published if the connection ends abnormally
	tr   *transport.Transport // the layers under MQTT (PROXY, TLS, WebSocket); nil on plain TCP
	auth *principal           // authenticated client and its privileges (authz.go); nil when authorization is off
}

// OnOpen runs on the connection's event loop.
func (srv *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	l := srv.loopOf(gc.EventLoop())
	c := &conn{gc: gc, l: l, lastRead: l.now}
	gc.SetContext(c)
	srv.metrics.connOpened(c)
	if ls := &srv.specs[c.listener]; ls.Layered() {
		tr, err := transport.New(c, ls)
		if err != nil {
			srv.warn("connection refused by its listener", "listener", ls.URL(), "remote", gc.RemoteAddr().String(), "err", err)
			c.closeWhy = closeRefused
			c.closed = true
			return nil, gnet.Close
		}
		c.tr = tr
	}
	// A socket that sends no CONNECT within the timeout is closed (MQTT 5 §3.1.4, a SHOULD without a number).
	l.wheel.schedule(c, l.now+int64(srv.cfg.connectTimeout.Seconds()+0.999))
	return nil, gnet.None
}

// OnClose runs on the connection's event loop.
func (srv *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.None
	}
	if c.phase == phaseLinger {
		c.lingerClosed() // its MQTT end was done when the linger began
		return gnet.None
	}
	srv.metrics.connClosed(c) // before closed is set: it tells whether Ferry or the peer closed
	c.closed = true
	if c.tr != nil {
		c.tr.Release() // a TLS handshake goroutine waiting for bytes gives up
	}
	c.forgetLimits()
	if c.flushing {
		// gnet closes a socket whose write failed within that write, and flushOut runs under the session lock
		// (drain, close on a queue overflow): the end, which takes that lock, runs once the flush is over.
		c.l.post(task{c: c, kind: taskEnd})
		return gnet.None
	}
	c.endSession()
	return gnet.None
}

// OnTraffic runs on the connection's event loop: it decodes every whole packet buffered for the connection.
// Bytes from Peek are borrowed until Discard; anything that must outlive this call (a publish on its way to
// Kafka, a will, a client id) is copied before Discard.
func (srv *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c != nil && c.phase == phaseLinger {
		return c.lingerTraffic()
	}
	if c == nil || c.closed {
		return gnet.Close
	}
	c.l.now = time.Now().Unix()
	c.service()
	if c.closed && c.phase != phaseLinger {
		return gnet.Close
	}
	return gnet.None
}

// service writes completed acks and queued deliveries, then reads the buffered packets. Runs on the loop.
func (c *conn) service() {
	c.flushAcks()
	if !c.paused {
		c.readPackets()
	} else {
		c.pausedOverflow() // gnet keeps reading the socket: its buffer is bounded here (limits.go)
	}
	if c.phase == phaseConnected && !c.closed && (c.held == nil || !c.held.connack) {
		c.drain()
	}
	c.flushOut()
}

// readPackets decodes and handles the packets buffered for c until it runs out, pauses or closes.
func (c *conn) readPackets() {
	// A transport takes a bounded chunk of the socket's bytes per step: read on while the socket holds more.
	// Bytes a layer left between layers (below a top layer that stopped at the packet bound) count too.
	for c.readBuffered() > 0 && c.tr != nil && !c.closed && (c.gc.InboundBuffered() > 0 || c.tr.BelowMQTT() > 0) {
	}
}

// readBuffered handles the whole packets inbound holds and returns how many bytes it used.
func (c *conn) readBuffered() int {
	// A transport failure still lets the packets that arrived before it be handled: a DISCONNECT followed by a
	// WebSocket close frame in one segment is a normal end, not a lost client.
	buf, terr := c.inbound()
	used := 0
	if c.q0Held && c.inboundBuffered() > holdMaxBytes {
		c.q0Held = false // the client does not wait for its answers: read on, and drop (readlag_hold.go)
	}
	for !c.closed && !c.paused && !c.q0Held && c.held == nil && c.phase != phaseClosing && c.phase != phaseLoading {
		max := c.l.srv.cfg.maxPacketSize
		fh, body, n, err := mqttcodec.Frame(buf[used:], max)
		if errors.Is(err, mqttcodec.ErrIncomplete) {
			break
		}
		if err != nil {
			c.protocolError(err)
			break
		}
		if c.phase == phaseAwaitConnect && fh.Type != mqttcodec.CONNECT {
			// [MQTT-3.1.0-1] the first packet must be CONNECT.
			c.protocolError(refuse(fh.Type, mqttcodec.ProtocolError,
				"first packet is "+mqttcodec.TypeName(fh.Type)+", not CONNECT"))
			break
		}
		if fh.Type == mqttcodec.PUBLISH && fh.PublishQoS() == 0 && c.holdQoS0() {
			break // it would be late: the PUBLISH stays buffered (readlag_hold.go)
		}
		if err := c.handle(fh, body); err != nil {
			c.protocolError(err)
			break
		}
		used += n
		if c.phase == phaseConnected {
			// Keep-alive counts whole control packets, not bytes [MQTT-3.1.2-22]; before CONNECT the socket
			// is timed from its opening, so a CONNECT sent byte by byte cannot hold it open.
			c.lastRead = c.l.now
		}
	}
	if used > 0 {
		c.consumed(used)
		c.l.srv.metrics.bytesIn.Add(uint64(used))
	}
	if c.paused || c.held != nil {
		// A v3 client keeps sending past the window the server can take, or a client past its publish rate,
		// or while its SUBACK waits for Kafka: its bytes are not buffered without bound (limits.go).
		c.pausedOverflow()
	}
	if terr != nil {
		if !c.closed {
			c.transportError(terr)
		}
		return 0
	}
	return used
}

// transportError ends a connection whose transport failed: a TLS alert, a broken WebSocket frame, a bad PROXY
// header. No MQTT DISCONNECT can be sent through a broken transport.
func (c *conn) transportError(err error) {
	if errors.Is(err, transport.ErrClosedByPeer) {
		c.closeWhy = closeClientGone
	} else {
		c.l.srv.metrics.transportErrors.Add(1)
		c.closeWhy = closeProtocolError
		if c.l.srv.debugOn() {
			c.l.srv.debug("closing connection on a transport error", "client", c.clientID(), "remote", c.remoteAddr().String(), "err", err)
		}
	}
	c.close()
}

// handle dispatches one packet. Runs on the loop; body is borrowed until the caller's Discard.
func (c *conn) handle(fh mqttcodec.FixedHeader, body []byte) error {
	l := c.l
	switch fh.Type {
	case mqttcodec.CONNECT:
		if c.phase != phaseAwaitConnect {
			// [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
			return refuse(fh.Type, mqttcodec.ProtocolError, "second CONNECT on a connection")
		}
		l.conn.Reset()
		l.connFH, l.connBody = fh, body // a password check copies them (authz_password.go)
		if err := l.conn.Decode(fh, body); err != nil {
			return c.connectError(&l.conn, err)
		}
		err := c.onConnect(&l.conn)
		l.connBody = nil
		return err
	case mqttcodec.PUBLISH:
		l.pub.Reset()
		if err := l.pub.Decode(fh, body, c.version); err != nil {
			return err
		}
		return c.onPublish(&l.pub)
	case mqttcodec.PUBACK, mqttcodec.PUBREC, mqttcodec.PUBREL, mqttcodec.PUBCOMP:
		l.ack.Reset()
		if err := l.ack.Decode(fh, body, c.version); err != nil {
			return err
		}
		return c.onAck(&l.ack)
	case mqttcodec.SUBSCRIBE:
		l.sub.Reset()
		if err := l.sub.Decode(fh, body, c.version); err != nil {
			return err
		}
		return c.onSubscribe(&l.sub)
	case mqttcodec.UNSUBSCRIBE:
		l.unsub.Reset()
		if err := l.unsub.Decode(fh, body, c.version); err != nil {
			return err
		}
		return c.onUnsubscribe(&l.unsub)
	case mqttcodec.PINGREQ:
		if fh.Remaining != 0 {
			return refuse(fh.Type, mqttcodec.MalformedPacket, "PINGREQ with a body")
		}
		l.out = mqttcodec.AppendPingresp(l.out) // [MQTT-3.12.4-1]
		return nil
	case mqttcodec.DISCONNECT:
		l.disc.Reset()
		if err := l.disc.Decode(fh, body, c.version); err != nil {
			return err
		}
		return c.onDisconnect(&l.disc)
	case mqttcodec.AUTH:
		if c.version < mqttcodec.Version5 {
			return refuse(fh.Type, mqttcodec.MalformedPacket, "AUTH is not a v3 packet")
		}
		l.auth.Reset()
		if err := l.auth.Decode(fh, body, c.version); err != nil {
			return err
		}
		// Ferry offers no enhanced authentication method, so no AUTH exchange can have started.
		return refuse(fh.Type, mqttcodec.ProtocolError, "AUTH without an authentication method")
	default:
		// CONNACK, SUBACK, UNSUBACK, PINGRESP are server-to-client only.
		return refuse(fh.Type, mqttcodec.ProtocolError, mqttcodec.TypeName(fh.Type)+" is not sent by clients")
	}
}

// protocolError answers a malformed or forbidden packet: a v5 client gets DISCONNECT with the reason code
// [MQTT-4.13.1-1], a v3 client is simply disconnected, as its protocol prescribes.
func (c *conn) protocolError(err error) {
	reason := mqttcodec.ReasonOf(err)
	c.l.srv.metrics.protocolError(c, reason)
	c.l.srv.debug("closing connection on protocol error", "client", c.clientID(), "err", err)
	if c.phase == phaseConnected && c.version >= mqttcodec.Version5 {
		c.sendDisconnect(reason, err.Error())
		c.closeLinger() // the client may still be sending: it must be able to read the reason (linger.go)
		return
	}
	c.close()
}

// sendDisconnect writes a v5 DISCONNECT. Runs on the loop.
func (c *conn) sendDisconnect(reason mqttcodec.ReasonCode, why string) {
	c.sendDisconnectRef(reason, why, "")
}

// sendDisconnectRef writes a v5 DISCONNECT with a Server Reference naming where to go (none when ref is empty),
// as long as it fits the client's Maximum Packet Size. Runs on the loop.
func (c *conn) sendDisconnectRef(reason mqttcodec.ReasonCode, why, ref string) {
	if c.held != nil && c.held.connack {
		return // [MQTT-3.2.0-1] nothing but CONNACK goes first: a connection whose CONNACK waits is just closed
	}
	var d mqttcodec.Disconnect
	d.Reason = reason
	if ref != "" && (c.clientMaxPacket == 0 || len(ref)+len(why)+32 <= int(c.clientMaxPacket)) {
		d.Props.ServerReference = []byte(ref)
		d.Props.Set(mqttcodec.PropServerReference)
	}
	if why != "" && c.reasonStringFits(len(why)) {
		d.Props.ReasonString = []byte(why)
		d.Props.Set(mqttcodec.PropReasonString)
	}
	c.l.out = mqttcodec.AppendDisconnect(c.l.out, &d, c.version)
}

// close flushes what is written and closes the socket; OnClose finishes the session. Runs on the loop.
func (c *conn) close() {
	if c.closed {
		return
	}
	c.flushOut()
	if c.tr != nil {
		c.tr.Goodbye()
	}
	c.closed = true
	c.phase = phaseClosing
	_ = c.gc.Close()
}

// flushOut hands the loop's scratch output to gnet. Runs on the loop.
func (c *conn) flushOut() {
	l := c.l
	if len(l.out) == 0 {
		return
	}
	if !c.closed {
		c.flushing = true
		if c.tr != nil {
			c.tr.Write(l.out)
		} else {
			_, _ = c.gc.Write(l.out)
		}
		c.flushing = false
		c.l.srv.metrics.bytesOut.Add(uint64(len(l.out)))
	}
	l.out = l.out[:0]
}

// checkTimeout runs on the loop when c's wheel slot comes round.
func (c *conn) checkTimeout() {
	l := c.l
	var deadline int64
	switch c.phase {
	case phaseAwaitConnect:
		deadline = c.lastRead + int64(c.l.srv.cfg.connectTimeout.Seconds()+0.999) + 1
		if l.now >= deadline {
			c.l.srv.metrics.connectTimeouts.Add(1)
			c.closeWhy = closeConnectTimeout
			c.close()
			return
		}
	case phaseConnected:
		if c.keepAlive == 0 {
			return // keep-alive 0 turns the mechanism off (MQTT 5 §3.1.2.10, no numbered statement)
		}
		if c.q0Held {
			// Held, the client has sent a whole packet Ferry has not read yet (readlag_hold.go): it is alive.
			c.lastRead = l.now
		}
		// [MQTT-3.1.2-24] / [MQTT-3.1.2-22]: one and a half keep-alive periods without a packet ends it.
		// The loop's clock has one-second steps: one more second keeps the close from coming early.
		deadline = c.lastRead + (int64(c.keepAlive)*3+1)/2 + 1
		if l.now >= deadline {
			c.l.srv.metrics.keepAliveTimeouts.Add(1)
			c.closeWhy = closeKeepAlive
			if c.version >= mqttcodec.Version5 {
				c.sendDisconnect(mqttcodec.KeepAliveTimeout, "keep-alive timeout")
			}
			c.close()
			return
		}
	case phaseLinger:
		c.lingerTick()
		return
	default:
		return
	}
	l.wheel.schedule(c, deadline)
}

// reasonStringFits reports whether a Reason String of n bytes may be added to an ack or DISCONNECT: never
// past the client's Maximum Packet Size [MQTT-3.1.2-24] [MQTT-3.14.2-3] [MQTT-3.4.2-2]. The bound is generous:
// the rest of such a packet is at most 16 bytes.
func (c *conn) reasonStringFits(n int) bool {
	if !c.l.srv.cfg.reasonStrings || c.version < mqttcodec.Version5 {
		return false
	}
	return c.clientMaxPacket == 0 || n+16 <= int(c.clientMaxPacket)
}

func (c *conn) clientID() string {
	if c.sess == nil {
		return ""
	}
	return c.sess.id
}
