package main

import (
	"bytes"
	"testing"
)

// split takes whole frames only, reads multi-byte remaining lengths, and refuses a length of more than four
// bytes.
func TestSplit(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 200) // remaining length 200: two bytes (0xC8 0x01)
	frame := append([]byte{typePublish<<4 | 2, 0xC8, 0x01}, body...)
	two := append(append([]byte{}, frame...), typePingreq<<4, 0)

	hdr, got, n, err := split(two)
	if err != nil || n != len(frame) || hdr != frame[0] || !bytes.Equal(got, body) {
		t.Fatalf("split = %#x, %d body bytes, %d, %v; want %#x, 200, %d, nil", hdr, len(got), n, err, frame[0], len(frame))
	}
	if hdr, got, n, err = split(two[n:]); err != nil || n != 2 || hdr>>4 != typePingreq || len(got) != 0 {
		t.Fatalf("second frame: %#x, %d, %v", hdr, n, err)
	}
	for cut := 0; cut < len(frame); cut++ {
		if _, _, n, err := split(frame[:cut]); n != 0 || err != nil {
			t.Fatalf("split of the first %d bytes = %d, %v; want 0, nil (incomplete)", cut, n, err)
		}
	}
	if _, _, _, err := split([]byte{typePublish << 4, 0x80, 0x80, 0x80, 0x80, 0x01}); err == nil {
		t.Fatal("a five-byte remaining length was accepted")
	}
}

func TestAppendVarint(t *testing.T) {
	for _, c := range []struct {
		n    int
		want []byte
	}{{0, []byte{0}}, {127, []byte{0x7F}}, {128, []byte{0x80, 0x01}}, {16383, []byte{0xFF, 0x7F}}, {16384, []byte{0x80, 0x80, 0x01}}} {
		if got := appendVarint(nil, c.n); !bytes.Equal(got, c.want) {
			t.Errorf("appendVarint(%d) = %x, want %x", c.n, got, c.want)
		}
	}
}
