package kafkamux

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// An in-memory connection behaves as a socket where franz-go and the embedded broker look: writes do not wait
// for the reader, a read deadline ends a blocked read with a timeout, and a close gives the peer what was
// written before it, then EOF, and the closing end net.ErrClosed.
func TestMemConnAsASocket(t *testing.T) {
	a, b := memPipe()
	for range 3 { // nobody reads yet: the writes return at once
		if n, err := a.Write([]byte("req")); n != 3 || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	got := make([]byte, 9)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "reqreqreq" {
		t.Fatalf("read %q, %v", got, err)
	}

	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	b.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(10 * time.Millisecond)
		a.Write([]byte("resp"))
	}()
	if n, err := b.Read(got); err != nil || string(got[:n]) != "resp" {
		t.Fatalf("blocked read woken by a write: %q, %v", got[:n], err)
	}

	a.Write([]byte("last"))
	a.Close()
	if n, err := b.Read(got); err != nil || string(got[:n]) != "last" {
		t.Fatalf("after the peer closed: %q, %v, want what it wrote before", got[:n], err)
	}
	if _, err := b.Read(got); err != io.EOF {
		t.Fatalf("after the peer closed and the bytes were read: %v, want EOF", err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write to a closed peer: %v, want net.ErrClosed", err)
	}
	if _, err := a.Read(got); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on the closed end: %v, want net.ErrClosed", err)
	}
}
