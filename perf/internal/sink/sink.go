//go:build linux

// Package sink is a trivial in-harness MQTT 3.1.1 target for the "echo
// check": it accepts everything, acknowledges every PUBLISH at once and
// forwards it to matching subscribers, with no persistence, no sessions, no
// retained messages and no flow control beyond a per-connection byte cap.
// Driving it shows how much the load generator itself can push and receive on
// this machine; a broker under test must score lower for its figures to be
// the broker's and not the generator's.
//
// It is built as an event-loop broker is (Linux only): one epoll loop per CPU
// reads its connections, and bytes queued for a connection are written by the
// connection's loop after the wake-up that queued them, so a fan-out to 1,000
// subscribers costs a wake-up per loop and a write per subscriber, and 1,000
// PUBACKs from the subscribers cost reads, not goroutine wake-ups. A goroutine
// per connection measured the Go scheduler's run queue instead (the publisher's
// PUBLISH waited behind 1,000 subscriber goroutines).
package sink

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

// outCap bounds what may wait to be written to one connection; beyond it
// forwarded PUBLISHes are dropped (counted), as a QoS 0 broker would.
const outCap = 64 << 20

// Server is a running sink.
type Server struct {
	ln      net.Listener
	loops   []*loop
	mu      sync.RWMutex
	subs    []sub
	Dropped atomic.Int64
}

type sub struct {
	filter string
	qos    byte
	c      *conn
}

// loop owns an epoll instance and the connections in it: only its goroutine reads, writes and closes them.
type loop struct {
	s     *Server
	epfd  int
	efd   int // eventfd: another loop queued bytes for one of ours
	mu    sync.Mutex
	conns []*conn // by the slot in the epoll event; nil once closed
	ready []*conn // connections with bytes queued, each once (conn.queued)
	spare []*conn
	woken atomic.Bool // efd written and not yet drained
}

type conn struct {
	l    *loop
	fd   int
	slot int
	in   []byte // loop only
	n    int

	mu     sync.Mutex
	out    []byte // queued by any loop
	queued bool   // in l.ready
	pid    uint16 // under mu: the next packet id of forwarded QoS > 0 PUBLISHes
	buf    []byte // loop only: bytes being written
	dead   atomic.Bool
}

// Listen starts a sink on addr.
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln}
	n := runtime.NumCPU()
	for range n {
		l, err := s.newLoop()
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	// Each loop holds a P while it waits in epoll_wait; the accept goroutine needs one too.
	runtime.GOMAXPROCS(n + 1)
	for _, l := range s.loops {
		go l.run()
	}
	go s.accept()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops accepting.
func (s *Server) Close() error { return s.ln.Close() }

func (s *Server) newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cannot create epoll instance: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("cannot create eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}); err != nil {
		return nil, fmt.Errorf("cannot watch eventfd: %w", err)
	}
	return &loop{s: s, epfd: epfd, efd: efd}, nil
}

func (s *Server) accept() {
	for next := 0; ; next++ {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		fd, err := takeFD(nc.(*net.TCPConn))
		if err != nil {
			continue
		}
		l := s.loops[next%len(s.loops)]
		c := &conn{l: l, fd: fd, in: make([]byte, 64<<10)}
		l.mu.Lock()
		c.slot = len(l.conns)
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.slot)}); err != nil {
			_ = unix.Close(fd)
		}
	}
}

// takeFD takes an accepted socket out of Go's network poller: a duplicate descriptor (same socket, still
// non-blocking) is kept and the net.Conn closed.
func takeFD(tc *net.TCPConn) (int, error) {
	defer tc.Close()
	sc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := sc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

func (l *loop) run() {
	events := make([]unix.EpollEvent, 512)
	var eb [8]byte
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			continue // EINTR
		}
		for i := 0; i < n; i++ {
			slot := int(events[i].Fd)
			if slot < 0 {
				// Drain first, then re-arm: a sender that finds woken still set has queued before the
				// flush below, and one that comes after the Store writes the eventfd again.
				_, _ = unix.Read(l.efd, eb[:])
				l.woken.Store(false)
				continue
			}
			l.mu.Lock()
			c := l.conns[slot]
			l.mu.Unlock()
			if c != nil && !l.read(c) {
				l.close(c)
			}
		}
		l.flush()
	}
}

// read reads what c has and handles its whole frames; false when the connection is over.
func (l *loop) read(c *conn) bool {
	if c.n == len(c.in) {
		c.in = append(c.in, make([]byte, len(c.in))...)
	}
	m, err := unix.Read(c.fd, c.in[c.n:])
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return true
	}
	if err != nil || m == 0 {
		return false
	}
	c.n += m
	off := 0
	for {
		f, fl, ferr := wire.Split(c.in[off:c.n])
		if ferr != nil {
			if !errors.Is(ferr, wire.ErrIncomplete) {
				return false
			}
			if fl > len(c.in) {
				c.in = append(c.in[:c.n], make([]byte, fl-c.n)...)
			}
			break
		}
		if !l.s.handle(c, f) {
			return false
		}
		off += fl
	}
	c.n = copy(c.in, c.in[off:c.n])
	return true
}

// flush writes out every connection of the loop that has bytes queued.
func (l *loop) flush() {
	l.mu.Lock()
	ready := l.ready
	l.ready = l.spare[:0]
	l.mu.Unlock()
	for i, c := range ready {
		c.mu.Lock()
		c.buf, c.out = c.out, c.buf[:0]
		c.queued = false
		c.mu.Unlock()
		if !c.dead.Load() && !writeAll(c.fd, c.buf) {
			l.close(c)
		}
		ready[i] = nil
	}
	l.spare = ready
}

// writeAll writes b to a non-blocking socket, waiting for room when its buffer is full (a subscriber that
// does not read holds its loop up, which slows the publishers on that loop: the sink's only flow control).
func writeAll(fd int, b []byte) bool {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		switch {
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if k, _ := unix.Poll(pfd, 10000); k == 0 {
				return false
			}
		case err != nil:
			return false
		default:
			b = b[n:]
		}
	}
	return true
}

func (l *loop) close(c *conn) {
	if c.dead.Swap(true) {
		return
	}
	l.mu.Lock()
	l.conns[c.slot] = nil
	l.mu.Unlock()
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	_ = unix.Close(c.fd)
	s := l.s
	s.mu.Lock()
	kept := s.subs[:0]
	for _, x := range s.subs {
		if x.c != c {
			kept = append(kept, x)
		}
	}
	s.subs = kept
	s.mu.Unlock()
}

// send queues what fn appends (under c.mu) for c's loop to write. from is the loop calling: a connection of
// another loop wakes that loop. false if c is dead or outCap bytes wait already.
func (c *conn) send(from *loop, fn func([]byte) []byte) bool {
	c.mu.Lock()
	if len(c.out) > outCap || c.dead.Load() {
		c.mu.Unlock()
		return false
	}
	c.out = fn(c.out)
	queue := !c.queued
	c.queued = true
	c.mu.Unlock()
	if !queue {
		return true
	}
	l := c.l
	l.mu.Lock()
	l.ready = append(l.ready, c)
	l.mu.Unlock()
	if l != from && !l.woken.Swap(true) {
		one := [8]byte{1}
		_, _ = unix.Write(l.efd, one[:])
	}
	return true
}

func (s *Server) handle(c *conn, f wire.Frame) bool {
	l := c.l
	switch f.Type {
	case wire.CONNECT:
		c.send(l, func(b []byte) []byte { return append(b, wire.CONNACK<<4, 2, 0, 0) })
	case wire.SUBSCRIBE:
		b := f.Body
		if len(b) < 2 {
			return false
		}
		pid := b[:2]
		var codes []byte
		for b = b[2:]; len(b) >= 3; {
			l := int(b[0])<<8 | int(b[1])
			if len(b) < 3+l {
				return false
			}
			filter, qos := string(b[2:2+l]), b[2+l]&3
			codes = append(codes, qos)
			s.mu.Lock()
			s.subs = append(s.subs, sub{filter: filter, qos: qos, c: c})
			s.mu.Unlock()
			b = b[3+l:]
		}
		c.send(l, func(o []byte) []byte {
			o = append(o, wire.SUBACK<<4)
			o = wire.AppendVarint(o, 2+len(codes))
			return append(append(o, pid...), codes...)
		})
	case wire.PUBLISH:
		p, err := wire.ParsePublish(f)
		if err != nil {
			return false
		}
		s.forward(l, p)
		switch p.QoS {
		case 1:
			c.send(l, func(b []byte) []byte { return wire.AppendAck(b, wire.PUBACK, p.PID) })
		case 2:
			c.send(l, func(b []byte) []byte { return wire.AppendAck(b, wire.PUBREC, p.PID) })
		}
	case wire.PUBREL:
		pid, _ := wire.AckPID(f)
		c.send(l, func(b []byte) []byte { return wire.AppendAck(b, wire.PUBCOMP, pid) })
	case wire.PUBREC: // from a subscriber at QoS 2
		pid, _ := wire.AckPID(f)
		c.send(l, func(b []byte) []byte { return wire.AppendAck(b, wire.PUBREL, pid) })
	case wire.PINGREQ:
		c.send(l, func(b []byte) []byte { return append(b, wire.PINGRESP<<4, 0) })
	case wire.DISCONNECT:
		return false
	}
	return true
}

// forward queues p for every matching subscriber; runs on loop from.
func (s *Server) forward(from *loop, p wire.Publish) {
	topic := string(p.Topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := range s.subs {
		x := &s.subs[i]
		if !Match(x.filter, topic) {
			continue
		}
		qos := min(p.QoS, x.qos)
		ok := x.c.send(from, func(b []byte) []byte {
			var id uint16
			if qos > 0 {
				x.c.pid++
				if x.c.pid == 0 {
					x.c.pid = 1
				}
				id = x.c.pid
			}
			return wire.AppendPublish(b, topic, qos, false, false, id, p.Payload)
		})
		if !ok {
			s.Dropped.Add(1)
		}
	}
}
