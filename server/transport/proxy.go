package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// The PROXY protocol layer (HAProxy's v1 text and v2 binary headers) reads the header a load balancer puts
// before the client's first byte and makes its source address the connection's remote address: for logs,
// limits per source address and anything else that asks who the client is. Only peers in the trusted list may
// send one; a connection from anyone else on a proxy listener is refused, so a device cannot claim another's
// address.

// maxProxyHeader bounds a v2 header with its TLVs; load balancers send far less.
const maxProxyHeader = 4096

var proxySigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

type proxyLayer struct {
	done bool // the header was read: the layer passes bytes through
}

func newProxyLayer(t *Transport) (layer, error) {
	peer := AddrPort(t.c.Gnet().RemoteAddr())
	if !t.c.Shared().trustedProxy(peer) {
		return nil, fmt.Errorf("peer %v is not a trusted PROXY protocol sender (see --proxy-trusted)", peer)
	}
	return &proxyLayer{}, nil
}

// trustedProxy reports whether a peer may send PROXY headers.
func (sh *Shared) trustedProxy(a netip.AddrPort) bool {
	ip := a.Addr().Unmap()
	for _, p := range sh.proxyTrusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// AddrPort is a's address and port (zero if it has none).
func AddrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (p *proxyLayer) unwrap(t *Transport, out, in []byte) ([]byte, int, error) {
	if p.done {
		return append(out, in...), len(in), nil
	}
	n, err := proxyHeaderLen(in)
	if err != nil || n == 0 {
		return out, 0, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(in[:n]), n+16))
	if err != nil {
		return out, 0, fmt.Errorf("bad PROXY protocol header: %w", err)
	}
	p.done = true
	if !h.Command.IsLocal() { // LOCAL: the balancer's own health check; the socket's address stands
		if src, _, ok := h.TCPAddrs(); ok {
			t.remote = src
		} else {
			return out, 0, fmt.Errorf("PROXY protocol header for %v, not TCP", h.TransportProtocol)
		}
	}
	return append(out, in[n:]...), len(in), nil
}

// proxyHeaderLen returns the length of the PROXY header at the start of b, 0 if more bytes are needed, or an
// error if b cannot start with one.
func proxyHeaderLen(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 0, nil
	case b[0] == 'P':
		if len(b) < 6 && bytes.HasPrefix([]byte("PROXY "), b) {
			return 0, nil
		}
		if !bytes.HasPrefix(b, []byte("PROXY ")) {
			return 0, errNoProxyHeader
		}
		if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
			return i + 2, nil
		}
		if len(b) > 107 { // the longest v1 line
			return 0, errors.New("PROXY protocol v1 header longer than 107 bytes")
		}
		return 0, nil
	case b[0] == '\r':
		k := min(len(b), len(proxySigV2))
		if !bytes.Equal(b[:k], proxySigV2[:k]) {
			return 0, errNoProxyHeader
		}
		if len(b) < 16 {
			return 0, nil
		}
		n := 16 + (int(b[14])<<8 | int(b[15]))
		if n > maxProxyHeader {
			return 0, fmt.Errorf("PROXY protocol v2 header of %d bytes, more than %d", n, maxProxyHeader)
		}
		if len(b) < n {
			return 0, nil
		}
		return n, nil
	default:
		return 0, errNoProxyHeader
	}
}

var errNoProxyHeader = errors.New("no PROXY protocol header on a listener that requires one")

func (p *proxyLayer) wrap(_ *Transport, dst, b []byte) []byte { return append(dst, b...) }

func (p *proxyLayer) goodbye(_ *Transport, dst []byte) []byte { return dst }
