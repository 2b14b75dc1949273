package mqttcodec

import (
	"encoding/binary"
	"unicode/utf8"
)

// UTF-8 rules of MQTT (1.5.4 in 5.0, 1.5.3 in 3.1.1):
//   - the string MUST be well-formed UTF-8 and MUST NOT encode the
//     surrogates U+D800..U+DFFF [MQTT-1.5.4-1]; overlong forms are not
//     well-formed either (unicode/utf8 rejects both);
//   - it MUST NOT encode U+0000 [MQTT-1.5.4-2];
//   - a U+FEFF byte order mark is an ordinary character and MUST NOT be
//     skipped or stripped [MQTT-1.5.4-3]: the decoders return the bytes
//     as they came.
//
// The control characters U+0001..U+001F and U+007F..U+009F and the Unicode
// non-characters SHOULD NOT appear, and a receiver MAY close the connection
// when they do. Ferry accepts them, in every string including topic names
// and filters: they are well formed, devices in the field send them, and
// refusing them would disconnect a fleet over what the specification leaves
// optional. A server that wants to refuse them can call HasDiscouraged.

// utf8Problem returns the byte offset of the first violation of the MUST
// rules above in s and what it is, or (-1, "") if s is acceptable.
func utf8Problem(s []byte) (int, string) {
	i := 0
	for i < len(s) {
		// Fast path: eight ASCII bytes, none zero, at a time.
		if i+8 <= len(s) {
			w := binary.LittleEndian.Uint64(s[i:])
			if w&0x8080808080808080 == 0 && (w-0x0101010101010101)&^w&0x8080808080808080 == 0 {
				i += 8
				continue
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				return i, "contains u+0000" // [MQTT-1.5.4-2]
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			return i, "is not well-formed utf-8" // [MQTT-1.5.4-1]
		}
		i += n
	}
	return -1, ""
}

// ValidUTF8 reports whether s satisfies the MUST rules of an MQTT UTF-8
// Encoded String: well-formed, no surrogates, no U+0000.
func ValidUTF8(s []byte) bool {
	i, _ := utf8Problem(s)
	return i < 0
}

// HasDiscouraged reports whether s contains a code point MQTT says SHOULD
// NOT be sent: a control character (U+0001..U+001F, U+007F..U+009F) or a
// Unicode non-character (U+FDD0..U+FDEF, and U+xFFFE/U+xFFFF of every
// plane). s must be valid UTF-8.
func HasDiscouraged(s []byte) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7F {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r <= 0x9F || (r >= 0xFDD0 && r <= 0xFDEF) || r&0xFFFE == 0xFFFE {
			return true
		}
		i += n
	}
	return false
}

// utf8Err builds the error for a string field that breaks the MUST rules:
// a malformed packet [MQTT-1.5.4-1] [MQTT-1.5.4-2].
func utf8Err(pkt byte, field string, at int, what string) error {
	return malformed(pkt, field+" "+what+" at byte "+itoa(at))
}

// reader walks a packet body. Every method reports false when the field
// runs past the end; the caller turns that into a MalformedPacket error
// naming the field.
type reader struct {
	b []byte
	i int
}

func (r *reader) left() int { return len(r.b) - r.i }

func (r *reader) u8() (byte, bool) {
	if r.i >= len(r.b) {
		return 0, false
	}
	c := r.b[r.i]
	r.i++
	return c, true
}

func (r *reader) u16() (uint16, bool) {
	if r.i+2 > len(r.b) {
		return 0, false
	}
	v := binary.BigEndian.Uint16(r.b[r.i:])
	r.i += 2
	return v, true
}

func (r *reader) u32() (uint32, bool) {
	if r.i+4 > len(r.b) {
		return 0, false
	}
	v := binary.BigEndian.Uint32(r.b[r.i:])
	r.i += 4
	return v, true
}

// bin reads a Two Byte Integer length and that many bytes (Binary Data and
// UTF-8 Encoded String share the form). The result borrows from the body
// and is never nil when ok (an empty field is an empty, non-nil slice), with
// its capacity cut to its length so an append by the caller cannot
// overwrite the rest of the packet.
func (r *reader) bin() ([]byte, bool) {
	if r.i+2 > len(r.b) {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(r.b[r.i:]))
	s := r.i + 2
	if s+n > len(r.b) {
		return nil, false
	}
	r.i = s + n
	return r.b[s : s+n : s+n], true
}

func (r *reader) varint() (int, bool) {
	v, n, ok := decodeVarintBody(r.b[r.i:])
	if ok {
		r.i += n
	}
	return v, ok
}

// rest returns the unread bytes (borrowed) and consumes them.
func (r *reader) rest() []byte {
	s := r.b[r.i:len(r.b):len(r.b)]
	r.i = len(r.b)
	return s
}

// appendBin appends a Two Byte Integer length and the bytes. Callers keep
// len(s) <= 65535; longer strings cannot be encoded and are a caller bug.
func appendBin(dst, s []byte) []byte {
	if len(s) > 0xFFFF {
		panic("BUG: mqttcodec: string or binary field longer than 65535 bytes")
	}
	dst = append(dst, byte(len(s)>>8), byte(len(s)))
	return append(dst, s...)
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// invalidUTF8At returns the offset of the first byte that is not part of
// well-formed UTF-8 in s, or -1. Unlike utf8Problem it allows U+0000
// (payloads may carry it).
func invalidUTF8At(s []byte) int {
	if utf8.Valid(s) {
		return -1
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}
