package mqttcodec

import (
	"errors"
	"strconv"
)

// ErrIncomplete is returned by ReadFixedHeader, Frame and DecodeVarint when
// the bytes given do not yet hold the whole header or packet. It is not a
// protocol error: read more bytes and call again.
var ErrIncomplete = errors.New("mqttcodec: incomplete packet")

// Error is every decode and validation failure of this package. Reason is
// the MQTT 5 reason code the server must answer with (in a CONNACK or a
// DISCONNECT, or in an ack where the packet allows it); for a v3.1/v3.1.1
// client use V3ConnackCode / V3SubackCode, or simply close the connection
// as those versions require for malformed packets.
//
// Packet is the packet type being decoded (0 for the standalone validators
// ValidTopicName, ValidTopicFilter and ParseShared). Msg says what was wrong
// and where, in lower case. Err, when set, is a wrapped cause (for example
// the *Error of a topic validator).
type Error struct {
	Reason ReasonCode
	Packet byte
	Msg    string
	Err    error
}

// Error formats as
//
//	cannot decode SUBSCRIBE: topic filter 3: '#' must be the last level (0x8F topic filter invalid)
func (e *Error) Error() string {
	b := make([]byte, 0, 64+len(e.Msg))
	if e.Packet != 0 {
		b = append(b, "cannot decode "...)
		b = append(b, TypeName(e.Packet)...)
		b = append(b, ": "...)
	} else {
		b = append(b, "mqttcodec: "...)
	}
	b = append(b, e.Msg...)
	if e.Err != nil {
		var inner *Error
		if errors.As(e.Err, &inner) {
			if inner.Msg != "" {
				if e.Msg != "" {
					b = append(b, ": "...)
				}
				b = append(b, inner.Msg...)
			}
		} else {
			if e.Msg != "" {
				b = append(b, ": "...)
			}
			b = append(b, e.Err.Error()...)
		}
	}
	b = append(b, " ("...)
	b = append(b, hex2(byte(e.Reason))...)
	b = append(b, ' ')
	b = append(b, e.Reason.String()...)
	b = append(b, ')')
	return string(b)
}

// Unwrap returns the wrapped cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the MQTT 5 reason code to answer err with:
//   - nil: Success (0x00);
//   - an *Error anywhere in the chain: its Reason;
//   - ErrIncomplete: MalformedPacket (0x81) — a connection that ends or a
//     body that is shorter than its declared length is a malformed packet;
//   - anything else: UnspecifiedError (0x80).
func ReasonOf(err error) ReasonCode {
	if err == nil {
		return Success
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if errors.Is(err, ErrIncomplete) {
		return MalformedPacket
	}
	return UnspecifiedError
}

// newErr builds an *Error. It is only called on failure paths, so the
// allocation it costs never touches the hot path.
func newErr(pkt byte, r ReasonCode, msg string) error {
	return &Error{Reason: r, Packet: pkt, Msg: msg}
}

func malformed(pkt byte, msg string) error { return newErr(pkt, MalformedPacket, msg) }

func protoErr(pkt byte, msg string) error { return newErr(pkt, ProtocolError, msg) }

// truncated reports a field that runs past the end of the packet body.
func truncated(pkt byte, field string) error {
	return newErr(pkt, MalformedPacket, field+": runs past the end of the packet")
}

// wrapErr gives an inner *Error (from a validator) the packet and field
// context, keeping its reason code.
func wrapErr(pkt byte, field string, inner error) error {
	var ie *Error
	if errors.As(inner, &ie) {
		return &Error{Reason: ie.Reason, Packet: pkt, Msg: field, Err: inner}
	}
	return &Error{Reason: MalformedPacket, Packet: pkt, Msg: field, Err: inner}
}

// itoa is strconv.Itoa, kept short for the error builders.
func itoa(i int) string { return strconv.Itoa(i) }

// hex2 formats a byte as 0xNN.
func hex2(v byte) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{'0', 'x', digits[v>>4], digits[v&0xF]})
}
