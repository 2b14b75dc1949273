// Package wire is the load generator's own minimal MQTT 3.1.1 codec.
//
// It is deliberately small and allocation-free on the hot path: encoders append
// to a caller's []byte, and the frame splitter returns sub-slices of the
// caller's buffer (borrowed until the caller overwrites that buffer). It knows
// only what a load generator needs: CONNECT, PUBLISH, SUBSCRIBE, PINGREQ,
// UNSUBSCRIBE, DISCONNECT and the four publish acknowledgements going out; CONNACK, SUBACK, UNSUBACK,
// PUBLISH, the publish acknowledgements and PINGRESP coming in. It is not the
// product's codec (mqttcodec/) on purpose: the harness must be able to measure
// any broker even when Ferry's codec is broken.
package wire

import (
	"encoding/binary"
	"errors"
)

// Packet types (MQTT 3.1.1 §2.2.1).
const (
	CONNECT     = 1
	CONNACK     = 2
	PUBLISH     = 3
	PUBACK      = 4
	PUBREC      = 5
	PUBREL      = 6
	PUBCOMP     = 7
	SUBSCRIBE   = 8
	SUBACK      = 9
	UNSUBSCRIBE = 10
	UNSUBACK    = 11
	PINGREQ     = 12
	PINGRESP    = 13
	DISCONNECT  = 14
)

// MaxRemainingLength is the largest remaining length a 4-byte varint can carry.
const MaxRemainingLength = 268435455

var (
	// ErrIncomplete means the buffer holds only part of a frame; read more.
	ErrIncomplete = errors.New("incomplete mqtt frame")
	// ErrMalformed means the bytes cannot be an MQTT frame.
	ErrMalformed = errors.New("malformed mqtt frame")
)

// AppendVarint appends the MQTT variable byte integer encoding of n.
func AppendVarint(dst []byte, n int) []byte {
	if n < 0 || n > MaxRemainingLength {
		panic("BUG: mqtt remaining length out of range")
	}
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

// ReadVarint decodes a variable byte integer at the start of b and returns the
// value and the number of bytes it used.
func ReadVarint(b []byte) (int, int, error) {
	v, mul := 0, 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, ErrIncomplete
		}
		v += int(b[i]&0x7f) * mul
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
		mul <<= 7
	}
	return 0, 0, ErrMalformed
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// Connect describes a v3.1.1 CONNECT.
type Connect struct {
	ClientID     string
	KeepAlive    uint16 // seconds
	CleanSession bool
	Username     string // sent when non-empty
	Password     string // sent when non-empty (with Username)
	Will         bool   // a will of QoS 0, topic "wills/<ClientID>", empty payload
}

// AppendConnect appends a CONNECT packet (protocol level 4).
func AppendConnect(dst []byte, c Connect) []byte {
	var flags byte
	if c.CleanSession {
		flags |= 0x02
	}
	rl := 10 + 2 + len(c.ClientID)
	willTopic := "wills/" + c.ClientID
	if c.Will {
		flags |= 0x04
		rl += 2 + len(willTopic) + 2
	}
	if c.Username != "" {
		flags |= 0x80
		rl += 2 + len(c.Username)
		if c.Password != "" {
			flags |= 0x40
			rl += 2 + len(c.Password)
		}
	}
	dst = append(dst, CONNECT<<4)
	dst = AppendVarint(dst, rl)
	dst = appendString(dst, "MQTT")
	dst = append(dst, 4, flags)
	dst = binary.BigEndian.AppendUint16(dst, c.KeepAlive)
	dst = appendString(dst, c.ClientID)
	if c.Will {
		dst = appendString(dst, willTopic)
		dst = appendString(dst, "") // the payload: two length bytes, as a string's
	}
	if c.Username != "" {
		dst = appendString(dst, c.Username)
		if c.Password != "" {
			dst = appendString(dst, c.Password)
		}
	}
	return dst
}

// AppendPublish appends a PUBLISH. pid is ignored at QoS 0.
func AppendPublish(dst []byte, topic string, qos byte, retain, dup bool, pid uint16, payload []byte) []byte {
	h := byte(PUBLISH<<4) | (qos&3)<<1
	if retain {
		h |= 1
	}
	if dup {
		h |= 0x08
	}
	rl := 2 + len(topic) + len(payload)
	if qos > 0 {
		rl += 2
	}
	dst = append(dst, h)
	dst = AppendVarint(dst, rl)
	dst = appendString(dst, topic)
	if qos > 0 {
		dst = binary.BigEndian.AppendUint16(dst, pid)
	}
	return append(dst, payload...)
}

// AppendAck appends PUBACK, PUBREC, PUBREL or PUBCOMP (PUBREL carries the
// mandatory 0b0010 flags [MQTT-3.6.1-1]).
func AppendAck(dst []byte, typ byte, pid uint16) []byte {
	h := typ << 4
	if typ == PUBREL {
		h |= 0x02
	}
	return append(dst, h, 2, byte(pid>>8), byte(pid))
}

// AppendSubscribe appends a SUBSCRIBE for the filters, all at the same QoS.
func AppendSubscribe(dst []byte, pid uint16, qos byte, filters ...string) []byte {
	rl := 2
	for _, f := range filters {
		rl += 2 + len(f) + 1
	}
	dst = append(dst, SUBSCRIBE<<4|0x02) // [MQTT-3.8.1-1]
	dst = AppendVarint(dst, rl)
	dst = binary.BigEndian.AppendUint16(dst, pid)
	for _, f := range filters {
		dst = appendString(dst, f)
		dst = append(dst, qos&3)
	}
	return dst
}

// AppendUnsubscribe appends an UNSUBSCRIBE for the filters.
func AppendUnsubscribe(dst []byte, pid uint16, filters ...string) []byte {
	rl := 2
	for _, f := range filters {
		rl += 2 + len(f)
	}
	dst = append(dst, UNSUBSCRIBE<<4|0x02) // [MQTT-3.10.1-1]
	dst = AppendVarint(dst, rl)
	dst = binary.BigEndian.AppendUint16(dst, pid)
	for _, f := range filters {
		dst = appendString(dst, f)
	}
	return dst
}

// AppendPingreq appends a PINGREQ.
func AppendPingreq(dst []byte) []byte { return append(dst, PINGREQ<<4, 0) }

// AppendDisconnect appends a DISCONNECT.
func AppendDisconnect(dst []byte) []byte { return append(dst, DISCONNECT<<4, 0) }

// Frame is one decoded fixed header plus its body, borrowed from the buffer
// passed to Split.
type Frame struct {
	Type  byte
	Flags byte
	Body  []byte
}

// Split decodes the frame at the start of b and returns it with its total
// length. It returns ErrIncomplete when b holds only part of a frame.
func Split(b []byte) (Frame, int, error) {
	if len(b) < 2 {
		return Frame{}, 0, ErrIncomplete
	}
	rl, n, err := ReadVarint(b[1:])
	if err != nil {
		return Frame{}, 0, err
	}
	total := 1 + n + rl
	if len(b) < total {
		return Frame{}, total, ErrIncomplete
	}
	return Frame{Type: b[0] >> 4, Flags: b[0] & 0x0f, Body: b[1+n : total]}, total, nil
}

// Publish is an incoming PUBLISH, borrowed from the frame.
type Publish struct {
	QoS     byte
	Retain  bool
	Dup     bool
	PID     uint16
	Topic   []byte
	Payload []byte
}

// ParsePublish decodes a PUBLISH frame.
func ParsePublish(f Frame) (Publish, error) {
	p := Publish{QoS: (f.Flags >> 1) & 3, Retain: f.Flags&1 != 0, Dup: f.Flags&8 != 0}
	if p.QoS == 3 {
		return p, ErrMalformed
	}
	b := f.Body
	if len(b) < 2 {
		return p, ErrMalformed
	}
	tl := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < tl {
		return p, ErrMalformed
	}
	p.Topic, b = b[:tl], b[tl:]
	if p.QoS > 0 {
		if len(b) < 2 {
			return p, ErrMalformed
		}
		p.PID, b = binary.BigEndian.Uint16(b), b[2:]
	}
	p.Payload = b
	return p, nil
}

// AckPID returns the packet id of a PUBACK/PUBREC/PUBREL/PUBCOMP/SUBACK/UNSUBACK.
func AckPID(f Frame) (uint16, error) {
	if len(f.Body) < 2 {
		return 0, ErrMalformed
	}
	return binary.BigEndian.Uint16(f.Body), nil
}

// ConnackCode returns the CONNACK return code (0 = accepted).
func ConnackCode(f Frame) (byte, error) {
	if f.Type != CONNACK || len(f.Body) != 2 {
		return 0, ErrMalformed
	}
	return f.Body[1], nil
}

// SubackCodes returns the SUBACK return codes (0x80 = failure), borrowed.
func SubackCodes(f Frame) ([]byte, error) {
	if f.Type != SUBACK || len(f.Body) < 3 {
		return nil, ErrMalformed
	}
	return f.Body[2:], nil
}
