package kafkamux

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// memConn is one end of a buffered in-memory connection (inproc.go). Unlike net.Pipe, a write never waits for
// the reader: the bytes are appended to the peer's buffer and the peer is woken. With net.Pipe the embedded
// broker's response write, and so its next request, waited until franz-go's reader had been scheduled to take
// the bytes, which under CPU load serialized both sides. The buffers are bounded by the protocol: a Kafka
// client has a bounded number of requests in flight per connection and the broker answers each once.
type memConn struct {
	in, out *memBuf // in: what this end reads; out: the peer's in
	mu      sync.Mutex
	rdl     time.Time // read deadline; writes never block, so their deadline is not needed
	closed  atomic.Bool
}

type memBuf struct {
	mu     sync.Mutex
	b      []byte        // b[r:] is unread; the array is reused once read empty, unless larger than memBufKeep
	r      int           // read offset in b
	closed bool          // an end closed: reads return what is left, then EOF (or ErrClosed on the closing end)
	wake   chan struct{} // capacity 1: data, close or a new deadline
}

// memBufKeep is the largest buffer a direction keeps for its next writes once read empty: requests and
// responses of ordinary size reuse one array instead of allocating one per write (at 20,000 messages/s that
// was a tenth of the instance's garbage); a large fetch response's array is let go.
const memBufKeep = 64 << 10

func newMemBuf() *memBuf { return &memBuf{wake: make(chan struct{}, 1)} }

func (m *memBuf) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// memPipe returns the two ends of a new buffered in-memory connection.
func memPipe() (net.Conn, net.Conn) {
	a, b := newMemBuf(), newMemBuf()
	return &memConn{in: a, out: b}, &memConn{in: b, out: a}
}

func (c *memConn) Read(p []byte) (int, error) {
	for {
		if c.closed.Load() {
			return 0, &net.OpError{Op: "read", Net: "mem", Err: net.ErrClosed} // as a socket closed by its owner
		}
		c.in.mu.Lock()
		if m := c.in; m.r < len(m.b) {
			n := copy(p, m.b[m.r:])
			m.r += n
			if m.r == len(m.b) {
				m.r, m.b = 0, m.b[:0]
				if cap(m.b) > memBufKeep {
					m.b = nil // let a large response's array go
				}
			}
			m.mu.Unlock()
			return n, nil
		}
		closed := c.in.closed
		c.in.mu.Unlock()
		if closed {
			return 0, io.EOF
		}
		c.mu.Lock()
		dl := c.rdl
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, &net.OpError{Op: "read", Net: "mem", Err: os.ErrDeadlineExceeded}
			}
			t := time.NewTimer(d)
			timeout = t.C
			defer t.Stop()
		}
		select {
		case <-c.in.wake:
		case <-timeout:
		}
	}
}

func (c *memConn) Write(p []byte) (int, error) {
	c.out.mu.Lock()
	if c.out.closed {
		c.out.mu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "mem", Err: net.ErrClosed}
	}
	c.out.b = append(c.out.b, p...)
	c.out.mu.Unlock()
	c.out.signal()
	return len(p), nil
}

// Close closes both directions: the peer reads what was written before, then EOF; its writes fail.
func (c *memConn) Close() error {
	c.closed.Store(true)
	for _, m := range []*memBuf{c.in, c.out} {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		m.signal()
	}
	return nil
}

func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdl = t
	c.mu.Unlock()
	c.in.signal() // a blocked read looks at the new deadline
	return nil
}

func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

func (c *memConn) LocalAddr() net.Addr  { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "in-process" }
