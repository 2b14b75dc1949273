// Package transport is the stack of layers between a listener's sockets and MQTT: from the bottom, an
// optional PROXY protocol header (proxy.go), optional TLS (tls.go), optional WebSocket (ws.go). A plain TCP
// listener has no layers: the server reads MQTT straight from gnet's buffer with no copy (its conn.tr is nil).
// Any other listener gives each connection a Transport, which turns the socket's bytes into MQTT bytes in its
// own buffer, and frames what the server writes.
//
// Everything here runs on the connection's gnet event loop, except a TLS handshake, which runs on a goroutine
// of its own (tls.go), and what sets up the listening sockets (listen.go, deferaccept_linux.go), which runs
// once as the server starts. The package knows nothing of MQTT sessions: it sees its connection through Conn.
package transport

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// Spec is one parsed --mqtt URL.
type Spec struct {
	url   string // as configured
	addr  string // the address gnet listens on: tcp://host:port
	tls   bool   // tls:// or wss://
	ws    bool   // ws:// or wss://
	path  string // WebSocket: the request path served ("" = any)
	proxy bool   // ?proxy=true: every connection starts with a PROXY protocol v1 or v2 header
}

// Layered reports whether connections of the listener need a Transport.
func (ls *Spec) Layered() bool { return ls.tls || ls.ws || ls.proxy }

// URL is the listener as configured.
func (ls *Spec) URL() string { return ls.url }

// Addr is the address gnet listens on: tcp://host:port.
func (ls *Spec) Addr() string { return ls.addr }

// TLS reports whether the listener serves TLS (tls:// or wss://).
func (ls *Spec) TLS() bool { return ls.tls }

// ParseListener parses a listener URL: tcp://host:port, ws://host:port/path, tls://host:port,
// wss://host:port/path, each with an optional ?proxy=true.
func ParseListener(s string) (Spec, error) {
	ls := Spec{url: s}
	u, err := url.Parse(s)
	if err != nil {
		return ls, fmt.Errorf("invalid MQTT listener %q: %w", s, err)
	}
	network := "tcp"
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "mqtt":
		if u.Scheme != "mqtt" {
			network = u.Scheme
		}
	case "tls", "ssl", "mqtts":
		ls.tls = true
	case "ws":
		ls.ws = true
	case "wss":
		ls.ws, ls.tls = true, true
	default:
		return ls, fmt.Errorf("invalid MQTT listener %q: scheme %q is not supported (use tcp://, tls://, ws:// or wss://)", s, u.Scheme)
	}
	if u.Host == "" || u.Port() == "" {
		return ls, fmt.Errorf("invalid MQTT listener %q: want %s://host:port", s, u.Scheme)
	}
	if _, err := strconv.ParseUint(u.Port(), 10, 16); err != nil {
		return ls, fmt.Errorf("invalid MQTT listener %q: port %q is not a number from 0 to 65535", s, u.Port())
	}
	if ls.ws {
		ls.path = u.EscapedPath()
	} else if u.Path != "" && u.Path != "/" {
		return ls, fmt.Errorf("invalid MQTT listener %q: a path is only meaningful for ws:// and wss://", s)
	}
	for k, v := range u.Query() {
		switch k {
		case "proxy":
			b, err := strconv.ParseBool(v[len(v)-1])
			if err != nil {
				return ls, fmt.Errorf("invalid MQTT listener %q: proxy=%q is not true or false", s, v[len(v)-1])
			}
			ls.proxy = b
		default:
			return ls, fmt.Errorf("invalid MQTT listener %q: unknown parameter %q (known: proxy)", s, k)
		}
	}
	ls.addr = network + "://" + u.Host
	return ls, nil
}

// A layer turns the bytes of the layer below it into bytes for the layer above, and frames for the layer
// below what the layer above writes. Layers run on the connection's event loop.
type layer interface {
	// unwrap consumes bytes from below (in) and appends what they yield for the layer above to out. It returns
	// the grown out, how many bytes of in it used (it may stop short, waiting for more), and an error that ends
	// the connection. A layer that must answer below by itself (a handshake, a WebSocket pong) writes with
	// t.writeBelow.
	unwrap(t *Transport, out, in []byte) ([]byte, int, error)
	// wrap appends p, framed for the layer below, to dst.
	wrap(t *Transport, dst, p []byte) []byte
	// goodbye appends the bytes the layer sends before the socket closes (a WebSocket close frame, a TLS
	// close_notify); it may append nothing.
	goodbye(t *Transport, dst []byte) []byte
}

// Transport is the layer stack of one connection. Owned by the connection's loop.
type Transport struct {
	c      Conn
	layers []layer  // bottom (next to the socket) first
	bufs   [][]byte // bufs[i]: bytes yielded by layer i-1 that layer i has not used yet (bufs[0] unused)
	in     []byte   // MQTT bytes yielded by the top layer, not yet read by conn
	remote net.Addr // the client's address given by a PROXY header; nil = the socket's peer
	ident  string   // identity from a TLS client certificate; "" = none
}

// pullChunk is the most raw bytes a transport takes from gnet per step: plaintext buffered in a transport
// stays bounded by the largest packet plus this, whatever the client sends.
const pullChunk = 64 << 10

// ErrClosedByPeer ends a connection whose transport said goodbye (a WebSocket close frame, a TLS
// close_notify): the client left without MQTT DISCONNECT.
var ErrClosedByPeer = errors.New("the client closed the transport")

// pull moves the socket's buffered bytes up through the layers into t.in, taking no more than needed to hold
// one largest packet. It returns an error that must end the connection.
func (t *Transport) pull() error {
	c := t.c
	gc := c.Gnet()
	limit := c.Shared().maxPacket + 5
	for len(t.in) < limit {
		raw, _ := gc.Peek(-1)
		if len(raw) > pullChunk {
			raw = raw[:pullChunk]
		}
		progressed := false
		for i, ly := range t.layers {
			var in []byte
			if i == 0 {
				in = raw
			} else {
				in = t.bufs[i]
			}
			if len(in) == 0 && !holds(ly) {
				continue
			}
			var out []byte
			if i+1 < len(t.layers) {
				out = t.bufs[i+1]
			} else {
				out = t.in
			}
			out, n, err := ly.unwrap(t, out, in)
			if i+1 < len(t.layers) {
				t.bufs[i+1] = out
				if len(out) > 2*limit+pullChunk {
					return fmt.Errorf("%T holds %d bytes that the layer above cannot use", t.layers[i+1], len(out))
				}
			} else {
				t.in = out
			}
			if n > 0 {
				progressed = true
				if i == 0 {
					_, _ = gc.Discard(n)
				} else {
					t.bufs[i] = consume(t.bufs[i], n)
				}
			}
			if err != nil {
				return err
			}
			if c.Closed() {
				return nil
			}
		}
		if !progressed {
			return nil
		}
	}
	return nil
}

// A holder is a layer that may have bytes for the layer above without new bytes from below: the TLS layer
// when its handshake goroutine has finished (application data came with the client's Finished). pull calls its
// unwrap with nothing new when holding says so.
type holder interface{ holding() bool }

func holds(ly layer) bool {
	h, ok := ly.(holder)
	return ok && h.holding()
}

// A releaser is a layer that holds something until the socket closes (the TLS handshake goroutine).
type releaser interface{ release(t *Transport) }

// Release runs on the loop when the socket has closed (OnClose).
func (t *Transport) Release() {
	for _, ly := range t.layers {
		if r, ok := ly.(releaser); ok {
			r.release(t)
		}
	}
}

// consume drops the first n bytes of b, keeping its memory: the rest moves to the front.
func consume(b []byte, n int) []byte {
	if n >= len(b) {
		if cap(b) > pullChunk {
			return nil // a burst grew it: give the memory back
		}
		return b[:0]
	}
	m := copy(b, b[n:])
	return b[:m]
}

// Buffered is how many bytes the transport holds above the socket, not yet handled as MQTT.
func (t *Transport) Buffered() int {
	n := len(t.in)
	for _, b := range t.bufs {
		n += len(b)
	}
	return n
}

// Write frames MQTT bytes through every layer and hands them to gnet. Runs on the loop.
func (t *Transport) Write(p []byte) {
	t.writeBelow(len(t.layers), p)
}

// writeBelow frames p, written by layer i (len(layers) = MQTT), through the layers under it and hands the
// result to gnet. Runs on the loop.
func (t *Transport) writeBelow(i int, p []byte) {
	// The scratch is the loop's, not the connection's: gnet copies what it cannot send at once, so no
	// connection keeps a framing buffer (one per connection cost idle memory and kept up to pullChunk after a
	// large write).
	scr := t.c.Scratch()
	k := 0
	for j := i - 1; j >= 0; j-- {
		scr[k] = t.layers[j].wrap(t, scr[k][:0], p)
		p = scr[k]
		k ^= 1
	}
	if len(p) > 0 {
		_, _ = t.c.Gnet().Write(p)
	}
	// One buffer per loop: keep it up to a largest packet and its framing, so large messages do not allocate
	// on every write; a larger one (a burst of acks and deliveries in one flush) is let go.
	for k := range scr {
		if cap(scr[k]) > t.c.Shared().maxPacket+pullChunk {
			scr[k] = nil
		}
	}
}

// Goodbye writes each layer's farewell, top first, before the socket closes. Runs on the loop.
func (t *Transport) Goodbye() {
	for i := len(t.layers) - 1; i >= 0; i-- {
		if b := t.layers[i].goodbye(t, nil); len(b) > 0 {
			t.writeBelow(i, b)
		}
	}
}
