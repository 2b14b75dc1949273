// Package sink is a trivial in-harness MQTT 3.1.1 target for the "echo
// check": it accepts everything, acknowledges every PUBLISH at once and
// forwards it to matching subscribers, with no persistence, no sessions, no
// retained messages and no flow control beyond a per-connection byte cap.
// Driving it shows how much the load generator itself can push and receive on
// this machine; a broker under test must score lower for its figures to be
// the broker's and not the generator's.
package sink

import (
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

// outCap bounds what may wait to be written to one connection; beyond it
// forwarded PUBLISHes are dropped (counted), as a QoS 0 broker would.
const outCap = 64 << 20

// Server is a running sink.
type Server struct {
	ln      net.Listener
	mu      sync.RWMutex
	subs    []sub
	Dropped atomic.Int64
}

type sub struct {
	filter string
	qos    byte
	c      *conn
}

type conn struct {
	nc   net.Conn
	mu   sync.Mutex
	out  []byte
	wake chan struct{}
	pid  uint16
	dead atomic.Bool
}

// Listen starts a sink on addr.
func Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln}
	go s.accept()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops accepting.
func (s *Server) Close() error { return s.ln.Close() }

func (s *Server) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &conn{nc: nc, wake: make(chan struct{}, 1)}
		go c.writeLoop()
		go s.serve(c)
	}
}

// send queues b (copied) for the connection's writer goroutine.
func (c *conn) send(fn func([]byte) []byte) bool {
	c.mu.Lock()
	if len(c.out) > outCap || c.dead.Load() {
		c.mu.Unlock()
		return false
	}
	c.out = fn(c.out)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

func (c *conn) writeLoop() {
	var buf []byte
	for range c.wake {
		c.mu.Lock()
		buf, c.out = c.out, buf[:0]
		c.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		if _, err := c.nc.Write(buf); err != nil {
			c.dead.Store(true)
			return
		}
	}
}

func (s *Server) serve(c *conn) {
	defer func() {
		c.dead.Store(true)
		_ = c.nc.Close()
		close(c.wake)
		s.mu.Lock()
		kept := s.subs[:0]
		for _, x := range s.subs {
			if x.c != c {
				kept = append(kept, x)
			}
		}
		s.subs = kept
		s.mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	n := 0
	for {
		m, err := c.nc.Read(buf[n:])
		n += m
		off := 0
		for {
			f, fl, ferr := wire.Split(buf[off:n])
			if ferr != nil {
				if !errors.Is(ferr, wire.ErrIncomplete) {
					return
				}
				if fl > len(buf) {
					nb := make([]byte, fl)
					copy(nb, buf[off:n])
					buf, n, off = nb, n-off, 0
				}
				break
			}
			if !s.handle(c, f) {
				return
			}
			off += fl
		}
		copy(buf, buf[off:n])
		n -= off
		if err != nil {
			return
		}
	}
}

func (s *Server) handle(c *conn, f wire.Frame) bool {
	switch f.Type {
	case wire.CONNECT:
		c.send(func(b []byte) []byte { return append(b, wire.CONNACK<<4, 2, 0, 0) })
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
		c.send(func(o []byte) []byte {
			o = append(o, wire.SUBACK<<4)
			o = wire.AppendVarint(o, 2+len(codes))
			return append(append(o, pid...), codes...)
		})
	case wire.PUBLISH:
		p, err := wire.ParsePublish(f)
		if err != nil {
			return false
		}
		s.forward(p)
		switch p.QoS {
		case 1:
			c.send(func(b []byte) []byte { return wire.AppendAck(b, wire.PUBACK, p.PID) })
		case 2:
			c.send(func(b []byte) []byte { return wire.AppendAck(b, wire.PUBREC, p.PID) })
		}
	case wire.PUBREL:
		pid, _ := wire.AckPID(f)
		c.send(func(b []byte) []byte { return wire.AppendAck(b, wire.PUBCOMP, pid) })
	case wire.PUBREC: // from a subscriber at QoS 2
		pid, _ := wire.AckPID(f)
		c.send(func(b []byte) []byte { return wire.AppendAck(b, wire.PUBREL, pid) })
	case wire.PINGREQ:
		c.send(func(b []byte) []byte { return append(b, wire.PINGRESP<<4, 0) })
	case wire.DISCONNECT:
		return false
	}
	return true
}

func (s *Server) forward(p wire.Publish) {
	topic := string(p.Topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := range s.subs {
		x := &s.subs[i]
		if !Match(x.filter, topic) {
			continue
		}
		qos := min(p.QoS, x.qos)
		ok := x.c.send(func(b []byte) []byte {
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

// Match reports whether an MQTT topic filter matches a topic name.
func Match(filter, topic string) bool {
	for {
		if filter == "#" {
			return !strings.HasPrefix(topic, "$")
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore && !tmore {
			return true
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" [MQTT-4.7.1-2]
			return fmore && frest == "#" && !tmore
		}
		filter, topic = frest, trest
	}
}
