package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT from linux/in.h: bind the source address without reserving a
// port, so only the 4-tuple must be unique (more than 28k sockets per source address towards one port).
const ipBindAddressNoPort = 24

// dial opens a TCP connection to target, from src if it is not empty (an address of 127.0.0.0/8).
func dial(target, src string, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return tc, nil
}

// framer splits the frames of one connection. The frame next returns is borrowed until the next call.
type framer struct {
	r          io.Reader
	buf        []byte
	start, end int
}

func newFramer(r io.Reader) *framer { return &framer{r: r, buf: make([]byte, 4096)} }

func (f *framer) next() (wire.Frame, error) {
	for {
		fr, n, err := wire.Split(f.buf[f.start:f.end])
		if err == nil {
			f.start += n
			return fr, nil
		}
		if !errors.Is(err, wire.ErrIncomplete) {
			return fr, err
		}
		if f.start > 0 { // compact
			copy(f.buf, f.buf[f.start:f.end])
			f.end -= f.start
			f.start = 0
		}
		if n > len(f.buf) {
			nb := make([]byte, n)
			copy(nb, f.buf[:f.end])
			f.buf = nb
		} else if f.end == len(f.buf) {
			nb := make([]byte, 2*len(f.buf))
			copy(nb, f.buf[:f.end])
			f.buf = nb
		}
		m, err := f.r.Read(f.buf[f.end:])
		f.end += m
		if err != nil && m == 0 {
			return wire.Frame{}, err
		}
	}
}

// mconn is one MQTT 3.1.1 connection: one reader (the goroutine that calls next or run), any number of
// writers serialised by wmu.
type mconn struct {
	nc      *net.TCPConn
	fr      *framer
	wmu     sync.Mutex
	closed  atomic.Bool
	lastOut atomic.Int64 // unix ns of the last write
}

// connect dials target and completes the MQTT handshake. It returns the connection, whether the server had
// a session, and an error that names the CONNACK return code when the server refused.
func connect(target, src string, c wire.Connect, timeout time.Duration) (*mconn, bool, error) {
	nc, err := dial(target, src, timeout)
	if err != nil {
		return nil, false, err
	}
	return handshake(nc, c, timeout)
}

// handshake sends the CONNECT on nc and reads the CONNACK, as connect does; it closes nc on failure.
func handshake(nc *net.TCPConn, c wire.Connect, timeout time.Duration) (*mconn, bool, error) {
	m := &mconn{nc: nc, fr: newFramer(nc)}
	if err := m.write(wire.AppendConnect(nil, c)); err != nil {
		nc.Close()
		return nil, false, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	f, err := m.fr.next()
	_ = nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("no CONNACK: %w", err)
	}
	code, err := wire.ConnackCode(f)
	if err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("bad CONNACK: %w", err)
	}
	if code != 0 {
		nc.Close()
		return nil, false, refusedError(code)
	}
	return m, f.Body[0]&1 == 1, nil
}

// refusedError is a CONNACK return code other than 0.
type refusedError byte

func (e refusedError) Error() string {
	return fmt.Sprintf("CONNACK refused with return code %d", byte(e))
}

func (m *mconn) write(b []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	_ = m.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := m.nc.Write(b)
	if err == nil {
		m.lastOut.Store(time.Now().UnixNano())
	}
	return err
}

func (m *mconn) next() (wire.Frame, error) { return m.fr.next() }

func (m *mconn) close() {
	if m.closed.CompareAndSwap(false, true) {
		_ = m.nc.Close()
	}
}

// subscribe sends a SUBSCRIBE and waits for its SUBACK (the caller must not run a reader yet); frames that
// arrive before the SUBACK go to other (may be nil). It fails on any refused filter.
func (m *mconn) subscribe(pid uint16, qos byte, timeout time.Duration, other func(wire.Frame), filters ...string) error {
	if err := m.write(wire.AppendSubscribe(nil, pid, qos, filters...)); err != nil {
		return err
	}
	_ = m.nc.SetReadDeadline(time.Now().Add(timeout))
	defer m.nc.SetReadDeadline(time.Time{})
	for {
		f, err := m.fr.next()
		if err != nil {
			return fmt.Errorf("no SUBACK: %w", err)
		}
		if f.Type != wire.SUBACK {
			if other != nil {
				other(f)
			}
			continue
		}
		codes, err := wire.SubackCodes(f)
		if err != nil {
			return err
		}
		for i, c := range codes {
			if c == 0x80 {
				return fmt.Errorf("SUBACK refused filter %q", filters[i])
			}
		}
		return nil
	}
}
