package transport

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/panjf2000/gnet/v2"
)

// Conn is the connection a Transport serves, as the server holds it. Its methods run on the connection's
// event loop.
type Conn interface {
	Gnet() gnet.Conn     // the socket
	Closed() bool        // the connection has closed (a failed write closes it at once, inside a layer's step)
	Scratch() *[2][]byte // the loop's framing scratch, shared by the loop's connections (writeBelow)
	Shared() *Shared     // what every transport of the server shares
}

// Shared is what the transports of one server share: limits, the PROXY trust list, the TLS configuration.
// Built once by NewShared; safe for concurrent use.
type Shared struct {
	maxPacket    int
	proxyTrusted []netip.Prefix
	tls          *tlsServer // certificates of TLS listeners (tls.go); nil without one
}

// Opt configures NewShared. Options follow franz-go's style, as the rest of Ferry's do: an interface over an
// unexported config that has defaults() and validate(), so only this package can make one.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	maxPacket       int
	proxyTrusted    []netip.Prefix
	tls             TLSFiles
	handshakeFailed func(err error)
}

func (c *cfg) defaults() { c.maxPacket = 1 << 20 }

func (c *cfg) validate() error {
	if c.maxPacket < 1 {
		return fmt.Errorf("invalid transport configuration: max packet size %d, want at least 1 byte", c.maxPacket)
	}
	return nil
}

// MaxPacketSize is the largest MQTT packet accepted, in bytes: it bounds what a transport buffers.
// Default 1 MiB.
func MaxPacketSize(n int) Opt { return opt(func(c *cfg) { c.maxPacket = n }) }

// ProxyTrusted lists the peers allowed to send PROXY protocol headers. Default: none.
func ProxyTrusted(p []netip.Prefix) Opt { return opt(func(c *cfg) { c.proxyTrusted = p }) }

// TLS names the certificate files of tls:// and wss:// listeners. Default: none (a TLS listener is refused).
func TLS(f TLSFiles) Opt { return opt(func(c *cfg) { c.tls = f }) }

// HandshakeFailed sets the function that counts and logs a TLS handshake failure no connection reports (its
// socket closed first). It runs on any goroutine. Default: none (ignored).
func HandshakeFailed(fn func(err error)) Opt { return opt(func(c *cfg) { c.handshakeFailed = fn }) }

// NewShared checks, once, that every layer the listeners ask for can be built, and loads the TLS
// certificates if a listener needs them.
func NewShared(specs []Spec, opts ...Opt) (*Shared, error) {
	var c cfg
	c.defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	sh := &Shared{maxPacket: c.maxPacket, proxyTrusted: c.proxyTrusted}
	for i := range specs {
		ls := &specs[i]
		if ls.tls {
			if err := sh.initTLS(ls, &c); err != nil {
				return nil, err
			}
		}
		if ls.ws {
			if err := checkWS(ls); err != nil {
				return nil, err
			}
		}
	}
	return sh, nil
}

// New builds the layers a listener's connections need; nil for plain TCP. Runs on c's loop (OnOpen).
func New(c Conn, ls *Spec) (*Transport, error) {
	if !ls.Layered() {
		return nil, nil
	}
	t := &Transport{c: c}
	if ls.proxy {
		p, err := newProxyLayer(t)
		if err != nil {
			return nil, err
		}
		t.layers = append(t.layers, p)
	}
	if ls.tls {
		ly, err := newTLSLayer(t, ls)
		if err != nil {
			return nil, err
		}
		t.layers = append(t.layers, ly)
	}
	if ls.ws {
		ly, err := newWSLayer(t, ls)
		if err != nil {
			return nil, err
		}
		t.layers = append(t.layers, ly)
	}
	if len(t.layers) > 1 { // a single layer writes straight into t.in: no buffer between layers to keep
		t.bufs = make([][]byte, len(t.layers))
	}
	return t, nil
}

// Remote is the client's address a trusted PROXY header gave; nil = the socket's peer.
func (t *Transport) Remote() net.Addr { return t.remote }

// Ident is the identity a verified TLS client certificate gives the connection, or "".
func (t *Transport) Ident() string { return t.ident }

// Inbound returns the MQTT bytes buffered for the connection, borrowed until Consumed. Bytes that arrived
// before a failure are returned with it, to be handled before the connection ends.
func (t *Transport) Inbound() ([]byte, error) {
	err := t.pull()
	return t.in, err
}

// Consumed drops n bytes returned by Inbound.
func (t *Transport) Consumed(n int) { t.in = consume(t.in, n) }

// BelowMQTT is how many bytes the layers hold between them, not yet turned into MQTT bytes: a step that
// stopped at the packet bound left them there.
func (t *Transport) BelowMQTT() int { return t.Buffered() - len(t.in) }
