package mqttcodec

// Ack is a PUBACK, PUBREC, PUBREL or PUBCOMP packet (Type says which).
type Ack struct {
	Type     byte // PUBACK, PUBREC, PUBREL or PUBCOMP
	PacketID uint16
	Reason   ReasonCode // v5 only; Success when absent
	Props    Properties // v5 only
}

// Reset zeroes p, keeping the capacity of its property slices.
func (p *Ack) Reset() {
	p.Props.Reset()
	p.Type, p.PacketID, p.Reason = 0, 0, 0
}

// Decode decodes a PUBACK, PUBREC, PUBREL or PUBCOMP body of protocol level
// version; fh.Type says which. It resets p first and does not allocate.
//
// v3.1/3.1.1: the body is exactly the packet identifier. v5: 2 bytes is
// Success without properties, 3 bytes a reason code without properties,
// more a reason code and properties [MQTT 5.0 3.4.2.1]. The reason code
// must be one MQTT 5 allows for the packet (malformed otherwise), and the
// packet identifier non-zero [MQTT-2.2.1-3] (protocol error).
func (p *Ack) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	switch fh.Type {
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
	default:
		return &Error{Reason: ProtocolError, Packet: PUBACK, Msg: "fixed header is for a " + TypeName(fh.Type) + " packet, not an ack"}
	}
	p.Type = fh.Type
	if fh.Remaining != len(body) || fh.Flags != requiredFlags[fh.Type] {
		return checkType(fh, fh.Type, body)
	}
	if len(body) < 2 {
		return truncated(p.Type, "packet identifier")
	}
	p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	if p.PacketID == 0 { // [MQTT-2.2.1-5] (5.0) [MQTT-2.3.1-6] (3.1.1): it must match a non-zero one
		return protoErr(p.Type, "packet identifier is 0")
	}
	if version != Version5 {
		if len(body) != 2 {
			return malformed(p.Type, "remaining length is "+itoa(len(body))+", must be 2")
		}
		return nil
	}
	if len(body) == 2 {
		return nil
	}
	p.Reason = ReasonCode(body[2])
	// [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1]
	if !ValidReason(p.Type, p.Reason) {
		return malformed(p.Type, "reason code "+hex2(body[2])+" is not a "+TypeName(p.Type)+" reason code")
	}
	if len(body) == 3 {
		return nil
	}
	n, err := p.Props.decode(body[3:], p.Type, false)
	if err != nil {
		return err
	}
	if 3+n != len(body) {
		return malformed(p.Type, itoa(len(body)-3-n)+" bytes after the properties")
	}
	return nil
}

// AppendAck appends the ack p.Type (PUBACK, PUBREC, PUBREL or PUBCOMP) for
// protocol level version. v5 uses the shortest form: 2 bytes for Success
// without properties, 3 for another reason without properties. PUBREL's
// fixed flags 0b0010 are set [MQTT-3.6.1-1].
func AppendAck(dst []byte, p *Ack, version byte) []byte {
	first := p.Type << 4
	if p.Type == PUBREL {
		first |= 0x02
	}
	if version != Version5 {
		return append(dst, first, 2, byte(p.PacketID>>8), byte(p.PacketID))
	}
	ps := p.Props.size()
	switch {
	case ps == 0 && p.Reason == Success:
		return append(dst, first, 2, byte(p.PacketID>>8), byte(p.PacketID))
	case ps == 0:
		return append(dst, first, 3, byte(p.PacketID>>8), byte(p.PacketID), byte(p.Reason))
	}
	dst = appendHeader(dst, first, 3+varintLen(ps)+ps)
	dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID), byte(p.Reason))
	return p.Props.appendProps(dst, ps)
}
