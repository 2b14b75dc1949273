package load

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/perf/internal/stats"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

type role uint8

const (
	roleIdle role = iota
	roleSub
	rolePub
)

// client is one MQTT connection. Exactly one goroutine (readLoop, or the
// worker's epoll receiver for subscribers on the epoll path) reads the socket; writers (publisher loop, reader's acks, keep-alive sweep) serialise
// on wmu. A publisher adds one goroutine (pubLoop). No other per-connection
// goroutines exist, so 5,000 idle connections cost 5,000 parked goroutines.
type client struct {
	w    *worker
	id   int // global id within its role
	role role
	nc   net.Conn // TCP, or MQTT over WebSocket on it (wsConn); handshake only on the epoll path
	raw  *rawConn // the epoll path's socket (rx_linux.go), nil on the goroutine path

	wmu       sync.Mutex
	lastWrite atomic.Int64 // unix ns

	rbuf []byte // owned by the reader goroutine
	rlen int

	closing atomic.Bool
	doneCh  chan struct{} // closed when readLoop returns

	// subscriber state (reader goroutine only)
	trackers []*stats.SeqTracker // by publisher id
	sent     []int64             // send stamps of the deliveries in the current read
	acks     []byte              // acks to write for the current read

	// idle subscribe phase
	subSent atomic.Int64 // unix ns SUBSCRIBE was written, 0 = none pending

	// publisher state
	pub *pubState
}

func (w *worker) dial(i int) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: time.Duration(w.cfg.ConnTimeout) * time.Second}
	if n := len(w.cfg.SrcIPs); n > 0 {
		ip := net.ParseIP(w.cfg.SrcIPs[i%n])
		d.LocalAddr = &net.TCPAddr{IP: ip}
		// Bind the address without reserving a port, so the 4-tuple, not the
		// local port alone, must be unique (more than 28k sockets per address).
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", w.cfg.Target)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return tc, nil
}

// IP_BIND_ADDRESS_NO_PORT from linux/in.h (not in package syscall).
const ipBindAddressNoPort = 24

// handshake sends CONNECT and waits for CONNACK; for subscribers it also sends
// SUBSCRIBE and waits for SUBACK. Runs on the dialing goroutine before the
// reader starts; bytes after the awaited frame stay in rbuf for the reader.
func (c *client) handshake(clientID string) error {
	cfg := &c.w.cfg
	deadline := time.Now().Add(time.Duration(cfg.ConnTimeout) * time.Second)
	_ = c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})

	start := time.Now()
	pkt := wire.AppendConnect(nil, wire.Connect{ClientID: clientID, KeepAlive: uint16(cfg.KeepAlive),
		CleanSession: !cfg.Persistent, Username: cfg.Username, Password: cfg.Password, Will: cfg.Will})
	if _, err := c.nc.Write(pkt); err != nil {
		return fmt.Errorf("cannot send CONNECT: %w", err)
	}
	f, err := c.readFrame()
	if err != nil {
		return fmt.Errorf("no CONNACK: %w", err)
	}
	code, err := wire.ConnackCode(f)
	if err != nil {
		return fmt.Errorf("expected CONNACK, got packet type %d: %w", f.Type, err)
	}
	if code != 0 {
		return fmt.Errorf("CONNACK refused with code %d", code)
	}
	c.w.recordConnect(time.Since(start))
	c.lastWrite.Store(time.Now().UnixNano())

	if c.role != roleSub {
		return nil
	}
	start = time.Now()
	pkt = wire.AppendSubscribe(pkt[:0], 1, cfg.SubQoS, cfg.SubFilter)
	if _, err := c.nc.Write(pkt); err != nil {
		return fmt.Errorf("cannot send SUBSCRIBE: %w", err)
	}
	for {
		f, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("no SUBACK: %w", err)
		}
		if f.Type != wire.SUBACK {
			continue // e.g. a retained PUBLISH; ignored
		}
		codes, err := wire.SubackCodes(f)
		if err != nil || len(codes) != 1 || codes[0] == 0x80 {
			return errors.New("SUBSCRIBE refused")
		}
		c.w.recordSubscribe(time.Since(start), 1)
		return nil
	}
}

// readFrame reads one whole frame synchronously (handshake only). The frame
// is consumed from rbuf before it is returned; its Body stays valid until
// the next read into rbuf.
func (c *client) readFrame() (wire.Frame, error) {
	for {
		f, n, err := wire.Split(c.rbuf[:c.rlen])
		if err == nil {
			body := append([]byte(nil), f.Body...)
			copy(c.rbuf, c.rbuf[n:c.rlen])
			c.rlen -= n
			f.Body = body
			return f, nil
		}
		if !errors.Is(err, wire.ErrIncomplete) {
			return f, err
		}
		if c.rlen == len(c.rbuf) || n > len(c.rbuf) {
			c.grow(n)
		}
		m, err := c.nc.Read(c.rbuf[c.rlen:])
		c.rlen += m
		if err != nil {
			return wire.Frame{}, err
		}
	}
}

// close closes the socket; on the epoll path it shuts the socket down and the receiver, reading end-of-file,
// closes the descriptor.
func (c *client) close() {
	if c.raw != nil {
		c.wmu.Lock()
		c.raw.shutdown()
		c.wmu.Unlock()
		return
	}
	_ = c.nc.Close()
}

func (c *client) grow(need int) {
	size := 2 * len(c.rbuf)
	if size < need {
		size = need
	}
	nb := make([]byte, size)
	copy(nb, c.rbuf[:c.rlen])
	c.rbuf = nb
}

// write sends b under the write lock.
func (c *client) write(b []byte) error {
	var err error
	c.wmu.Lock()
	if c.raw != nil {
		err = c.raw.write(b)
	} else {
		_, err = c.nc.Write(b)
	}
	c.wmu.Unlock()
	c.lastWrite.Store(time.Now().UnixNano())
	return err
}

// readLoop runs on the connection's own goroutine until the socket closes.
func (c *client) readLoop() {
	defer c.w.wg.Done()
	defer close(c.doneCh)
	for {
		if c.rlen == len(c.rbuf) {
			c.grow(0)
		}
		n, err := c.nc.Read(c.rbuf[c.rlen:])
		now := stats.NowNs()
		c.rlen += n
		if !c.consume(now, 0) {
			return
		}
		if err != nil {
			c.ended(err)
			return
		}
	}
}

// errEOF is the epoll receiver's end of stream (a read of 0 bytes).
var errEOF = io.EOF

// consume handles the whole frames in rbuf, records what they measured and writes the acks they call for;
// false if the server sent a malformed frame (the connection is then failed). arrival is when the bytes
// reached this host (the kernel's receive time on the epoll path, else the read time); readNs, when non-zero,
// is when the generator read them (the epoll path's second delivery histogram). Runs on the goroutine that
// reads the connection.
func (c *client) consume(arrival, readNs int64) bool {
	off := 0
	c.acks = c.acks[:0]
	for {
		f, fl, ferr := wire.Split(c.rbuf[off:c.rlen])
		if ferr != nil {
			if errors.Is(ferr, wire.ErrIncomplete) {
				if fl > len(c.rbuf) {
					c.grow(fl)
				}
				break
			}
			c.w.noteErr("malformed frame from server")
			c.fail()
			return false
		}
		c.acks = c.handle(f, arrival, c.acks)
		off += fl
	}
	if off > 0 {
		copy(c.rbuf, c.rbuf[off:c.rlen])
		c.rlen -= off
	}
	if len(c.sent) > 0 {
		c.w.recordDeliveries(c.sent, arrival, readNs)
		c.sent = c.sent[:0]
	}
	if c.pub != nil && len(c.pub.ackLat) > 0 {
		c.w.recordAcks(c.pub.ackLat)
		c.pub.ackLat = c.pub.ackLat[:0]
	}
	if len(c.acks) > 0 {
		if werr := c.write(c.acks); werr != nil && !c.closing.Load() {
			c.w.noteErr("write: " + errText(werr))
		}
	}
	return true
}

// ended accounts for the end of the connection's input (err from the read).
func (c *client) ended(err error) {
	if !c.closing.Load() {
		c.w.cnt.disconnected.Add(1)
		if !errors.Is(err, io.EOF) {
			c.w.noteErr("read: " + errText(err))
		} else {
			c.w.noteErr("server closed the connection")
		}
	}
	if c.pub != nil {
		c.pub.fail()
	}
}

func (c *client) done() <-chan struct{} { return c.doneCh }

func (c *client) fail() {
	c.w.cnt.disconnected.Add(1)
	c.close()
	if c.pub != nil {
		c.pub.fail()
	}
}

// handle reacts to one frame; acks to send are appended to acks.
func (c *client) handle(f wire.Frame, now int64, acks []byte) []byte {
	switch f.Type {
	case wire.PUBLISH:
		p, err := wire.ParsePublish(f)
		if err != nil {
			c.w.noteErr("malformed PUBLISH")
			return acks
		}
		switch p.QoS {
		case 1:
			acks = wire.AppendAck(acks, wire.PUBACK, p.PID)
		case 2:
			acks = wire.AppendAck(acks, wire.PUBREC, p.PID)
		}
		s, ok := stats.ReadStamp(p.Payload)
		if !ok || int(s.Pub) >= len(c.trackers) || s.SentNs < c.w.cfg.MinSentNs {
			c.w.cnt.foreign.Add(1)
			return acks
		}
		c.w.cnt.delivered.Add(1)
		c.sent = append(c.sent, s.SentNs)
		t := c.trackers[s.Pub]
		if t == nil {
			t = &stats.SeqTracker{}
			c.trackers[s.Pub] = t
		}
		t.Add(s.Seq)
	case wire.PUBREL:
		if pid, err := wire.AckPID(f); err == nil {
			acks = wire.AppendAck(acks, wire.PUBCOMP, pid)
		}
	case wire.PUBACK, wire.PUBREC, wire.PUBCOMP:
		if c.pub != nil {
			if pid, err := wire.AckPID(f); err == nil {
				acks = c.pub.onAck(f.Type, pid, now, acks)
			}
		}
	case wire.PINGRESP:
		c.w.cnt.pongs.Add(1)
		if c.pub != nil && c.pub.qos == 0 && c.pub.tokens != nil {
			c.pub.onPong()
		}
	case wire.SUBACK:
		sent := c.subSent.Swap(0)
		codes, err := wire.SubackCodes(f)
		if err != nil {
			c.w.noteErr("malformed SUBACK")
			return acks
		}
		ok, bad := 0, 0
		for _, code := range codes {
			if code == 0x80 {
				bad++
			} else {
				ok++
			}
		}
		if sent != 0 {
			c.w.recordSubscribe(time.Duration(now-sent), ok)
		}
		c.w.cnt.subFail.Add(int64(bad))
		c.w.subDone()
	case wire.CONNACK:
		c.w.noteErr("unexpected second CONNACK")
	}
	return acks
}

func errText(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var se syscall.Errno
		if errors.As(op.Err, &se) {
			return se.Error()
		}
		return op.Err.Error()
	}
	return err.Error()
}
