package load

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// wsConn carries MQTT over WebSocket (RFC 6455) on a dialed TCP connection: every Write is one masked binary
// frame; Read returns the payloads of the server's binary frames as one stream, answers pings and reports a
// close frame as io.EOF. The client serialises its writes already; pongs take the same lock.
type wsConn struct {
	net.Conn
	r    io.Reader // the connection, behind whatever the handshake read ahead
	left int64     // payload bytes of the current data frame not read yet

	wmu  sync.Mutex
	wbuf []byte
}

// wsUpgrade performs the HTTP upgrade to WebSocket at path, offering the "mqtt" subprotocol.
func wsUpgrade(nc net.Conn, host, path string, timeout time.Duration) (net.Conn, error) {
	_ = nc.SetDeadline(time.Now().Add(timeout))
	defer nc.SetDeadline(time.Time{})
	d := ws.Dialer{Protocols: []string{"mqtt"}}
	br, _, err := d.Upgrade(nc, &url.URL{Scheme: "ws", Host: host, Path: path})
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	c := &wsConn{Conn: nc, r: nc}
	if br != nil {
		c.r = io.MultiReader(br, nc)
	}
	return c, nil
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeFrame(ws.OpBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame writes one masked frame; wmu is held.
func (c *wsConn) writeFrame(op ws.OpCode, p []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	n := ws.HeaderSize(h)
	if cap(c.wbuf) < n+len(p) {
		c.wbuf = make([]byte, 0, n+len(p))
	}
	b := c.wbuf[:n+len(p)]
	hb := &fixedWriter{b: b[:0]}
	if err := ws.WriteHeader(hb, h); err != nil {
		return err
	}
	copy(b[n:], p)
	ws.Cipher(b[n:], h.Mask, 0)
	_, err := c.Conn.Write(b)
	return err
}

func (c *wsConn) Read(p []byte) (int, error) {
	for c.left == 0 {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return 0, err
		}
		if !h.OpCode.IsControl() {
			c.left = h.Length
			continue
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return 0, err
		}
		switch h.OpCode {
		case ws.OpPing:
			c.wmu.Lock()
			err := c.writeFrame(ws.OpPong, payload)
			c.wmu.Unlock()
			if err != nil {
				return 0, err
			}
		case ws.OpClose:
			return 0, io.EOF
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// fixedWriter appends into a buffer that has room.
type fixedWriter struct{ b []byte }

func (w *fixedWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
