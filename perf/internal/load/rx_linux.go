package load

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ferrymq/ferry/perf/internal/stats"
)

// The epoll receiver (WorkerConfig.SubRx == "epoll") serves a worker's plain-TCP subscribers from one goroutine
// that waits in epoll_wait and reads every ready socket in turn, instead of one goroutine per socket woken by
// Go's network poller. With 1,000 subscribers a fan-out record means 1,000 reads; the goroutine model pays a
// scheduler wake-up for each and, on a 2-core machine shared with the broker, the last subscriber's goroutine
// runs milliseconds after its bytes arrived: the generator measured itself. Here the reads of one wake-up
// cost a system call each and nothing more.
//
// Each received byte also carries the kernel's receive time (SO_TIMESTAMPNS, the wall clock the stamps use):
// a delivery is timed from the publisher's stamp to the moment the subscriber's TCP stack had the bytes, which
// does not depend on when the generator got around to reading them. When one read returns several segments,
// the kernel reports the newest one's time, so an earlier message's latency can only be over-stated. The time
// the generator read the bytes is kept as a second histogram (DeliveryRead), so the difference between the
// two — the generator's own delay — is reported rather than hidden.

// rawConn is a subscriber socket taken out of Go's network poller (see detach). fd is -1 once closed; wmu
// (the client's write lock) guards it.
type rawConn struct {
	fd int
}

// detach moves a dialed TCP connection's socket out of Go's network poller: it duplicates the descriptor
// (the duplicate shares the socket and its non-blocking mode), closes the net.Conn (which removes the
// original from Go's epoll set; the socket stays open through the duplicate) and turns on kernel receive
// timestamps.
func detach(tc *net.TCPConn) (*rawConn, error) {
	sc, err := tc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("cannot reach the socket: %w", err)
	}
	fd := -1
	var derr error
	if err := sc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("cannot reach the socket: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("cannot duplicate the socket: %w", derr)
	}
	_ = tc.Close()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("cannot enable receive timestamps: %w", err)
	}
	return &rawConn{fd: fd}, nil
}

// write writes all of b; on a full socket buffer it waits (5 s at most) for room. Caller holds the client's
// write lock.
func (r *rawConn) write(b []byte) error {
	for len(b) > 0 {
		if r.fd < 0 {
			return net.ErrClosed
		}
		n, err := unix.Write(r.fd, b)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLOUT}}
			if k, perr := unix.Poll(pfd, 5000); perr != nil && !errors.Is(perr, unix.EINTR) {
				return perr
			} else if k == 0 {
				return errors.New("write timed out: socket buffer full for 5 s")
			}
			continue
		case err != nil:
			return err
		}
		b = b[n:]
	}
	return nil
}

// shutdown ends both directions; the receiver then reads end-of-file and closes the descriptor. Caller holds
// the client's write lock.
func (r *rawConn) shutdown() {
	if r.fd >= 0 {
		_ = unix.Shutdown(r.fd, unix.SHUT_RDWR)
	}
}

// rxLoop is a worker's epoll receiver.
type rxLoop struct {
	w    *worker
	epfd int

	mu    sync.Mutex
	conns []*client // by the slot stored in the epoll event; nil once removed
}

func newRxLoop(w *worker) (*rxLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cannot create epoll instance: %w", err)
	}
	l := &rxLoop{w: w, epfd: epfd}
	// The loop's goroutine holds a P while it waits in epoll_wait (a raw system call the runtime only takes
	// the P back from after a sysmon tick): give the runtime one more, so publishers' timers and their acks
	// (read through Go's poller) are not left waiting for sysmon.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	go l.run()
	return l, nil
}

// add hands a subscriber whose handshake is done to the loop; c.raw is set.
func (l *rxLoop) add(c *client) error {
	l.mu.Lock()
	slot := len(l.conns)
	l.conns = append(l.conns, c)
	l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(slot)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.raw.fd, &ev); err != nil {
		l.mu.Lock()
		l.conns[slot] = nil
		l.mu.Unlock()
		return fmt.Errorf("cannot add the socket to epoll: %w", err)
	}
	return nil
}

// run waits for readable sockets until the process ends. Level-triggered: one read per socket per wake-up;
// a socket with more left is reported again.
func (l *rxLoop) run() {
	events := make([]unix.EpollEvent, 512)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))*2)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.w.noteErr("epoll_wait: " + err.Error())
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := 0; i < n; i++ {
			slot := int(events[i].Fd)
			l.mu.Lock()
			c := l.conns[slot]
			l.mu.Unlock()
			if c != nil && !c.readRaw(oob) {
				l.remove(slot, c)
			}
		}
	}
}

func (l *rxLoop) remove(slot int, c *client) {
	l.mu.Lock()
	l.conns[slot] = nil
	l.mu.Unlock()
	c.wmu.Lock()
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.raw.fd, nil)
	_ = unix.Close(c.raw.fd)
	c.raw.fd = -1
	c.wmu.Unlock()
	close(c.doneCh)
	c.w.wg.Done()
}

// readRaw reads what one socket has and handles the whole frames in it; false when the connection is over.
// Runs on the rxLoop goroutine, which owns the client's read state as readLoop does on the goroutine path.
func (c *client) readRaw(oob []byte) bool {
	if c.rlen == len(c.rbuf) {
		c.grow(0)
	}
	n, oobn, _, _, err := unix.Recvmsg(c.raw.fd, c.rbuf[c.rlen:], oob, 0)
	readNs := stats.NowNs()
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return true
	}
	if err == nil && n == 0 {
		err = errEOF
	}
	if err != nil {
		c.ended(err)
		return false
	}
	arrival, ok := kernelStamp(oob[:oobn])
	if !ok || arrival > readNs {
		arrival = readNs
	}
	c.rlen += n
	return c.consume(arrival, readNs)
}

// kernelStamp finds the SCM_TIMESTAMPNS time (ns since the Unix epoch) in a recvmsg control buffer.
func kernelStamp(oob []byte) (int64, bool) {
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= hdr+int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[hdr]))
			return ts.Nano(), true
		}
		step := unix.CmsgSpace(l - hdr)
		if step > len(oob) {
			return 0, false
		}
		oob = oob[step:]
	}
	return 0, false
}

// take moves a subscriber whose handshake is done onto the receiver: its socket leaves Go's poller and is read
// by the loop from now on. Bytes already read (after the SUBACK) stay in rbuf and are handled with the next read.
func (l *rxLoop) take(c *client) error {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return errors.New("epoll receiver: not a plain TCP connection")
	}
	raw, err := detach(tc)
	if err != nil {
		return fmt.Errorf("epoll receiver: %w", err)
	}
	c.wmu.Lock()
	c.raw = raw
	c.wmu.Unlock()
	if err := l.add(c); err != nil {
		_ = unix.Close(raw.fd)
		return fmt.Errorf("epoll receiver: %w", err)
	}
	return nil
}
