package transport

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Deferred accept: a listening socket wakes its event loop once per connection, when the client's first
// bytes are there, instead of once for the handshake and once more for the CONNECT.
//
// An MQTT client always speaks first (CONNECT, a TLS ClientHello, a WebSocket upgrade or a PROXY header), so
// every listener sets TCP_DEFER_ACCEPT: the kernel keeps a connection whose client has sent nothing yet out
// of the accept queue, and the loop that accepts it finds the first packet already readable and serves it in
// the same turn. In a connect storm each loop turn (epoll_wait, and gnet's yield to the Go scheduler after an
// empty poll, which wakes a second thread) was paid twice per connection: issue 18 measured about a fifth of
// the server's CPU per connect saved. A client that connects and stays silent is accepted all the same after
// deferAcceptSeconds (the kernel's next SYN-ACK retransmission), and --connect-timeout runs from then.
//
// gnet creates the listening sockets of every loop but the first itself and does not expose them; they are
// found among the process's file descriptors as the listening TCP sockets bound to the address of the first
// (which gnet does expose, as a duplicate). Only the loops of this engine can hold that address: a second
// socket on it fails to bind unless it joins the group with SO_REUSEPORT, which ExclusiveReusePort keeps to
// the loops of one engine. A descriptor closed and reused between the check and setsockopt is harmless: the option
// means nothing on a socket that does not listen.

// deferAcceptSeconds is TCP_DEFER_ACCEPT's value: how long a silent client waits to be accepted (rounded by
// the kernel to its SYN-ACK retransmissions: one, about a second after the handshake).
const deferAcceptSeconds = 1

// DeferAccept sets TCP_DEFER_ACCEPT on every listening socket of eng bound to one of addrs (tcp://host:port)
// and returns how many it set. Runs once, when every loop listens (the engine's first tick), off the loops.
func DeferAccept(eng gnet.Engine, addrs []string) (int, error) {
	var want []unix.Sockaddr
	for _, a := range addrs {
		_, hostport, _ := strings.Cut(a, "://")
		fd, err := eng.DupListener("tcp", hostport) // gnet names tcp4 and tcp6 listeners "tcp" too
		if err != nil {
			return 0, fmt.Errorf("cannot find the listening socket of %s: %w", a, err)
		}
		sa, err := unix.Getsockname(fd)
		_ = unix.Close(fd)
		if err != nil {
			return 0, fmt.Errorf("cannot read the address of the listening socket of %s: %w", a, err)
		}
		want = append(want, sa)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("cannot list the process's file descriptors: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || !listensOn(fd, want) {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSeconds); err != nil {
			errs = append(errs, fmt.Errorf("cannot set TCP_DEFER_ACCEPT on descriptor %d: %w", fd, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// listensOn reports whether fd is a listening TCP socket bound to one of addrs.
func listensOn(fd int, addrs []unix.Sockaddr) bool {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return false // not a socket, or not listening
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	for _, w := range addrs {
		if sameSockaddr(sa, w) {
			return true
		}
	}
	return false
}

func sameSockaddr(a, b unix.Sockaddr) bool {
	switch a := a.(type) {
	case *unix.SockaddrInet4:
		b, ok := b.(*unix.SockaddrInet4)
		return ok && a.Port == b.Port && a.Addr == b.Addr
	case *unix.SockaddrInet6:
		b, ok := b.(*unix.SockaddrInet6)
		return ok && a.Port == b.Port && a.Addr == b.Addr && a.ZoneId == b.ZoneId
	}
	return false
}
