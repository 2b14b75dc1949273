package transport

import (
	"fmt"
	"net"
	"time"
)

// tlsPipe is the net.Conn crypto/tls reads and writes: bytes from the loop in, records out. The loop and the
// handshake coroutine it resumes use it in turn, never at once, so nothing in it is locked.
type tlsPipe struct {
	src    []byte              // the bytes unwrap lends Read
	pend   []byte              // a queued connection's bytes, copied while it waits for a handshake slot
	out    []byte              // where Write appends records; unwrap and wrap send them below
	yield  func(struct{}) bool // during the handshake: suspends the coroutine until unwrap has more bytes
	closed bool                // the socket closed during the handshake: Read and Write fail
}

// feed keeps bytes that arrived while the connection waits for a handshake slot; they are copied.
func (p *tlsPipe) feed(in []byte) error {
	if len(p.pend)+len(in) > tlsMaxPending {
		return fmt.Errorf("tls: client sent more than %d bytes before its handshake completed", tlsMaxPending)
	}
	p.pend = append(p.pend, in...)
	return nil
}

// Read hands crypto/tls the bytes unwrap lent. Without any, it suspends the handshake coroutine until unwrap
// resumes it with more (or release ends it: net.ErrClosed); after the handshake, on the loop, it returns
// errWouldBlock.
func (p *tlsPipe) Read(b []byte) (int, error) {
	for len(p.src) == 0 {
		switch {
		case p.closed:
			return 0, net.ErrClosed
		case p.yield == nil:
			return 0, errWouldBlock
		case !p.yield(struct{}{}):
			p.closed = true // stopped: the socket closed
		}
	}
	n := copy(b, p.src)
	p.src = p.src[n:]
	return n, nil
}

// Write appends crypto/tls's records to out, for the loop to send.
func (p *tlsPipe) Write(b []byte) (int, error) {
	if p.closed {
		return 0, net.ErrClosed
	}
	p.out = append(p.out, b...)
	return len(b), nil
}

func (p *tlsPipe) Close() error                     { return nil }
func (p *tlsPipe) LocalAddr() net.Addr              { return pipeAddr{} }
func (p *tlsPipe) RemoteAddr() net.Addr             { return pipeAddr{} }
func (p *tlsPipe) SetDeadline(time.Time) error      { return nil }
func (p *tlsPipe) SetReadDeadline(time.Time) error  { return nil }
func (p *tlsPipe) SetWriteDeadline(time.Time) error { return nil }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "gnet" }
func (pipeAddr) String() string  { return "gnet" }
