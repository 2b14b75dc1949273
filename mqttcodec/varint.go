package mqttcodec

// MaxRemaining is the largest Remaining Length (and Variable Byte Integer)
// MQTT can encode: four bytes of seven bits, 268,435,455 [MQTT 1.5.5].
const MaxRemaining = 268435455

// AppendVarint appends v as an MQTT Variable Byte Integer, using the
// minimum number of bytes [MQTT-1.5.5-1]. v must be in [0, MaxRemaining];
// anything else is a bug of the caller and panics.
func AppendVarint(dst []byte, v int) []byte {
	if v < 0 || v > MaxRemaining {
		panic("BUG: mqttcodec: variable byte integer out of range: " + itoa(v))
	}
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// varintLen is the number of bytes AppendVarint writes for v.
func varintLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	default:
		return 4
	}
}

// DecodeVarint decodes the Variable Byte Integer at the start of b and
// returns its value and length. It returns ErrIncomplete when b ends before
// a byte without the continuation bit, and a MalformedPacket *Error when a
// fourth byte still has the continuation bit set (a fifth byte is never
// allowed) [MQTT-1.5.5]. A value encoded in more bytes than necessary is
// accepted (the minimum-length rule binds the sender, [MQTT-1.5.5-1]).
func DecodeVarint(b []byte) (v int, n int, err error) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, ErrIncomplete
		}
		c := b[i]
		v |= int(c&0x7F) << (7 * i)
		if c < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errVarintTooLong
}

var errVarintTooLong = &Error{Reason: MalformedPacket, Msg: "variable byte integer longer than 4 bytes"}

// decodeVarintBody decodes a varint inside a packet body: there, running
// out of bytes is a malformed packet, not ErrIncomplete.
func decodeVarintBody(b []byte) (v int, n int, ok bool) {
	if len(b) > 0 && b[0] < 0x80 { // fast path: one byte
		return int(b[0]), 1, true
	}
	v, n, err := DecodeVarint(b)
	return v, n, err == nil
}
