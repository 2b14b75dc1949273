package load

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrymq/ferry/perf/internal/stats"
)

// A detached socket reports the kernel's receive time with each read: the time the bytes arrived, before
// the write that sent them returned, and not the (later) time they were read.
func TestDetachedSocketCarriesReceiveTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := detach(nc.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw.fd)
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	buf := make([]byte, 64)
	oob := make([]byte, 128)
	// Linux turns receive timestamps on for the whole stack when the first socket asks for them, from a work
	// queue: bytes that arrive before that ran carry no time (a TCP read then has no SCM_TIMESTAMPNS). Wait
	// for a probe byte that carries one, as the harness's first replies may not (it then uses the read time).
	for i := 0; ; i++ {
		if _, err := peer.Write([]byte("p")); err != nil {
			t.Fatal(err)
		}
		pfd := []unix.PollFd{{Fd: int32(raw.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 5000); err != nil {
			t.Fatal(err)
		}
		n, oobn, _, _, err := unix.Recvmsg(raw.fd, buf, oob, 0)
		if err != nil || string(buf[:n]) != "p" {
			t.Fatalf("recvmsg of the probe: %q, %v", buf[:n], err)
		}
		if _, ok := kernelStamp(oob[:oobn]); ok {
			break
		}
		if i == 200 {
			t.Fatal("no SCM_TIMESTAMPNS in the control message of 200 probes over 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	before := stats.NowNs()
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	written := stats.NowNs()
	time.Sleep(20 * time.Millisecond) // the bytes wait in the receive queue

	pfd := []unix.PollFd{{Fd: int32(raw.fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 5000); err != nil {
		t.Fatal(err)
	}
	n, oobn, _, _, err := unix.Recvmsg(raw.fd, buf, oob, 0)
	read := stats.NowNs()
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("recvmsg: %q, %v", buf[:n], err)
	}
	at, ok := kernelStamp(oob[:oobn])
	if !ok {
		t.Fatal("no SCM_TIMESTAMPNS in the control message")
	}
	if at < before || at > written {
		t.Fatalf("receive time %d outside the write [%d, %d] (read at %d)", at, before, written, read)
	}

	// The descriptor stays non-blocking after it left Go's poller: an empty socket answers EAGAIN.
	if _, _, _, _, err := unix.Recvmsg(raw.fd, buf, oob, 0); err != unix.EAGAIN {
		t.Fatalf("read of an empty socket: %v, want EAGAIN", err)
	}
}

func TestKernelStampIgnoresOtherMessages(t *testing.T) {
	if _, ok := kernelStamp(nil); ok {
		t.Fatal("stamp found in an empty control buffer")
	}
	if _, ok := kernelStamp(make([]byte, 3)); ok {
		t.Fatal("stamp found in a truncated control buffer")
	}
	b := unix.UnixRights(0) // an SCM_RIGHTS message
	if _, ok := kernelStamp(b); ok {
		t.Fatal("SCM_RIGHTS taken for a stamp")
	}
}
