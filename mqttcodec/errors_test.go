package mqttcodec

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

// TestMalformations mutates every byte of every fixture in several ways
// and decodes the result: each outcome is a success that round-trips, or an
// *Error whose message names the packet, starts in lower case and carries
// a reason code a server can send; never a panic.
func TestMalformations(t *testing.T) {
	allowed := map[ReasonCode]bool{MalformedPacket: true, ProtocolError: true, PacketTooLarge: true,
		UnsupportedProtocolVersion: true, ClientIdentifierNotValid: true, TopicFilterInvalid: true,
		TopicNameInvalid: true, TopicAliasInvalid: true}
	seen := map[ReasonCode]int{}
	for _, f := range fixtures {
		for _, v := range f.versions {
			for i := range f.wire {
				if i >= 64 && len(f.wire) > 300 {
					break // the big payloads: only their headers are interesting
				}
				orig := f.wire[i]
				for _, nb := range []byte{0x00, 0xFF, orig ^ 0x80, orig + 1, orig - 1, '#', '+', 0x7F} {
					w := append([]byte(nil), f.wire...)
					w[i] = nb
					checkOutcome(t, w, v, allowed, seen)
				}
			}
			// And with a byte cut out or added at every position.
			for i := 1; i < len(f.wire) && i < 64; i++ {
				w := append(append([]byte(nil), f.wire[:i]...), f.wire[i+1:]...)
				if len(w) > 1 {
					w[1]-- // keep the remaining length honest when it is one byte
				}
				checkOutcome(t, w, v, allowed, seen)
			}
		}
	}
	for r := range allowed {
		if r != PacketTooLarge && seen[r] == 0 {
			t.Errorf("no mutation produced reason %s", r)
		}
	}
}

func checkOutcome(t *testing.T, w []byte, v byte, allowed map[ReasonCode]bool, seen map[ReasonCode]int) {
	t.Helper()
	fh, body, _, err := Frame(w, 0)
	if errors.Is(err, ErrIncomplete) {
		return
	}
	if err == nil {
		var p any
		p, err = decodeBody(fh, body, v)
		if err == nil {
			enc := encodePacket(nil, p, v)
			q, err2 := decodeWire(t, enc, v)
			if err2 != nil || !samePacket(p, q) {
				t.Fatalf("% x (level %d) decodes but does not round-trip: %v\n%s\n%s", w, v, err2, show(p), show(q))
			}
			return
		}
	}
	e := asError(t, err)
	seen[e.Reason]++
	if !allowed[e.Reason] {
		t.Fatalf("% x: reason %s: %v", w, e.Reason, err)
	}
	msg := err.Error()
	if e.Packet != 0 && !strings.HasPrefix(msg, "cannot decode "+TypeName(e.Packet)+": ") {
		t.Fatalf("%q does not say which packet", msg)
	}
	if e.Msg == "" || unicode.IsUpper(rune(e.Msg[0])) {
		t.Fatalf("message %q", e.Msg)
	}
	if !strings.HasSuffix(msg, " ("+hex2(byte(e.Reason))+" "+e.Reason.String()+")") {
		t.Fatalf("%q does not end with its reason", msg)
	}
}
