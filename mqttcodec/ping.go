package mqttcodec

// DecodePing checks a PINGREQ or PINGRESP: the body must be empty
// [MQTT 3.12.1, 3.13.1]. It does not allocate.
func DecodePing(fh FixedHeader, body []byte) error {
	if fh.Type != PINGREQ && fh.Type != PINGRESP {
		return &Error{Reason: ProtocolError, Packet: PINGREQ, Msg: "fixed header is for a " + TypeName(fh.Type) + " packet, not a ping"}
	}
	if err := checkTypeFlags(fh.Type, fh.Flags); err != nil {
		return err
	}
	if fh.Remaining != 0 || len(body) != 0 {
		return malformed(fh.Type, "remaining length is "+itoa(fh.Remaining)+", must be 0")
	}
	return nil
}

// AppendPingreq appends a PINGREQ.
func AppendPingreq(dst []byte) []byte { return append(dst, PINGREQ<<4, 0) }

// AppendPingresp appends a PINGRESP.
func AppendPingresp(dst []byte) []byte { return append(dst, PINGRESP<<4, 0) }
