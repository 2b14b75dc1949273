package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// The TLS layer's handshake runs as a coroutine of the loop: these tests are the loop, calling unwrap with
// the bytes a real crypto/tls client sends over a loopback socket, and check what the layer keeps and hands
// back: no goroutine, no buffer and no slot outlive a handshake.

// loopConn is a Conn whose socket is the server's end of a loopback TCP connection: writeBelow's bytes go
// to it at once, and Wake is counted (it is how a queued handshake is woken).
type loopConn struct {
	gnet.Conn // only Write and Wake are used
	sh        *Shared
	scr       [2][]byte
	nc        net.Conn
	wakes     int
}

func (c *loopConn) Gnet() gnet.Conn               { return c }
func (c *loopConn) Closed() bool                  { return false }
func (c *loopConn) Scratch() *[2][]byte           { return &c.scr }
func (c *loopConn) Shared() *Shared               { return c.sh }
func (c *loopConn) Write(b []byte) (int, error)   { return c.nc.Write(b) }
func (c *loopConn) Wake(gnet.AsyncCallback) error { c.wakes++; return nil }
func (c *loopConn) AsyncWrite([]byte, gnet.AsyncCallback) error {
	panic("the TLS layer wrote from another goroutine")
}

// tlsShared is a Shared serving a fresh self-signed ECDSA certificate, with at most max handshakes at once.
func tlsShared(t *testing.T, max int) *Shared {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, keyf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := newTLSServer(TLSFiles{Cert: cert, Key: keyf, MaxHandshakes: max})
	if err != nil {
		t.Fatal(err)
	}
	return &Shared{maxPacket: 1 << 20, tls: ts}
}

// tlsPair connects a crypto/tls client to a TLS layer: the client runs on its own goroutine, handshakes,
// writes msg and reads for 100 ms (taking in a session ticket); its result arrives on the returned channel.
func tlsPair(t *testing.T, sh *Shared, conf *tls.Config, msg string) (*Transport, *tlsLayer, *loopConn, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	res := make(chan error, 1)
	go func() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			res <- err
			return
		}
		t.Cleanup(func() { nc.Close() })
		tc := tls.Client(nc, conf)
		if err := tc.Handshake(); err != nil {
			res <- err
			return
		}
		_, err = tc.Write([]byte(msg))
		// The session ticket came with the server's flight; crypto/tls takes it in on a Read.
		_ = nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = tc.Read(make([]byte, 1))
		res <- err
	}()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &loopConn{sh: sh, nc: nc}
	tr := &Transport{c: c}
	ly, err := newTLSLayer(tr, &Spec{url: "tls://test"})
	if err != nil {
		t.Fatal(err)
	}
	tr.layers = []layer{ly}
	return tr, ly.(*tlsLayer), c, res
}

// serve is the loop's part: it reads what the client sends and unwraps it until the layer yields want bytes
// of plaintext, or the deadline passes.
func serve(t *testing.T, tr *Transport, l *tlsLayer, c *loopConn, want int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 64<<10)
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(out) < want {
		n, err := c.nc.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes of plaintext: %v", len(out), err)
		}
		var used int
		out, used, err = l.unwrap(tr, out, buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if used != n {
			t.Fatalf("unwrap took %d of %d bytes", used, n)
		}
	}
	return out
}

// A handshake is the loop's from the first byte to the last: nothing is written from another goroutine
// (loopConn panics on AsyncWrite), the connection is not woken, and when the handshake is over its coroutine
// has ended and the layer keeps no buffer of the pipe. Resumed handshakes take the same path.
func TestTLSHandshakeOnTheLoop(t *testing.T) {
	sh := tlsShared(t, 0)
	conf := &tls.Config{InsecureSkipVerify: true, ServerName: "ferry", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i, msg := range []string{"first, full handshake", "second, resumed"} {
		tr, l, c, res := tlsPair(t, sh, conf, msg)
		if got := serve(t, tr, l, c, len(msg)); string(got) != msg {
			t.Fatalf("connection %d: plaintext %q, want %q", i, got, msg)
		}
		if err := <-res; err != nil {
			t.Fatalf("connection %d: client: %v", i, err)
		}
		if !l.ready || l.resume != nil || l.stop != nil || l.state.Load() != hsOver {
			t.Fatalf("connection %d: handshake not over: ready %v, coroutine %v, state %d", i, l.ready, l.resume != nil, l.state.Load())
		}
		p := &l.pipe
		if p.src != nil || p.pend != nil || p.out != nil || p.yield != nil {
			t.Fatalf("connection %d: the pipe keeps src %d, pend %d, out %d bytes, yield %v", i, len(p.src), len(p.pend), len(p.out), p.yield != nil)
		}
		if c.wakes != 0 {
			t.Fatalf("connection %d: woken %d times", i, c.wakes)
		}
		if resumed := l.tc.ConnectionState().DidResume; resumed != (i == 1) {
			t.Fatalf("connection %d: resumed %v", i, resumed)
		}
		if h := &sh.tls.hs; h.running != 0 {
			t.Fatalf("connection %d: %d handshake slots still taken", i, h.running)
		}
	}
}

// With one slot, the second client's handshake waits with its bytes copied; when the first one's socket
// closes mid-handshake its coroutine ends, the slot passes to the second, which is woken and then served
// (holding) from the copied bytes.
func TestTLSHandshakeQueue(t *testing.T) {
	sh := tlsShared(t, 1)
	conf := &tls.Config{InsecureSkipVerify: true}
	tr1, l1, c1, _ := tlsPair(t, sh, conf, "never sent")
	buf := make([]byte, 64<<10)
	_ = c1.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c1.nc.Read(buf) // the ClientHello
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l1.unwrap(tr1, nil, buf[:n]); err != nil {
		t.Fatal(err)
	}
	if l1.state.Load() != hsRunning || l1.resume == nil {
		t.Fatalf("first handshake: state %d, want it waiting for the client's Finished", l1.state.Load())
	}

	const msg = "waited its turn"
	tr2, l2, c2, res2 := tlsPair(t, sh, conf, msg)
	_ = c2.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err = c2.nc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, used, err := l2.unwrap(tr2, nil, buf[:n]); err != nil || used != n {
		t.Fatalf("queued: used %d of %d, %v", used, n, err)
	}
	if l2.state.Load() != hsQueued || len(l2.pipe.pend) != n || l2.tc != nil {
		t.Fatalf("second handshake: state %d with %d bytes kept, want queued with %d", l2.state.Load(), len(l2.pipe.pend), n)
	}

	tr1.Release() // the first client's socket closed
	if l1.resume != nil || l1.state.Load() != hsOver {
		t.Fatalf("first handshake still running after release")
	}
	if c2.wakes != 1 || !l2.holding() {
		t.Fatalf("second connection: woken %d times, holding %v; want woken once and holding", c2.wakes, l2.holding())
	}
	out, _, err := l2.unwrap(tr2, nil, nil) // the wake-up: pull calls a holding layer with nothing new
	if err != nil {
		t.Fatal(err)
	}
	if got := serve(t, tr2, l2, c2, len(msg)-len(out)); string(out)+string(got) != msg {
		t.Fatalf("plaintext %q, want %q", string(out)+string(got), msg)
	}
	if err := <-res2; err != nil {
		t.Fatal(err)
	}
	if h := &sh.tls.hs; h.running != 0 || h.head != nil {
		t.Fatalf("%d slots taken, queue empty %v", h.running, h.head == nil)
	}
}

// A handshake that fails (here the client refuses the certificate and says so with an alert) ends on the
// loop: unwrap returns its error, the coroutine has ended and the slot is given back.
func TestTLSHandshakeFailureOnTheLoop(t *testing.T) {
	sh := tlsShared(t, 1)
	conf := &tls.Config{ServerName: "127.0.0.1"} // verifies the self-signed certificate: fails
	tr, l, c, res := tlsPair(t, sh, conf, "")
	buf := make([]byte, 64<<10)
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	for err == nil {
		var n int
		if n, err = c.nc.Read(buf); err != nil {
			t.Fatal(err)
		}
		_, _, err = l.unwrap(tr, nil, buf[:n])
	}
	if cerr := <-res; !errors.As(cerr, new(*tls.CertificateVerificationError)) {
		t.Fatalf("client: %v, want a certificate verification error", cerr)
	}
	if l.hsErr == nil || !errors.Is(err, l.hsErr) {
		t.Fatalf("server: unwrap returned %v, the handshake %v", err, l.hsErr)
	}
	if l.resume != nil || l.state.Load() != hsOver || sh.tls.hs.running != 0 {
		t.Fatalf("after the failure: coroutine %v, state %d, %d slots taken", l.resume != nil, l.state.Load(), sh.tls.hs.running)
	}
}
