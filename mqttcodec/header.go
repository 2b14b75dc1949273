package mqttcodec

// Protocol levels (the "Protocol Level" byte of CONNECT).
const (
	Version31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	Version311 byte = 4 // MQTT 3.1.1, protocol name "MQTT"
	Version5   byte = 5 // MQTT 5.0, protocol name "MQTT"
)

// Control packet types (the high nibble of the first byte).
const (
	CONNECT     byte = 1
	CONNACK     byte = 2
	PUBLISH     byte = 3
	PUBACK      byte = 4
	PUBREC      byte = 5
	PUBREL      byte = 6
	PUBCOMP     byte = 7
	SUBSCRIBE   byte = 8
	SUBACK      byte = 9
	UNSUBSCRIBE byte = 10
	UNSUBACK    byte = 11
	PINGREQ     byte = 12
	PINGRESP    byte = 13
	DISCONNECT  byte = 14
	AUTH        byte = 15
)

var typeNames = [16]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
	"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}

// TypeName returns the upper-case name of a packet type ("PUBLISH"),
// "RESERVED" for 0 and "UNKNOWN" for values above 15.
func TypeName(t byte) string {
	if t < 16 {
		return typeNames[t]
	}
	return "UNKNOWN"
}

// FixedHeader is the first 2 to 5 bytes of every packet.
type FixedHeader struct {
	Type      byte // packet type, 1..15
	Flags     byte // low nibble of the first byte
	Remaining int  // Remaining Length: the size of the body
	HeaderLen int  // bytes of the fixed header itself (2..5)
}

// PUBLISH flag bits of FixedHeader.Flags.
const (
	flagRetain = 0x01
	flagQoS    = 0x06
	flagDup    = 0x08
)

// PublishQoS is the QoS of a PUBLISH from its fixed header alone, before its body is decoded (Frame has
// refused QoS 3 [MQTT-3.3.1-4]). Meaningless for other packet types.
func (fh FixedHeader) PublishQoS() byte { return (fh.Flags & flagQoS) >> 1 }

// requiredFlags is the fixed flag nibble of every type but PUBLISH
// [MQTT-2.1.3-1]; 0xFF marks PUBLISH, whose flags carry DUP/QoS/RETAIN.
var requiredFlags = [16]byte{
	PUBLISH: 0xFF, PUBREL: 0x2, SUBSCRIBE: 0x2, UNSUBSCRIBE: 0x2,
}

// ReadFixedHeader parses the fixed header at the start of b. It returns
// ErrIncomplete if b does not yet hold the whole fixed header, and an
// *Error for:
//   - the reserved packet type 0 (MalformedPacket);
//   - flags other than those fixed for the type: 0b0010 for PUBREL, SUBSCRIBE
//     and UNSUBSCRIBE, 0 for the others [MQTT-2.1.3-1] (MalformedPacket);
//   - PUBLISH with QoS 3 [MQTT-3.3.1-4] (MalformedPacket);
//   - a Remaining Length whose 4th byte has the continuation bit (MalformedPacket);
//   - HeaderLen+Remaining > maxPacketSize, if maxPacketSize > 0 (PacketTooLarge).
//
// The type and flags are checked as soon as the first byte is there, and
// the size as soon as the Remaining Length is: neither needs the body, so
// the server can refuse an oversized packet before buffering it.
//
// On an *Error the returned FixedHeader holds what was parsed (the Type at
// least), so the caller can tell which packet was refused.
func ReadFixedHeader(b []byte, maxPacketSize int) (FixedHeader, error) {
	var fh FixedHeader
	if len(b) == 0 {
		return fh, ErrIncomplete
	}
	fh.Type = b[0] >> 4
	fh.Flags = b[0] & 0x0F
	if err := checkTypeFlags(fh.Type, fh.Flags); err != nil {
		return fh, err
	}
	// Remaining Length: unrolled fast path for the one-byte case.
	if len(b) >= 2 && b[1] < 0x80 {
		fh.Remaining = int(b[1])
		fh.HeaderLen = 2
	} else {
		v, n, err := DecodeVarint(b[1:])
		if err != nil {
			if err == ErrIncomplete {
				return fh, err
			}
			return fh, &Error{Reason: MalformedPacket, Packet: fh.Type, Msg: "remaining length: variable byte integer longer than 4 bytes"}
		}
		fh.Remaining = v
		fh.HeaderLen = 1 + n
	}
	if maxPacketSize > 0 && fh.HeaderLen+fh.Remaining > maxPacketSize {
		return fh, &Error{Reason: PacketTooLarge, Packet: fh.Type,
			Msg: "packet of " + itoa(fh.HeaderLen+fh.Remaining) + " bytes exceeds the maximum packet size of " + itoa(maxPacketSize)}
	}
	return fh, nil
}

func checkTypeFlags(t, flags byte) error {
	if flags > 0x0F {
		return &Error{Reason: MalformedPacket, Packet: t, Msg: "fixed header flags " + itoa(int(flags)) + " do not fit in four bits"}
	}
	if t == 0 {
		return &Error{Reason: MalformedPacket, Msg: "reserved packet type 0"}
	}
	want := requiredFlags[t]
	if want == 0xFF { // PUBLISH
		if flags&flagQoS == flagQoS {
			return &Error{Reason: MalformedPacket, Packet: t, Msg: "qos 3 in the fixed header"} // [MQTT-3.3.1-4]
		}
		return nil
	}
	// [MQTT-2.1.3-1] (5.0) [MQTT-2.2.2-1] [MQTT-2.2.2-2] (3.1.1) [MQTT-3.6.1-1] [MQTT-3.8.1-1]
	// [MQTT-3.10.1-1] [MQTT-3.14.1-1] [MQTT-3.15.1-1]
	if flags != want {
		return &Error{Reason: MalformedPacket, Packet: t,
			Msg: "fixed header flags " + flagBits(flags) + ", must be " + flagBits(want)}
	}
	return nil
}

func flagBits(f byte) string {
	return string([]byte{'0', 'b', '0' + f>>3&1, '0' + f>>2&1, '0' + f>>1&1, '0' + f&1})
}

// Frame returns the fixed header and the body of the first whole packet in
// b, and n, the bytes it spans (HeaderLen+Remaining). It returns
// ErrIncomplete until all n bytes are in b; the errors of ReadFixedHeader
// otherwise. body is a sub-slice of b: it is borrowed, and so is everything
// decoded from it.
func Frame(b []byte, maxPacketSize int) (fh FixedHeader, body []byte, n int, err error) {
	fh, err = ReadFixedHeader(b, maxPacketSize)
	if err != nil {
		return fh, nil, 0, err
	}
	n = fh.HeaderLen + fh.Remaining
	if len(b) < n {
		return fh, nil, 0, ErrIncomplete
	}
	return fh, b[fh.HeaderLen:n:n], n, nil
}

// appendHeader appends a fixed header.
func appendHeader(dst []byte, first byte, remaining int) []byte {
	if remaining < 0x80 {
		return append(dst, first, byte(remaining))
	}
	return AppendVarint(append(dst, first), remaining)
}
