package transport

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"time"
)

// tlsPipe is the net.Conn crypto/tls reads and writes: bytes from the loop in, records out. During the
// handshake its goroutine and the loop share pend and closed under mu; after it, the loop alone uses it.
type tlsPipe struct {
	l      *tlsLayer
	mu     sync.Mutex
	cond   sync.Cond
	pend   []byte // bytes from the loop the handshake has not read yet
	closed bool   // the socket closed: Read fails
	onLoop bool   // the loop owns the pipe: Read never blocks, Write appends to out
	busy   bool   // handshake goroutine only: it holds one of hs's CPU slots
	hs     *hsLimiter
	src    []byte // on the loop: the bytes unwrap lends Read
	out    []byte // on the loop: where Write appends records
}

// feed hands the handshake goroutine bytes from the loop; they are copied.
func (p *tlsPipe) feed(in []byte) error {
	if len(in) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pend)+len(in) > tlsMaxPending {
		return fmt.Errorf("tls: client sent more than %d bytes before its handshake completed", tlsMaxPending)
	}
	p.pend = append(p.pend, in...)
	p.cond.Signal()
	return nil
}

// adopt moves the pipe to the loop, once the handshake goroutine is done with it.
func (p *tlsPipe) adopt() {
	p.mu.Lock()
	p.onLoop = true
	if len(p.pend) == 0 {
		p.pend = nil // give the handshake's buffer back
	}
	p.mu.Unlock()
}

func (p *tlsPipe) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Read runs on the handshake goroutine (blocking until bytes come or the socket closes) or, after the
// handshake, on the loop (never blocking).
func (p *tlsPipe) Read(b []byte) (int, error) {
	if p.onLoop {
		if len(p.pend) > 0 { // what arrived between the client's Finished and the adoption
			n := copy(b, p.pend)
			if p.pend = p.pend[n:]; len(p.pend) == 0 {
				p.pend = nil
			}
			return n, nil
		}
		if len(p.src) == 0 {
			return 0, errWouldBlock
		}
		n := copy(b, p.src)
		p.src = p.src[n:]
		return n, nil
	}
	p.mu.Lock()
	if len(p.pend) == 0 && p.busy {
		// Waiting for the client: another handshake may compute meanwhile.
		p.mu.Unlock()
		p.busy = false
		p.hs.cpuDone()
		p.mu.Lock()
	}
	for len(p.pend) == 0 && !p.closed {
		p.cond.Wait()
	}
	if p.closed {
		p.mu.Unlock()
		return 0, net.ErrClosed
	}
	n := copy(b, p.pend)
	p.pend = p.pend[:copy(p.pend, p.pend[n:])]
	p.mu.Unlock()
	if !p.busy {
		p.hs.cpuTake() // not under mu: the loop's feed must never wait for it
		p.busy = true
	}
	return n, nil
}

// Write runs on the handshake goroutine (records go to the socket by AsyncWrite, in order) or on the loop
// (records are appended to out for the caller).
func (p *tlsPipe) Write(b []byte) (int, error) {
	if p.onLoop {
		p.out = append(p.out, b...)
		return len(b), nil
	}
	if p.isClosed() {
		return 0, net.ErrClosed
	}
	l := p.l
	l.pendingW.Add(1)
	if err := l.gc.AsyncWrite(bytes.Clone(b), l.wrote); err != nil { // b is crypto/tls's buffer
		l.pendingW.Add(-1)
		return 0, err
	}
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
