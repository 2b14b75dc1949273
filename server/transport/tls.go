package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// The TLS layer serves tls:// and wss:// listeners with crypto/tls, driven by the event loop through an
// in-memory net.Conn (tlsPipe) instead of a socket:
//
//   - The handshake runs on a short-lived goroutine: crypto/tls cannot be driven step by step through a
//     handshake (a handshake that returns an error is over). The pipe's Read blocks on a sync.Cond until the
//     loop's unwrap hands it the bytes that arrived; its Write sends the handshake's records with
//     gnet.Conn.AsyncWrite. The goroutine starts with the client's first byte, so a silent socket costs none;
//     at most TLSMaxHandshakes are in progress and at most half the cores compute at once (see hsLimiter). When the handshake ends, the goroutine records
//     the client's identity and wakes the connection; from then on tls.Conn belongs to the loop.
//   - After the handshake nothing blocks. unwrap lends tls.Conn the bytes from below and calls Read until the
//     pipe says it has nothing more: the pipe's Read then returns errWouldBlock, a net.Error whose Temporary()
//     is true, which crypto/tls (Go 1.26 conn.go, readRecordOrCCS) returns without making it sticky, keeping
//     a partial record in its own buffer for the next call. Read hands back what whole records held. wrap
//     calls tls.Conn.Write, whose records the pipe appends to the caller's buffer; goodbye is CloseWrite's
//     close_notify.
//   - Writes that crypto/tls makes inside Read (a TLS 1.3 KeyUpdate answer, an alert before an error) land in
//     the pipe and are sent below by unwrap before it returns.
//
// Ordering: the handshake's last records go out by AsyncWrite before the loop writes application data. The
// loop adopts the finished handshake only when every AsyncWrite the goroutine made has run (pendingW = 0; the
// callbacks run on the loop after the write); until then it keeps feeding the pipe.
//
// Only the PROXY layer, which frames nothing, can be below TLS, so the goroutine's AsyncWrite needs no framing.
//
// Memory per idle connection after the handshake: the tls.Conn with its record state and read buffer, the
// layer and the pipe (measured: see docs/operations.md, "TLS"). The handshake's own state (certificates,
// transcript, goroutine stack) is garbage once it ends; the pipe's input buffer is dropped, and plaintext is
// decrypted through a pooled buffer, not one per connection.

// Client certificate policies of TLSClientAuth.
const (
	TLSClientCertRequire     = "require"         // a client must present a certificate the client CAs signed
	TLSClientCertVerifyGiven = "verify-if-given" // a certificate is optional, but verified when given
)

// tlsMaxPending bounds what a client may send before its handshake completes: the handshake messages
// (crypto/tls takes a certificate chain of up to 256 KiB) plus whatever it pipelines after its Finished.
const tlsMaxPending = 320 << 10

const (
	hsIdle    uint32 = iota // no byte from the client yet
	hsQueued                // waiting for a handshake slot
	hsRunning               // the handshake goroutine owns tls.Conn
	hsDone                  // the handshake succeeded; the loop takes tls.Conn once its writes are out
	hsFailed                // the handshake failed: hsErr says why
)

// tlsServer is the server's TLS state: the configuration in use, replaced whole by a reload.
type tlsServer struct {
	cert, key, clientCA string
	auth                tls.ClientAuthType
	groups              []tls.CurveID // nil = Go's default
	cur                 atomic.Pointer[tls.Config]
	base                *tls.Config // each connection starts from it; it asks cur for the real one
	reload              sync.Mutex  // one load at a time
	hs                  hsLimiter
}

// TLSFiles are the TLS settings of tls:// and wss:// listeners.
type TLSFiles struct {
	Cert, Key     string // PEM certificate chain and its private key
	ClientCA      string // PEM CAs that sign client certificates; "" = none asked for
	ClientAuth    string // TLSClientCertRequire or TLSClientCertVerifyGiven
	MaxHandshakes int    // TLS handshakes in progress at once; 0 = no bound
	// KeyExchanges are the (EC)DHE groups offered, in the server's order of preference; nil = Go's default
	// (the hybrid post-quantum X25519MLKEM768 first). See ParseKeyExchanges.
	KeyExchanges []tls.CurveID
}

// keyExchanges are the groups ParseKeyExchanges knows, by the names crypto/tls gives them.
var keyExchanges = []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024,
	tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}

// ParseKeyExchanges reads a comma-separated list of key exchange groups in order of preference, e.g.
// "X25519MLKEM768,X25519,CurveP256" (crypto/tls's names; "P-256", "P-384" and "P-521" are accepted too).
// "" gives nil: Go's default. A TLS 1.3 client that sent no key share for the first group both support is
// asked for one (a HelloRetryRequest, one more round trip), so a list should keep the groups devices send.
func ParseKeyExchanges(s string) ([]tls.CurveID, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ids []tls.CurveID
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		var id tls.CurveID
		for _, k := range keyExchanges {
			if strings.EqualFold(name, k.String()) || strings.EqualFold(name, strings.Replace(k.String(), "CurveP", "P-", 1)) {
				id = k
			}
		}
		if id == 0 {
			return nil, fmt.Errorf("TLS key exchange %q is not one of %v", name, keyExchanges)
		}
		if slices.Contains(ids, id) {
			return nil, fmt.Errorf("TLS key exchange %q is named twice", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// CheckTLS reports whether f's files can be used, without keeping anything.
func CheckTLS(f TLSFiles) error {
	_, err := newTLSServer(f)
	return err
}

// initTLS loads the certificates a tls:// or wss:// listener needs, once for all of them.
func (sh *Shared) initTLS(ls *Spec, c *cfg) error {
	if sh.tls != nil {
		return nil
	}
	ts, err := newTLSServer(c.tls)
	if err != nil {
		return fmt.Errorf("invalid MQTT listener %q: %w", ls.url, err)
	}
	ts.hs.onFail = c.handshakeFailed
	sh.tls = ts
	return nil
}

func newTLSServer(f TLSFiles) (*tlsServer, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs a certificate and its key (--tls-cert and --tls-key)")
	}
	ts := &tlsServer{cert: f.Cert, key: f.Key, clientCA: f.ClientCA, auth: tls.RequireAndVerifyClientCert,
		groups: f.KeyExchanges}
	if f.ClientAuth == TLSClientCertVerifyGiven {
		ts.auth = tls.VerifyClientCertIfGiven
	}
	ts.hs.max = f.MaxHandshakes
	ts.hs.cpu = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))
	conf, err := ts.load()
	if err != nil {
		return nil, err
	}
	ts.cur.Store(conf)
	ts.base = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return ts.cur.Load(), nil },
	}
	return ts, nil
}

// load reads the certificate, key and client CA files into a new configuration. Errors name the file.
func (ts *tlsServer) load() (*tls.Config, error) {
	certPEM, err := os.ReadFile(ts.cert)
	if err != nil {
		return nil, fmt.Errorf("cannot read TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(ts.key)
	if err != nil {
		return nil, fmt.Errorf("cannot read TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cannot use TLS certificate %s with key %s: %w", ts.cert, ts.key, err)
	}
	conf := &tls.Config{
		Certificates:     []tls.Certificate{cert},
		MinVersion:       tls.VersionTLS12, // TLS 1.2 and 1.3
		CurvePreferences: ts.groups,
	}
	if ts.clientCA != "" {
		caPEM, err := os.ReadFile(ts.clientCA)
		if err != nil {
			return nil, fmt.Errorf("cannot read TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("cannot use TLS client CA %s: no PEM certificate in it", ts.clientCA)
		}
		conf.ClientCAs, conf.ClientAuth = pool, ts.auth
	}
	return conf, nil
}

// describe names the certificate of conf for logs.
func describeCert(conf *tls.Config) []any {
	leaf := conf.Certificates[0].Leaf
	if leaf == nil {
		return nil
	}
	return []any{"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
}

// ReloadTLS reads the TLS certificate, key and client CA files again (after a certificate renewal) and logs
// the new certificate to log. New handshakes use the new files; established connections keep their session.
// If a file cannot be used, the certificates in use stay and the error says which file. Without a TLS
// listener it does nothing. Safe to call from any goroutine.
func (sh *Shared) ReloadTLS(log *slog.Logger) error {
	ts := sh.tls
	if ts == nil {
		return nil
	}
	ts.reload.Lock()
	defer ts.reload.Unlock()
	conf, err := ts.load()
	if err != nil {
		return err
	}
	ts.cur.Store(conf)
	log.Info("TLS certificates reloaded", describeCert(conf)...)
	return nil
}

// tlsLayer is one connection's TLS state, kept small: idle connections pay for it.
type tlsLayer struct {
	gc       gnet.Conn
	tc       *tls.Conn
	pipe     tlsPipe
	state    atomic.Uint32
	pendingW atomic.Int32       // AsyncWrites of the handshake goroutine not yet run on the loop
	wrote    gnet.AsyncCallback // counts them down; runs on the loop
	hsErr    error              // set by the goroutine before state hsFailed
	ident    string             // set by the goroutine before state hsDone
	next     *tlsLayer          // hsLimiter's queue
	idx      uint8              // the layer's position in the transport: its own writes go below it
	ready    bool               // loop-owned: the loop has taken tls.Conn over
	reported bool               // loop-owned: unwrap returned the handshake's failure
}

// newTLSLayer builds the TLS layer of one connection; t holds the layers below it already.
func newTLSLayer(t *Transport, ls *Spec) (layer, error) {
	if t.c.Shared().tls == nil {
		return nil, fmt.Errorf("BUG: listener %q has no TLS configuration", ls.url)
	}
	l := &tlsLayer{gc: t.c.Gnet(), idx: uint8(len(t.layers))}
	l.pipe.l = l
	l.pipe.cond.L = &l.pipe.mu
	return l, nil // tls.Conn comes with the first byte: a silent socket does not pay for it
}

// errWouldBlock is what the pipe's Read says on the loop when it has no more bytes: temporary, so crypto/tls
// keeps its state and the caller tries again when more arrive.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tls pipe: no more bytes buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// holding reports whether unwrap has work without new bytes: a finished (or failed) handshake to take over.
func (l *tlsLayer) holding() bool { return !l.ready && l.state.Load() >= hsDone }

// unwrap runs on the connection's event loop.
func (l *tlsLayer) unwrap(t *Transport, out, in []byte) ([]byte, int, error) {
	if !l.ready {
		switch l.state.Load() {
		case hsIdle:
			if len(in) == 0 {
				return out, 0, nil
			}
			if in[0] != 22 { // a TLS record of type handshake; anything else is not a TLS client (plain MQTT?)
				return out, 0, fmt.Errorf("tls: the client's first byte is 0x%02x, not a TLS handshake record", in[0])
			}
			if err := l.pipe.feed(in); err != nil {
				return out, 0, err
			}
			ts := t.c.Shared().tls
			l.tc = tls.Server(&l.pipe, ts.base)
			l.state.Store(hsQueued)
			ts.hs.start(l)
			return out, len(in), nil
		case hsQueued, hsRunning:
			return out, len(in), l.pipe.feed(in)
		case hsFailed:
			l.reported = true
			return out, 0, fmt.Errorf("tls handshake: %w", l.hsErr)
		case hsDone:
			if l.pendingW.Load() != 0 {
				// The handshake's last records are still queued for the loop; application data must wait.
				return out, len(in), l.pipe.feed(in)
			}
			l.pipe.adopt()
			l.ready, l.wrote = true, nil
			t.ident = l.ident
		}
	}
	p := &l.pipe
	p.src = in
	bp := tlsReadBufs.Get().(*[]byte)
	buf := *bp
	var err error
	for {
		var n int
		n, err = l.tc.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
	}
	tlsReadBufs.Put(bp)
	used := len(in) - len(p.src)
	p.src = nil
	if len(p.out) > 0 { // crypto/tls wrote while reading: a KeyUpdate answer or an alert
		t.writeBelow(int(l.idx), p.out)
		p.out = nil
	}
	switch {
	case err == errWouldBlock:
		return out, used, nil
	case errors.Is(err, io.EOF):
		return out, used, ErrClosedByPeer // close_notify
	default:
		return out, used, fmt.Errorf("tls: %w", err)
	}
}

// tlsReadBufs hold the plaintext of one record on its way from tls.Conn to the layer above, so no connection
// keeps a record-sized buffer of its own.
var tlsReadBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// wrap encrypts p into records appended to dst. Runs on the loop.
func (l *tlsLayer) wrap(_ *Transport, dst, p []byte) []byte {
	if !l.ready {
		return dst // nothing above TLS writes before the handshake
	}
	l.pipe.out = dst
	_, _ = l.tc.Write(p) // the pipe cannot fail on the loop; a closed tls.Conn writes nothing
	dst, l.pipe.out = l.pipe.out, nil
	return dst
}

// goodbye appends the close_notify alert. Runs on the loop.
func (l *tlsLayer) goodbye(_ *Transport, dst []byte) []byte {
	if !l.ready {
		return dst // a handshake in progress belongs to its goroutine; release ends it
	}
	l.pipe.out = dst
	_ = l.tc.CloseWrite()
	dst, l.pipe.out = l.pipe.out, nil
	return dst
}

// release runs on the loop once the socket is closed: a handshake goroutine waiting for bytes gives up.
func (l *tlsLayer) release(t *Transport) {
	if l.ready {
		return
	}
	p := &l.pipe
	p.mu.Lock()
	p.closed = true
	p.pend = nil
	p.cond.Broadcast()
	st := l.state.Load()
	p.mu.Unlock()
	if st == hsFailed && !l.reported && !errors.Is(l.hsErr, net.ErrClosed) {
		// The client left on the handshake's alert before the loop read the failure: it still counts.
		t.c.Shared().tls.hs.failed(l.hsErr)
	}
}

// handshake runs on a handshake goroutine (hsLimiter) and hands tls.Conn back to the loop when it ends.
func (l *tlsLayer) handshake(h *hsLimiter) {
	l.wrote = func(c gnet.Conn, _ error) error {
		// The last of the handshake's records is out. If the loop found them still queued when bytes came,
		// those bytes wait in the pipe: wake it so it takes the connection over and reads them now, not at
		// the client's next packet.
		if l.pendingW.Add(-1) == 0 && l.state.Load() == hsDone {
			_ = c.Wake(nil)
		}
		return nil
	}
	l.pipe.hs = h
	h.cpuTake()
	l.pipe.busy = true
	err := l.tc.Handshake()
	if l.pipe.busy {
		l.pipe.busy = false
		h.cpuDone()
	}
	var ident string
	if err == nil {
		cs := l.tc.ConnectionState()
		if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
			ident = cs.VerifiedChains[0][0].Subject.CommonName
		}
	}
	// Under the pipe's lock, so that exactly one of this goroutine and release (the socket closed) reports a
	// failure that the loop will not read.
	p := &l.pipe
	p.mu.Lock()
	if err == nil {
		l.ident = ident
		l.state.Store(hsDone)
	} else {
		l.hsErr = err
		l.state.Store(hsFailed)
	}
	closed := p.closed
	p.mu.Unlock()
	switch {
	case !closed:
		// OnTraffic reads what arrived with the client's Finished, or closes on the error. Queued after the
		// handshake's AsyncWrites, so it finds them done.
		_ = l.gc.Wake(nil)
	case err != nil && !errors.Is(err, net.ErrClosed):
		h.failed(err)
	}
}

// hsLimiter bounds the handshakes in progress: in a reconnect storm each costs a goroutine (its stack grows
// to tens of KiB during the key exchange and stays while the client answers) and crypto state. Connections
// past the bound wait in arrival order with their first bytes buffered, and a goroutine that finishes a
// handshake takes the next waiting one. The connect timeout still closes a connection that waits too long.
// The bound is also what a slow client can hold: set it well above handshakes/s × the clients' round trip.
type hsLimiter struct {
	max        int           // 0 = no bound
	cpu        chan struct{} // a token per handshake computing (not waiting for its client)
	onFail     func(error)   // the HandshakeFailed option
	mu         sync.Mutex
	running    int
	head, tail *tlsLayer
}

// cpuTake waits for a CPU slot. Handshakes compute on at most half the cores (at least one) at once: in a
// reconnect storm, hundreds of runnable handshake goroutines would otherwise queue the event loops behind
// them in Go's scheduler, and every established connection would wait. Handshake goroutine only.
func (h *hsLimiter) cpuTake() { h.cpu <- struct{}{} }

func (h *hsLimiter) cpuDone() { <-h.cpu }

// failed counts a handshake failure that no connection reports: its socket closed first. Any goroutine.
func (h *hsLimiter) failed(err error) {
	if h.onFail != nil {
		h.onFail(err)
	}
}

// start runs l's handshake now or when a slot frees. Runs on the loop.
func (h *hsLimiter) start(l *tlsLayer) {
	h.mu.Lock()
	if h.max > 0 && h.running >= h.max {
		if h.tail == nil {
			h.head = l
		} else {
			h.tail.next = l
		}
		h.tail = l
		h.mu.Unlock()
		return
	}
	h.running++
	h.mu.Unlock()
	go h.run(l)
}

// run is a handshake goroutine: it runs l's handshake, then those waiting, until none is left.
func (h *hsLimiter) run(l *tlsLayer) {
	for l != nil {
		if l.pipe.isClosed() {
			l.hsErr = net.ErrClosed
			l.state.Store(hsFailed)
		} else {
			l.state.Store(hsRunning)
			l.handshake(h)
		}
		h.mu.Lock()
		l = h.head
		if l != nil {
			if h.head = l.next; h.head == nil {
				h.tail = nil
			}
			l.next = nil
		} else {
			h.running--
		}
		h.mu.Unlock()
	}
}
