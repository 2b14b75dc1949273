//go:build linux

package server_test

import (
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/sys/unix"

	"github.com/ferrymq/ferry/server"
)

// Every loop's listening socket, of every listener, defers accepting a connection until its first bytes
// (server/transport/deferaccept_linux.go): gnet creates the sockets of loops past the first without exposing
// them, so the check looks at the process's sockets as the server does, and finds one per loop.
func TestListenersDeferAccept(t *testing.T) {
	ws := "127.0.0.1:" + strconv.Itoa(freePort(t))
	f := startFerry(t, server.Listen("ws://"+ws+"/mqtt"))
	for _, addr := range []string{f.addr, ws} {
		fds := listeningSockets(t, addr)
		if len(fds) != 2 {
			t.Fatalf("%s: %d listening sockets in the process, want one per event loop (2)", addr, len(fds))
		}
		for _, fd := range fds {
			v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
			if err != nil {
				t.Fatal(err)
			}
			if v <= 0 {
				t.Errorf("%s: listening socket %d has TCP_DEFER_ACCEPT %d, want it set", addr, fd, v)
			}
		}
	}
	// Deferred or not, a client that speaks is served by whichever loop the kernel picks.
	for i := range 8 {
		dialV5(t, f.addr, &paho.Connect{ClientID: "deferred-" + strconv.Itoa(i), CleanStart: true})
	}
}

// listeningSockets returns the descriptors of the process's listening TCP sockets bound to addr (host:port).
func listeningSockets(t *testing.T, addr string) []int {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if in4, ok := sa.(*unix.SockaddrInet4); err == nil && ok && in4.Port == ap.Port && net.IP(in4.Addr[:]).Equal(ap.IP) {
			fds = append(fds, fd)
		}
	}
	return fds
}
