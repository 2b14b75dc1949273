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

// A request or response of ordinary size goes through an in-memory connection without allocating once the
// direction has a buffer: the array read empty is reused by the next write. Partial reads keep the order, and
// a large message's array is not kept.
func TestMemConnReusesItsBuffer(t *testing.T) {
	a, b := memPipe()
	msg := make([]byte, 1500)
	for i := range msg {
		msg[i] = byte(i)
	}
	got := make([]byte, len(msg))
	roundTrip := func() {
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Write(msg[:100]); err != nil {
			t.Fatal(err)
		}
		for _, want := range [][]byte{msg, msg[:100]} {
			if _, err := io.ReadFull(b, got[:len(want)]); err != nil || string(got[:len(want)]) != string(want) {
				t.Fatalf("read %d bytes: %v, or not the bytes written", len(want), err)
			}
		}
	}
	roundTrip()
	if n := testing.AllocsPerRun(100, roundTrip); n != 0 {
		t.Fatalf("%v allocations per write and read of 1,600 bytes, want 0", n)
	}
	big := make([]byte, 2*memBufKeep)
	a.Write(big)
	if _, err := io.ReadFull(b, make([]byte, len(big))); err != nil {
		t.Fatal(err)
	}
	m := b.(*memConn).in
	m.mu.Lock()
	defer m.mu.Unlock()
	if cap(m.b) != 0 || m.r != 0 {
		t.Fatalf("after a %d-byte message was read: buffer of %d bytes kept (read offset %d), want none", len(big), cap(m.b), m.r)
	}
}
