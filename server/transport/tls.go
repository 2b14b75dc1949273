package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"os"
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
//   - The handshake runs as a coroutine of the connection's event loop (iter.Pull): crypto/tls cannot be
//     driven step by step through a handshake (a handshake that returns an error is over), so it runs on a
//     goroutine of its own, but the loop switches to it and back directly, on the loop's thread, without
//     the scheduler: unwrap lends the pipe the bytes that arrived and resumes the handshake; when the pipe has
//     no more bytes its Read suspends the handshake and unwrap goes on. What crypto/tls writes meanwhile is
//     appended to the pipe's out and sent below by unwrap before it returns. No other goroutine touches the
//     connection, so there is no lock, no hand-off back to the loop and no copy of the records. The
//     coroutine starts with the client's first byte, so a silent socket costs none; at most
//     TLSMaxHandshakes are in progress (see hsLimiter). When the handshake ends the coroutine ends with it.
//   - After the handshake nothing blocks. unwrap lends tls.Conn the bytes from below and calls Read until the
//     pipe says it has nothing more: the pipe's Read then returns errWouldBlock, a net.Error whose Temporary()
//     is true, which crypto/tls (Go 1.26 conn.go, readRecordOrCCS) returns without making it sticky, keeping
//     a partial record in its own buffer for the next call. Read hands back what whole records held. wrap
//     calls tls.Conn.Write, whose records the pipe appends to the caller's buffer; goodbye is CloseWrite's
//     close_notify.
//   - Writes that crypto/tls makes inside Read (a TLS 1.3 KeyUpdate answer, an alert before an error) land in
//     the pipe and are sent below by unwrap before it returns.
//
// A handshake computes on the loop that serves the connection, as the connection's reads and writes do: in a
// reconnect storm, a loop's other connections wait for the handshakes of the same wake-up (each takes
// 0.1–0.4 ms of CPU), and the loops share the cores with nothing else that would queue them.
//
// Only the PROXY layer, which frames nothing, can be below TLS, so the handshake's records need no framing
// but that of writeBelow.
//
// Memory per idle connection after the handshake: the tls.Conn with its record state and read buffer, the
// layer and the pipe (measured: see docs/operations.md, "TLS"). The handshake's own state (certificates,
// transcript, coroutine stack) is garbage once it ends, and plaintext is decrypted through a pooled buffer,
// not one per connection.

// Client certificate policies of TLSClientAuth.
const (
	TLSClientCertRequire     = "require"         // a client must present a certificate the client CAs signed
	TLSClientCertVerifyGiven = "verify-if-given" // a certificate is optional, but verified when given
)

// tlsMaxPending bounds what a client may send before its handshake completes: the handshake messages
// (crypto/tls takes a certificate chain of up to 256 KiB) plus whatever it pipelines after its Finished.
const tlsMaxPending = 320 << 10

// The states of a handshake. A queued connection's state is changed by the loop that frees a slot, under
// hsLimiter.mu; every other change is the connection's loop's.
const (
	hsIdle     uint32 = iota // no byte from the client yet
	hsQueued                 // waiting for a handshake slot; its bytes wait in the pipe's pend
	hsAdmitted               // given a slot while queued: its loop starts the handshake when woken
	hsRunning                // the coroutine is suspended in the middle of the handshake
	hsOver                   // the handshake ended (tls.Conn is the loop's) or the socket closed first
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
	gc    gnet.Conn
	tc    *tls.Conn
	pipe  tlsPipe
	state atomic.Uint32
	// resume switches to the handshake coroutine until it needs more bytes (true) or the handshake is over
	// (false); stop ends it early. Both are nil outside a handshake. Loop only.
	resume func() (struct{}, bool)
	stop   func()
	hsErr  error     // the handshake's failure, set by the coroutine
	next   *tlsLayer // hsLimiter's queue
	idx    uint8     // the layer's position in the transport: its own writes go below it
	ready  bool      // loop-owned: the handshake succeeded
}

// newTLSLayer builds the TLS layer of one connection; t holds the layers below it already.
func newTLSLayer(t *Transport, ls *Spec) (layer, error) {
	if t.c.Shared().tls == nil {
		return nil, fmt.Errorf("BUG: listener %q has no TLS configuration", ls.url)
	}
	return &tlsLayer{gc: t.c.Gnet(), idx: uint8(len(t.layers))}, nil // tls.Conn comes with the first byte
}

// errWouldBlock is what the pipe's Read says on the loop when it has no more bytes: temporary, so crypto/tls
// keeps its state and the caller tries again when more arrive.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tls pipe: no more bytes buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// holding reports whether unwrap has work without new bytes: a queued handshake that was given its slot.
func (l *tlsLayer) holding() bool { return !l.ready && l.state.Load() == hsAdmitted }

// unwrap runs on the connection's event loop.
func (l *tlsLayer) unwrap(t *Transport, out, in []byte) ([]byte, int, error) {
	p := &l.pipe
	used, tail := 0, true // tail: p.src is the rest of in (not a copy), and counts when read
	if !l.ready {
		n, err := l.handshake(t, in)
		if err != nil || !l.ready {
			return out, n, err
		}
		// The handshake ended on these bytes: what followed the client's Finished is in p.src.
		used, tail = n, n < len(in)
	} else {
		p.src = in
	}
	start := len(p.src)
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
	if tail {
		used += start - len(p.src)
	}
	p.src = nil
	l.flush(t) // crypto/tls wrote while reading: a KeyUpdate answer or an alert
	switch {
	case err == errWouldBlock:
		return out, used, nil
	case errors.Is(err, io.EOF):
		return out, used, ErrClosedByPeer // close_notify
	default:
		return out, used, fmt.Errorf("tls: %w", err)
	}
}

// handshake takes in (the client's bytes) to the handshake and runs it as far as they allow. It returns how
// many bytes of in it took (all of them unless the handshake ended on them: the rest is then left in the
// pipe's src, or in its pend if the handshake ran on a copy) and the error that ends the connection.
// l.ready says the handshake succeeded. Runs on the loop.
func (l *tlsLayer) handshake(t *Transport, in []byte) (int, error) {
	p := &l.pipe
	ts := t.c.Shared().tls
	switch l.state.Load() {
	case hsIdle:
		if len(in) == 0 {
			return 0, nil
		}
		if in[0] != 22 { // a TLS record of type handshake; anything else is not a TLS client (plain MQTT?)
			return 0, fmt.Errorf("tls: the client's first byte is 0x%02x, not a TLS handshake record", in[0])
		}
		if !ts.hs.admit(l) {
			return len(in), p.feed(in) // hsQueued: the bytes wait for a slot
		}
		l.begin(ts)
	case hsQueued:
		return len(in), p.feed(in)
	case hsAdmitted:
		l.begin(ts)
	case hsOver:
		return 0, nil // the socket closed: nothing more is read
	}
	copied := len(p.pend) > 0
	if copied { // the bytes that waited for a slot come first
		if err := p.feed(in); err != nil {
			return len(in), err
		}
		p.src = p.pend
	} else {
		p.src = in
	}
	_, waiting := l.resume()
	l.flush(t) // the handshake's records, or its alert
	if waiting {
		p.src, p.pend = nil, nil // Read suspends only when it has taken every byte
		return len(in), nil
	}
	l.resume, l.stop = nil, nil
	l.state.Store(hsOver)
	ts.hs.finish()
	used := len(in)
	if !copied {
		used -= len(p.src)
	}
	p.pend = nil // p.src keeps what is left of it
	if l.hsErr != nil {
		p.src = nil
		return used, fmt.Errorf("tls handshake: %w", l.hsErr)
	}
	cs := l.tc.ConnectionState()
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		t.ident = cs.VerifiedChains[0][0].Subject.CommonName
	}
	l.ready = true
	return used, nil
}

// begin creates tls.Conn and the coroutine that runs its handshake; the first resume starts it. Runs on
// the loop.
func (l *tlsLayer) begin(ts *tlsServer) {
	l.tc = tls.Server(&l.pipe, ts.base)
	l.state.Store(hsRunning)
	l.resume, l.stop = iter.Pull(func(yield func(struct{}) bool) {
		l.pipe.yield = yield
		l.hsErr = l.tc.Handshake()
		l.pipe.yield = nil
	})
}

// flush sends what crypto/tls wrote into the pipe (handshake records, a KeyUpdate answer, an alert) below.
// Runs on the loop.
func (l *tlsLayer) flush(t *Transport) {
	if p := &l.pipe; len(p.out) > 0 {
		t.writeBelow(int(l.idx), p.out)
		p.out = nil // an idle connection keeps no buffer of its own
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
		return dst // a handshake in progress ends with release
	}
	l.pipe.out = dst
	_ = l.tc.CloseWrite()
	dst, l.pipe.out = l.pipe.out, nil
	return dst
}

// release runs on the loop once the socket is closed: a handshake in progress ends (its coroutine with it),
// and its slot goes to the next connection waiting for one.
func (l *tlsLayer) release(t *Transport) {
	if l.ready {
		return
	}
	p := &l.pipe
	p.closed = true
	p.pend, p.src = nil, nil
	h := &t.c.Shared().tls.hs
	if l.state.Load() == hsRunning {
		l.stop() // the pipe's Read fails: crypto/tls returns, and the coroutine ends
		l.resume, l.stop = nil, nil
		l.state.Store(hsOver)
		h.finish()
		p.out = nil
		return
	}
	h.leave(l)
}

// hsLimiter bounds the handshakes in progress: each one waiting for its client keeps a suspended coroutine
// (its stack grew to tens of KiB during the key exchange) and crypto state. Connections past the bound wait
// in arrival order with their first bytes buffered; a handshake that ends gives its slot to the first of
// them and wakes it on its loop. The connect timeout still closes a connection that waits too long.
// The bound is also what a slow client can hold: set it well above handshakes/s × the clients' round trip.
// Its methods run on event loops, any of them.
type hsLimiter struct {
	max        int // 0 = no bound
	mu         sync.Mutex
	running    int // slots taken: handshakes in progress and admitted connections not yet woken
	head, tail *tlsLayer
}

// admit takes a slot for l and reports true, or queues l (state hsQueued) and reports false.
func (h *hsLimiter) admit(l *tlsLayer) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.max > 0 && h.running >= h.max {
		l.state.Store(hsQueued)
		if h.tail == nil {
			h.head = l
		} else {
			h.tail.next = l
		}
		h.tail = l
		return false
	}
	h.running++
	return true
}

// finish gives a slot back: to the first connection still waiting, which is woken on its loop, or to the pool.
func (h *hsLimiter) finish() {
	h.mu.Lock()
	for h.head != nil {
		l := h.head
		if h.head = l.next; h.head == nil {
			h.tail = nil
		}
		l.next = nil
		if l.state.Load() != hsQueued {
			continue // its socket closed while it waited
		}
		l.state.Store(hsAdmitted)
		h.mu.Unlock()
		_ = l.gc.Wake(nil) // its OnTraffic starts the handshake (holding)
		return
	}
	h.running--
	h.mu.Unlock()
}

// leave is release's part for a connection that closed before its handshake started: a queued one gives up
// its place, an admitted one passes its slot on.
func (h *hsLimiter) leave(l *tlsLayer) {
	h.mu.Lock()
	st := l.state.Load()
	if st == hsQueued || st == hsAdmitted {
		l.state.Store(hsOver) // finish skips it in the queue
	}
	h.mu.Unlock()
	if st == hsAdmitted {
		h.finish()
	}
}
