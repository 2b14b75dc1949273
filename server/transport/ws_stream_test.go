package transport

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// Whatever way a stream of masked frames is cut into reads, the layer hands up exactly the payload bytes.
func TestWSUnwrapAnySegmentation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		var stream, want []byte
		frag := false
		for range 1 + rng.IntN(20) {
			n := rng.IntN(300)
			if rng.IntN(10) == 0 {
				n = 126 + rng.IntN(70000)
			}
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.IntN(256))
			}
			want = append(want, p...)
			op := ws.OpBinary
			if frag {
				op = ws.OpContinuation
			}
			fin := rng.IntN(3) != 0
			frag = !fin
			h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(n)}
			var b bytes.Buffer
			_ = ws.WriteHeader(&b, h)
			ws.Cipher(p, h.Mask, 0)
			stream = append(append(stream, b.Bytes()...), p...)
		}
		tr := &Transport{c: &testConn{sh: &Shared{maxPacket: 1 << 20}}}
		w := &wsLayer{state: wsOpen}
		var out, pending []byte
		for len(stream) > 0 || len(pending) > 0 {
			k := min(len(stream), 1+rng.IntN(5000))
			pending = append(pending, stream[:k]...)
			stream = stream[k:]
			var n int
			var err error
			out, n, err = w.unwrap(tr, out, pending)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			pending = pending[n:]
			if len(stream) == 0 && n == 0 {
				break
			}
		}
		if len(pending) != 0 || !bytes.Equal(out, want) {
			t.Fatalf("round %d: %d bytes pending; got %d bytes, want %d (equal prefix %d)", round, len(pending), len(out), len(want), commonPrefix(out, want))
		}
	}
}

// testConn is a Conn without a socket: enough for a layer that writes nothing below.
type testConn struct {
	sh  *Shared
	scr [2][]byte
}

func (c *testConn) Gnet() gnet.Conn     { return nil }
func (c *testConn) Closed() bool        { return false }
func (c *testConn) Scratch() *[2][]byte { return &c.scr }
func (c *testConn) Shared() *Shared     { return c.sh }

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
