package transport

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// The frame headers Ferry parses and writes itself agree with gobwas/ws's, at every length encoding, and cost
// no allocation.
func TestWSHeaderCodecMatchesGobwas(t *testing.T) {
	for _, n := range []int64{0, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 33} {
		for _, masked := range []bool{false, true} {
			h := ws.Header{Fin: n%2 == 0, OpCode: ws.OpBinary, Length: n, Masked: masked}
			if masked {
				h.Mask = [4]byte{1, 2, 3, 4}
			}
			var b bytes.Buffer
			if err := ws.WriteHeader(&b, h); err != nil {
				t.Fatal(err)
			}
			full := b.Bytes()
			for cut := 0; cut < len(full); cut++ {
				if _, hn, err := wsReadHeader(full[:cut]); hn != 0 || err != nil {
					t.Fatalf("length %d cut at %d: read %d bytes, %v", n, cut, hn, err)
				}
			}
			got, hn, err := wsReadHeader(append(full, 0xAA))
			if err != nil || hn != len(full) || got != h {
				t.Fatalf("length %d masked %v: got %+v (%d bytes, %v), want %+v (%d bytes)", n, masked, got, hn, err, h, len(full))
			}
			if masked {
				continue
			}
			h.Fin = true
			mine := wsAppendHeader(nil, ws.OpBinary, int(n))
			back, err := ws.ReadHeader(bytes.NewReader(mine))
			if err != nil || back != h {
				t.Fatalf("length %d: gobwas reads %+v, %v from %x", n, back, err, mine)
			}
		}
	}
	if _, _, err := wsReadHeader([]byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("a 64-bit length with the top bit set was accepted")
	}
	buf := make([]byte, 0, 64)
	frame := []byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4}
	if a := testing.AllocsPerRun(100, func() {
		buf = wsAppendHeader(buf[:0], ws.OpBinary, 300)
		_, _, _ = wsReadHeader(frame)
	}); a != 0 {
		t.Fatalf("%v allocations per header written and read, want 0", a)
	}
}

func TestSelectMQTTSubprotocol(t *testing.T) {
	for in, want := range map[string]string{"mqtt": "mqtt", "mqttv3.1": "mqttv3.1", "mqttv3.1, mqtt": "mqtt",
		" chat ,mqttv3.1 ": "mqttv3.1", "chat": "", "": "", "MQTT": ""} {
		if got, ok := selectMQTTSubprotocol([]byte(in)); !ok || got != want {
			t.Errorf("%q: selected %q, want %q", in, got, want)
		}
	}
}
