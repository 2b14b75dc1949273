package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// The embedded broker's in-process connections.
//
// Ferry's own Kafka clients reach the embedded broker over in-memory connections (memconn.go) instead of
// loopback TCP; Kafka tools still reach it on its TCP address. Over TCP every produce and fetch request and
// response costs a write and one or more reads on each side, and each side's goroutine is woken through Go's
// network poller, which a thread must be polling. In memory the bytes are copied into the reader's buffer and
// the reader is woken like any goroutine blocked on a channel: no system call, no poller. A write appends to the peer's buffer and returns, as on a socket with room; a closed connection
// reports net.ErrClosed or EOF as a socket does, so franz-go retries what it would retry on TCP (the connection
// tracker closes seed connections on purpose, conns.go). Read deadlines work as on a socket.

// inprocListener is the embedded broker's listener: the connections accepted on its TCP listener and the
// in-process ones dialed with dial.
type inprocListener struct {
	net.Listener // TCP, with the advertised address (advListener)

	pipes     chan net.Conn // the broker's ends of dialed pipes
	tcp       chan accepted // from acceptTCP
	done      chan struct{}
	closeOnce sync.Once
}

type accepted struct {
	c   net.Conn
	err error
}

func newInprocListener(ln net.Listener) *inprocListener {
	l := &inprocListener{
		Listener: ln,
		pipes:    make(chan net.Conn),
		tcp:      make(chan accepted),
		done:     make(chan struct{}),
	}
	go l.acceptTCP()
	return l
}

// acceptTCP runs on its own goroutine until the TCP listener fails or is closed.
func (l *inprocListener) acceptTCP() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.tcp <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// Accept returns the next TCP or in-process connection. The embedded broker calls it from its accept loop.
func (l *inprocListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.pipes:
		return c, nil
	case a := <-l.tcp:
		return a.c, a.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the TCP listener and refuses further in-process dials.
func (l *inprocListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}

var errInprocClosed = errors.New("embedded Kafka is closed")

// dial opens an in-process connection to the broker. It blocks until the broker's accept loop takes the
// connection, ctx is done, or the listener closes.
func (l *inprocListener) dial(ctx context.Context) (net.Conn, error) {
	client, broker := memPipe()
	select {
	case l.pipes <- broker:
		return client, nil
	case <-ctx.Done():
		err := ctx.Err()
		client.Close()
		broker.Close()
		return nil, err
	case <-l.done:
		client.Close()
		broker.Close()
		return nil, errInprocClosed
	}
}

// dialer returns a franz-go dial function that connects to addr (the embedded broker's advertised address)
// in process and to any other address over TCP, within timeout.
func (l *inprocListener) dialer(addr string, timeout time.Duration) func(ctx context.Context, network, host string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		if host != addr {
			return d.DialContext(ctx, network, host)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := l.dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("cannot connect to embedded Kafka in process: %w", err)
		}
		return c, nil
	}
}
