package server

import (
	"net"

	"github.com/panjf2000/gnet/v2"

	"github.com/ferrymq/ferry/server/transport"
)

// How a connection reads and writes through its listener's transport (server/transport): nothing on plain
// TCP, where MQTT is read from gnet's buffer in place, or the layers of a TLS, WebSocket or PROXY listener.
// Everything here runs on the connection's event loop.

// Client certificate policies of TLSClientAuth.
const (
	TLSClientCertRequire     = transport.TLSClientCertRequire     // a client must present a certificate the client CAs signed
	TLSClientCertVerifyGiven = transport.TLSClientCertVerifyGiven // a certificate is optional, but verified when given
)

// conn serves its transport as a transport.Conn.
var _ transport.Conn = (*conn)(nil)

func (c *conn) Gnet() gnet.Conn           { return c.gc }
func (c *conn) Closed() bool              { return c.closed }
func (c *conn) Scratch() *[2][]byte       { return &c.l.tscr }
func (c *conn) Shared() *transport.Shared { return c.l.srv.transports }

// remoteAddr is the client's address: the one a trusted PROXY header gave, or the socket's peer.
func (c *conn) remoteAddr() net.Addr {
	if c.tr != nil {
		if a := c.tr.Remote(); a != nil {
			return a
		}
	}
	return c.gc.RemoteAddr()
}

// certIdentity is the identity a verified TLS client certificate gives the connection, or "".
func (c *conn) certIdentity() string {
	if c.tr == nil {
		return ""
	}
	return c.tr.Ident()
}

// inbound returns the MQTT bytes buffered for c, borrowed until consumed.
func (c *conn) inbound() ([]byte, error) {
	if c.tr == nil {
		b, _ := c.gc.Peek(-1)
		return b, nil
	}
	return c.tr.Inbound() // what arrived before a failure is still handled
}

// consumed drops n bytes returned by inbound.
func (c *conn) consumed(n int) {
	if c.tr == nil {
		_, _ = c.gc.Discard(n)
		return
	}
	c.tr.Consumed(n)
}

// inboundBuffered counts the bytes received from c and not yet handled.
func (c *conn) inboundBuffered() int {
	n := c.gc.InboundBuffered()
	if c.tr != nil {
		n += c.tr.Buffered()
	}
	return n
}

// ReloadTLS reads the TLS certificate, key and client CA files again (after a certificate renewal; cmd/ferry
// calls it on SIGHUP). New handshakes use the new files; established connections keep their session. If a
// file cannot be used, the certificates in use stay and the error says which file. Without a TLS listener it
// does nothing. Safe to call from any goroutine.
func (srv *Server) ReloadTLS() error { return srv.transports.ReloadTLS(srv.cfg.log) }
