package server_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// TLS handshakes are bounded: ones that never finish or are aborted cost nothing after the connect timeout,
// and at most the configured number run at once. Helpers (the test CA, TLS files, dialers):
// transport_tls_test.go.

// stallConn passes the client's first write (its ClientHello) and swallows the rest, so the server waits for
// a Finished that never comes.
type stallConn struct {
	net.Conn
	writes int
}

func (s *stallConn) Write(b []byte) (int, error) {
	if s.writes++; s.writes > 1 {
		return len(b), nil
	}
	return s.Conn.Write(b)
}

// Handshakes that never finish cost no goroutine after the connect timeout closes them, nor do sockets that
// leave mid-handshake; TLS sockets that never speak are closed by the same timeout. Garbage on a TLS port is a
// transport error.
func TestTLSAbortedHandshakes(t *testing.T) {
	ca := newTestCA(t, "test CA")
	f, addr := startTLSFerry(t, writeTLSFiles(t, ca, "ferry", 2, nil), server.ConnectTimeout(time.Second))
	conf := &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"}
	mustTLSV5(t, addr, conf, "warm-up") // the loops and their goroutines exist before the baseline
	baseline := runtime.NumGoroutine()
	const slack = 4 // background goroutines of the test's Kafka may come and go; n/3 handshakes could not hide

	const n = 60
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	for i := range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		conns = append(conns, nc)
		mu.Unlock()
		switch i % 3 {
		case 0: // silent
		case 1: // the handshake stalls after the server's flight
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = tls.Client(&stallConn{Conn: nc}, conf).Handshake()
			}()
		case 2: // half a ClientHello, then the client leaves
			wg.Add(1)
			go func() {
				defer wg.Done()
				hello := captureClientHello(t, conf)
				_, _ = nc.Write(hello[:len(hello)/2])
				time.Sleep(100 * time.Millisecond)
				nc.Close()
			}()
		}
	}
	wg.Wait()
	t.Logf("goroutines: %d before, %d with %d stalled handshakes", baseline, runtime.NumGoroutine(), n/3)
	// Every socket the server keeps is closed by the connect timeout.
	for _, nc := range conns {
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("socket not closed by the server: %v", err)
		}
		nc.Close()
	}
	waitFor(t, "handshake goroutines to end", func() bool { return runtime.NumGoroutine() <= baseline+slack })
	if to := f.srv.Metrics().Snapshot().ConnectTimeouts; to < 2*n/3 {
		t.Fatalf("%d connect timeouts, want at least %d", to, 2*n/3)
	}

	// Garbage: plain MQTT, HTTP, and bytes that start like a TLS record but are not one.
	before := f.srv.Metrics().Snapshot().TransportErrors
	connect := mqttcodec.AppendConnect(nil, &mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 4, CleanStart: true, ClientID: []byte("x")})
	for _, junk := range [][]byte{connect, []byte("GET / HTTP/1.1\r\n\r\n"), append([]byte{22, 3, 1, 0, 8}, "garbage!"...)} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write(junk)
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil && !isReset(err) { // returns when the server closes
			t.Fatalf("%q: not closed by the server: %v", junk, err)
		}
		nc.Close()
	}
	waitFor(t, "3 transport errors", func() bool { return f.srv.Metrics().Snapshot().TransportErrors >= before+3 })
	waitFor(t, "handshake goroutines to end", func() bool { return runtime.NumGoroutine() <= baseline+slack })
}

// captureClientHello returns the first record a client sends.
func captureClientHello(t testing.TB, conf *tls.Config) []byte {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _ = tls.Client(a, conf).Handshake() }()
	buf := make([]byte, 64<<10)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Error(err)
	}
	return buf[:n]
}

// With one handshake slot, a client whose handshake stalls holds it until it leaves; the next client waits its
// turn, then connects.
func TestTLSHandshakeLimit(t *testing.T) {
	ca := newTestCA(t, "test CA")
	_, addr := startTLSFerry(t, writeTLSFiles(t, ca, "ferry", 2, nil), server.TLSMaxHandshakes(1))
	conf := &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := tls.Client(&stallConn{Conn: nc}, conf).Handshake(); err != nil {
		t.Fatal(err)
	}
	start := time.Now() // before the timer: a slow start of the next line cannot shorten the measured wait
	time.AfterFunc(time.Second, func() { nc.Close() })
	mustTLSV5(t, addr, conf, "waited")
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("connected after %v: the stalled handshake did not hold the only slot", d)
	}
}
