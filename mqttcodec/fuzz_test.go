package mqttcodec

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Fuzz targets, one per decoder family. Each is seeded from the golden
// fixtures of its family and takes, besides the bytes, a protocol level
// and a split point chosen by the fuzzer:
//   - the bytes before the split must give ErrIncomplete from Frame, or
//     the same complete first frame, or the same header error as the whole;
//   - the whole must give an *Error or decode; a decoded packet must
//     encode, decode again to an equal struct, and encode to the same bytes.
//
// Run one with: go test ./mqttcodec -run '^$' -fuzz '^FuzzPublish$' -fuzztime 30s
// (.ci/fuzz-codec.sh runs them all briefly).

// family is the set of packet types a target feeds its decoder.
type family []byte

// fuzzPacket runs the checks above. The type nibble of the first byte is
// mapped into fam so the fuzzer spends its time on the family's decoder.
func fuzzPacket(t *testing.T, fam family, data []byte, level byte, split uint16) {
	if len(data) == 0 {
		return
	}
	data = append([]byte(nil), data...)
	data[0] = fam[int(data[0]>>4)%len(fam)]<<4 | data[0]&0x0F
	v := Version31 + level%3
	s := int(split) % (len(data) + 1)

	fh, body, n, err := Frame(data, 0)
	_, _, n1, err1 := Frame(data[:s], 0)
	switch {
	case err1 == nil:
		if err != nil || n1 != n {
			t.Fatalf("prefix of %d framed %d bytes, whole: %d, %v", s, n1, n, err)
		}
	case errors.Is(err1, ErrIncomplete):
	default:
		if ReasonOf(err1) != ReasonOf(err) {
			t.Fatalf("prefix error %v, whole %v", err1, err)
		}
	}
	if err != nil {
		if !errors.Is(err, ErrIncomplete) {
			checkErr(t, err)
		}
		return
	}
	p, err := decodeBody(fh, body, v)
	if err != nil {
		checkErr(t, err)
		return
	}
	enc := encodePacket(nil, p, v)
	q, err := decodeWire(t, enc, v)
	if err != nil {
		t.Fatalf("level %d: % x decodes to %s, which encodes to % x, which does not decode: %v", v, data[:n], show(p), enc, err)
	}
	if !samePacket(p, q) {
		t.Fatalf("level %d: decode -> encode -> decode changed the packet:\n%s\n%s", v, show(p), show(q))
	}
	if enc2 := encodePacket(nil, q, v); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable:\n% x\n% x", enc, enc2)
	}
	if pub, ok := p.(*Publish); ok && PublishSize(pub, v) != len(enc) {
		t.Fatalf("PublishSize %d, encoded %d", PublishSize(pub, v), len(enc))
	}
	if len(enc) > n {
		// The encoder writes the shortest form, never more than was read.
		t.Fatalf("re-encoded %d bytes from %d", len(enc), n)
	}
}

// checkErr asserts err is a well-formed *Error.
func checkErr(t *testing.T, err error) {
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	msg := err.Error()
	if e.Msg == "" || (e.Packet != 0 && !strings.HasPrefix(msg, "cannot decode "+TypeName(e.Packet)+": ")) {
		t.Fatalf("error message %q", msg)
	}
	if e.Reason < 0x80 {
		t.Fatalf("error with a success reason: %v", err)
	}
}

// seed adds the fixtures of fam (each with every version it is valid for
// and a few split points) to the corpus.
func seed(f *testing.F, fam family) {
	for _, fx := range fixtures {
		if bytes.IndexByte(fam, fx.wire[0]>>4) < 0 {
			continue
		}
		// The family maps type nibbles onto fam by index: undo that mapping
		// so the seed decodes as itself.
		w := append([]byte(nil), fx.wire...)
		idx := byte(bytes.IndexByte(fam, w[0]>>4))
		w[0] = idx<<4 | w[0]&0x0F
		for _, v := range fx.versions {
			f.Add(w, v-Version31, uint16(len(w)/2))
			f.Add(w, v-Version31, uint16(len(w)-1))
		}
	}
}

func FuzzConnect(f *testing.F) {
	fam := family{CONNECT}
	seed(f, fam)
	f.Fuzz(func(t *testing.T, data []byte, level byte, split uint16) { fuzzPacket(t, fam, data, level, split) })
}

func FuzzPublish(f *testing.F) {
	fam := family{PUBLISH}
	seed(f, fam)
	f.Fuzz(func(t *testing.T, data []byte, level byte, split uint16) { fuzzPacket(t, fam, data, level, split) })
}

func FuzzAcks(f *testing.F) {
	fam := family{PUBACK, PUBREC, PUBREL, PUBCOMP}
	seed(f, fam)
	f.Fuzz(func(t *testing.T, data []byte, level byte, split uint16) { fuzzPacket(t, fam, data, level, split) })
}

func FuzzSubscribe(f *testing.F) {
	fam := family{SUBSCRIBE, UNSUBSCRIBE}
	seed(f, fam)
	f.Fuzz(func(t *testing.T, data []byte, level byte, split uint16) { fuzzPacket(t, fam, data, level, split) })
}

func FuzzServerReplies(f *testing.F) {
	fam := family{CONNACK, SUBACK, UNSUBACK, PINGREQ, PINGRESP}
	seed(f, fam)
	f.Fuzz(func(t *testing.T, data []byte, level byte, split uint16) { fuzzPacket(t, fam, data, level, split) })
}

func FuzzDisconnectAuth(f *testing.F) {
	fam := family{DISCONNECT, AUTH}
	seed(f, fam)
	f.Fuzz(func(t *testing.T, data []byte, level byte, split uint16) { fuzzPacket(t, fam, data, level, split) })
}

// FuzzHeader checks ReadFixedHeader, Frame and the varint codec against
// each other, and the maximum packet size guard.
func FuzzHeader(f *testing.F) {
	for _, fx := range fixtures {
		f.Add(fx.wire[:min(len(fx.wire), 8)], uint32(0))
		f.Add(fx.wire[:min(len(fx.wire), 8)], uint32(len(fx.wire)))
	}
	f.Add(h(`30 ff ff ff 7f`), uint32(1<<20))
	f.Add(h(`30 80 80 80 80 01`), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, max uint32) {
		limit := int(max % (1 << 29))
		fh, err := ReadFixedHeader(data, limit)
		if err != nil {
			if !errors.Is(err, ErrIncomplete) {
				checkErr(t, err)
			}
			// Every prefix of an incomplete header is incomplete too.
			if errors.Is(err, ErrIncomplete) && len(data) > 0 {
				if _, err := ReadFixedHeader(data[:len(data)-1], limit); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("shorter prefix: %v", err)
				}
			}
			return
		}
		if fh.HeaderLen < 2 || fh.HeaderLen > 5 || fh.Remaining > MaxRemaining || fh.Type == 0 {
			t.Fatalf("%+v", fh)
		}
		if limit > 0 && fh.HeaderLen+fh.Remaining > limit {
			t.Fatalf("%+v passed a limit of %d", fh, limit)
		}
		v, n, err := DecodeVarint(data[1:])
		if err != nil || v != fh.Remaining || n+1 != fh.HeaderLen {
			t.Fatalf("DecodeVarint disagrees: %d %d %v, %+v", v, n, err, fh)
		}
		if got, _, err := DecodeVarint(AppendVarint(nil, v)); err != nil || got != v || varintLen(v) > n {
			t.Fatalf("varint %d does not round-trip", v)
		}
		for i := 0; i < fh.HeaderLen; i++ {
			if _, err := ReadFixedHeader(data[:i], limit); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("prefix %d: %v", i, err)
			}
		}
		_, body, total, err := Frame(data, limit)
		if len(data) < fh.HeaderLen+fh.Remaining {
			if !errors.Is(err, ErrIncomplete) {
				t.Fatalf("short frame: %v", err)
			}
			return
		}
		if err != nil || total != fh.HeaderLen+fh.Remaining || len(body) != fh.Remaining {
			t.Fatalf("Frame: %d %d %v", total, len(body), err)
		}
	})
}

// FuzzTopic checks the validators and Match against a simple reference
// matcher, and ParseShared against its own output.
func FuzzTopic(f *testing.F) {
	for _, c := range []struct{ filter, topic string }{
		{"sport/#", "sport"}, {"+/+", "/finance"}, {"#", "$SYS/x"}, {"$share/g/a/+", "a/b"}, {"a/+/c", "a//c"},
		{"a/b#", "a/b"}, {"+", ""}, {"\u00e9/+", "\u00e9/\xff"}, {"$SYS/#", "$SYS"}, {"//", "//"},
	} {
		f.Add([]byte(c.filter), []byte(c.topic))
	}
	f.Fuzz(func(t *testing.T, filter, topic []byte) {
		ferr := ValidTopicFilter(filter)
		terr := ValidTopicName(topic)
		if ferr != nil {
			checkErr(t, ferr)
		}
		if terr != nil {
			checkErr(t, terr)
		}
		group, inner, shared, serr := ParseShared(filter)
		if serr != nil {
			checkErr(t, serr)
		} else if shared {
			if string(filter) != "$share/"+string(group)+"/"+string(inner) || ValidTopicFilter(inner) != nil {
				t.Fatalf("ParseShared(%q) = %q %q", filter, group, inner)
			}
		}
		got := Match(filter, topic) // must not panic on any input
		if ferr == nil && terr == nil {
			if want := refMatch(string(filter), string(topic)); got != want {
				t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, topic, got, want)
			}
			if got && ValidTopicName(filter) == nil && !bytes.Equal(filter, topic) {
				t.Fatalf("a filter without wildcards %q matched another topic %q", filter, topic)
			}
		}
	})
}

// refMatch is a slow, obviously correct matcher over split levels.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		if f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}
