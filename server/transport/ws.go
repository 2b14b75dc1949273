package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gobwas/ws"
)

// The WebSocket layer serves MQTT over WebSocket (RFC 6455; MQTT 5.0 §6, MQTT 3.1.1 §6) on the gnet loops,
// without a goroutine or a buffered reader per connection. It reads the HTTP/1.1 upgrade request from the
// bytes below it, answers it with gobwas/ws's Upgrader once the whole request has arrived (so the Upgrader
// reads from a bytes.Reader and can never block), then turns binary frames into MQTT bytes and frames what
// Ferry writes.
//
// Frames are streamed: a data frame's payload is unmasked and handed up as it arrives, whatever its length,
// so the layer buffers nothing itself and the transport's own bound (the largest packet plus a chunk) holds.
// MQTT packets may be split across frames and frames may carry several packets [MQTT-6.0.0-2]; a fragmented
// message (continuation frames) is just more bytes of the stream.
//
// Frame headers are parsed and written here (wsReadHeader, wsAppendHeader) rather than with ws.ReadHeader and
// ws.WriteHeader: those take an io.Reader/io.Writer and cost 2 allocations per frame each way (64 and 40 B,
// measured with gobwas/ws v1.5.0), which a small server frame per MQTT write would pay on every delivery.
// Validation (ws.CheckHeader, ws.CheckCloseFrameData), unmasking (ws.Cipher) and the handshake are gobwas's.
//
// Subprotocols: the server selects "mqtt" when the client offers it [MQTT-6.0.0-4], else "mqttv3.1" (old
// 3.1 clients). A request that offers neither (or no Sec-WebSocket-Protocol at all) is accepted without the
// header, leniently: [MQTT-6.0.0-3] binds the client, and devices with minimal WebSocket stacks often send
// nothing. A browser that offered other subprotocols then fails the handshake by itself.

// maxWSRequest bounds the HTTP upgrade request: more bytes without the blank line that ends it are answered
// 431 and the connection is closed.
const maxWSRequest = 8 << 10

// wsFrameSlack is how much longer than the largest MQTT packet one data frame may be: a frame may carry
// several packets, but one announcing more than a packet plus this is refused with 1009 (Message Too Big).
const wsFrameSlack = 64 << 10

const (
	wsHandshake uint8 = iota // waiting for the HTTP upgrade request
	wsOpen                   // frames flow
	wsClosed                 // a close frame was sent or the handshake failed: nothing more is framed
)

// wsLayer is one connection's WebSocket state, kept small: idle connections pay for it.
type wsLayer struct {
	ls     *Spec
	left   int64         // payload bytes of the current data frame not read yet
	code   ws.StatusCode // the close code goodbye sends; 0 = 1000 (normal closure)
	mask   [4]byte       // the current data frame's masking key
	maskAt uint8         // the mask offset (mod 4) of the next payload byte
	idx    uint8         // the layer's position in the transport: its own writes go below it
	state  uint8
	frag   bool // a fragmented message is open: the next data frame must be a continuation
}

// checkWS checks that a ws:// or wss:// listener has what WebSocket needs.
func checkWS(ls *Spec) error {
	if ls.path != "" && ls.path[0] != '/' {
		return fmt.Errorf("invalid MQTT listener %q: the WebSocket path must start with /", ls.url)
	}
	return nil
}

// newWSLayer builds the WebSocket layer of one connection; t holds the layers below it already.
func newWSLayer(t *Transport, ls *Spec) (layer, error) {
	return &wsLayer{ls: ls, idx: uint8(len(t.layers))}, nil
}

// errWS is a WebSocket protocol failure; goodbye answers it with the close code.
func (w *wsLayer) fail(code ws.StatusCode, format string, args ...any) error {
	w.code = code
	return fmt.Errorf("websocket: "+format, args...)
}

// unwrap runs on the connection's event loop.
func (w *wsLayer) unwrap(t *Transport, out, in []byte) ([]byte, int, error) {
	pos := 0
	if w.state == wsHandshake {
		n, err := w.handshake(t, in)
		if err != nil || n == 0 {
			return out, n, err
		}
		pos = n
	}
	if w.state != wsOpen {
		return out, len(in), nil // after a close frame, whatever follows is dropped [RFC 6455 §5.5.1]
	}
	start := len(out)
	for pos < len(in) && len(out)-start < pullChunk {
		if w.left > 0 { // payload of a data frame: unmasked straight into out
			m := int(min(w.left, int64(len(in)-pos), int64(pullChunk)))
			o := len(out)
			out = append(out, in[pos:pos+m]...)
			ws.Cipher(out[o:], w.mask, int(w.maskAt))
			w.maskAt = uint8((int(w.maskAt) + m) & 3)
			w.left -= int64(m)
			pos += m
			continue
		}
		h, hn, err := wsReadHeader(in[pos:])
		if err != nil {
			return out, pos, w.fail(ws.StatusProtocolError, "%w", err)
		}
		if hn == 0 {
			break // a partial header: wait for the rest
		}
		state := ws.StateServerSide
		if w.frag {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return out, pos, w.fail(ws.StatusProtocolError, "%w", err)
		}
		if h.OpCode.IsControl() {
			if len(in)-pos < hn+int(h.Length) {
				break // control payloads are at most 125 bytes: wait for the whole frame
			}
			p := in[pos+hn : pos+hn+int(h.Length)]
			pos += hn + int(h.Length)
			if err := w.control(t, h, p); err != nil {
				return out, pos, err
			}
			continue
		}
		if h.OpCode == ws.OpText {
			// [MQTT-6.0.0-1] MQTT travels in binary frames only; anything else closes the connection.
			return out, pos, w.fail(ws.StatusUnsupportedData, "text frame: MQTT needs binary frames [MQTT-6.0.0-1]")
		}
		if max := int64(t.c.Shared().maxPacket) + wsFrameSlack; h.Length > max {
			return out, pos, w.fail(ws.StatusMessageTooBig, "frame of %d bytes, more than %d", h.Length, max)
		}
		w.frag = !h.Fin
		w.left, w.mask, w.maskAt = h.Length, h.Mask, 0
		pos += hn
	}
	return out, pos, nil
}

// control answers a ping, ignores a pong and echoes a close. p is the masked payload, borrowed.
func (w *wsLayer) control(t *Transport, h ws.Header, p []byte) error {
	// The answer is built in place on the stack: a control payload is at most 125 bytes, so its header is the
	// 2 bytes before it.
	var buf [ws.MaxHeaderSize + ws.MaxControlFramePayloadSize]byte
	body := buf[2 : 2+len(p)]
	copy(body, p)
	ws.Cipher(body, h.Mask, 0)
	switch h.OpCode {
	case ws.OpPing:
		t.writeBelow(int(w.idx), wsAppendHeader(buf[:0], ws.OpPong, len(body))[:2+len(body)])
		return nil
	case ws.OpPong:
		return nil
	}
	// A close frame: echo its status code and end the connection [RFC 6455 §5.5.1].
	if len(body) == 1 {
		return w.fail(ws.StatusProtocolError, "close frame with a 1-byte body")
	}
	if len(body) >= 2 {
		code, reason := ws.ParseCloseFrameDataUnsafe(body)
		if err := ws.CheckCloseFrameData(code, reason); err != nil {
			return w.fail(ws.StatusProtocolError, "close frame: %w", err)
		}
		body = body[:2]
	}
	t.writeBelow(int(w.idx), wsAppendHeader(buf[:0], ws.OpClose, len(body))[:2+len(body)])
	w.state = wsClosed
	return ErrClosedByPeer
}

// handshake answers the HTTP upgrade request once in holds all of it. It returns how many bytes the request
// took, 0 while it is incomplete.
func (w *wsLayer) handshake(t *Transport, in []byte) (int, error) {
	end := bytes.Index(in, []byte("\r\n\r\n"))
	if end < 0 {
		if len(in) > 0 && (in[0] < 'A' || in[0] > 'Z') {
			w.reject(t, http.StatusBadRequest)
			return 0, errors.New("websocket: the connection does not start with an HTTP request")
		}
		if len(in) > maxWSRequest {
			w.reject(t, http.StatusRequestHeaderFieldsTooLarge)
			return 0, fmt.Errorf("websocket: upgrade request longer than %d bytes", maxWSRequest)
		}
		return 0, nil
	}
	n := end + 4
	if n > maxWSRequest {
		w.reject(t, http.StatusRequestHeaderFieldsTooLarge)
		return 0, fmt.Errorf("websocket: upgrade request of %d bytes, more than %d", n, maxWSRequest)
	}
	var resp appendWriter
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if i := bytes.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			if w.ls.path != "" && string(uri) != w.ls.path {
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound),
					ws.RejectionReason("no MQTT WebSocket endpoint at this path"))
			}
			return nil
		},
		ProtocolCustom: selectMQTTSubprotocol,
	}
	// The request is complete and the reader holds nothing else: Upgrade cannot block, nor read past it.
	_, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(in[:n]), &resp})
	if len(resp.b) > 0 {
		t.writeBelow(int(w.idx), resp.b)
	}
	if err != nil {
		w.state = wsClosed
		return 0, fmt.Errorf("websocket: upgrade refused: %w", err)
	}
	w.state = wsOpen
	return n, nil
}

// reject answers a request that cannot be parsed with a bare HTTP status; the connection then closes.
func (w *wsLayer) reject(t *Transport, status int) {
	w.state = wsClosed
	t.writeBelow(int(w.idx), fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
		status, http.StatusText(status)))
}

// selectMQTTSubprotocol picks "mqtt" [MQTT-6.0.0-4], else "mqttv3.1", from one Sec-WebSocket-Protocol
// header; offering neither is accepted (see the top of the file).
func selectMQTTSubprotocol(v []byte) (string, bool) {
	sel := ""
	for len(v) > 0 {
		tok := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		switch string(bytes.TrimSpace(tok)) {
		case "mqtt":
			return "mqtt", true
		case "mqttv3.1":
			sel = "mqttv3.1"
		}
	}
	return sel, true
}

// wrap frames what MQTT writes as one unmasked binary frame [RFC 6455 §5.1]. Runs on the loop.
func (w *wsLayer) wrap(_ *Transport, dst, p []byte) []byte {
	if w.state != wsOpen {
		return dst // no frames before the upgrade or after a close
	}
	dst = wsAppendHeader(dst, ws.OpBinary, len(p))
	return append(dst, p...)
}

// goodbye sends the close frame: 1000, or the code of the protocol failure that ends the connection.
func (w *wsLayer) goodbye(_ *Transport, dst []byte) []byte {
	if w.state != wsOpen {
		return dst
	}
	w.state = wsClosed
	code := w.code
	if code == 0 {
		code = ws.StatusNormalClosure
	}
	dst = wsAppendHeader(dst, ws.OpClose, 2)
	return binary.BigEndian.AppendUint16(dst, uint16(code))
}

// wsAppendHeader appends the header of an unmasked, final server frame with a payload of n bytes.
func wsAppendHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, b0, 127), uint64(n))
	}
}

// wsReadHeader parses the frame header at the start of b. It returns the header and its length, or 0 if b
// holds only part of it.
func wsReadHeader(b []byte) (ws.Header, int, error) {
	var h ws.Header
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		n += 2
	case 127:
		n += 8
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		n += 4
	}
	if len(b) < n {
		return h, 0, nil
	}
	switch n - 4*boolInt(h.Masked) {
	case 4:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
	case 10:
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return h, 0, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(u)
	}
	if h.Masked {
		copy(h.Mask[:], b[n-4:n])
	}
	return h, n, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// appendWriter collects the Upgrader's response.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}
