package mqttcodec

// Disconnect is a DISCONNECT packet. v3 DISCONNECTs have no body.
type Disconnect struct {
	Reason ReasonCode // v5 only; NormalDisconnection when absent
	Props  Properties // v5 only
}

// Reset zeroes p, keeping the capacity of its property slices.
func (p *Disconnect) Reset() {
	p.Props.Reset()
	*p = Disconnect{Props: p.Props}
}

// Decode decodes a DISCONNECT body of protocol level version. It resets p
// first. v3: the body must be empty [MQTT 3.1.1 3.14.1]. v5: an empty body
// is Normal Disconnection, one byte a reason code without properties,
// more a reason code and properties [MQTT 5.0 3.14.2.1]; the reason code
// must be one MQTT 5 allows in DISCONNECT (malformed otherwise).
func (p *Disconnect) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, DISCONNECT, body); err != nil {
		return err
	}
	if version != Version5 {
		if len(body) != 0 {
			return malformed(DISCONNECT, "remaining length is "+itoa(len(body))+", must be 0")
		}
		return nil
	}
	if len(body) == 0 {
		return nil
	}
	p.Reason = ReasonCode(body[0])
	if !disconnectReasons.has(p.Reason) { // [MQTT-3.14.2-1]
		return malformed(DISCONNECT, "reason code "+hex2(body[0])+" is not a DISCONNECT reason code")
	}
	if len(body) == 1 {
		return nil
	}
	n, err := p.Props.decode(body[1:], DISCONNECT, false)
	if err != nil {
		return err
	}
	if 1+n != len(body) {
		return malformed(DISCONNECT, itoa(len(body)-1-n)+" bytes after the properties")
	}
	return nil
}

// AppendDisconnect appends a DISCONNECT for protocol level version, in the
// shortest v5 form: no body for Normal Disconnection without properties,
// the reason code alone without properties. v3 DISCONNECTs have no body.
func AppendDisconnect(dst []byte, p *Disconnect, version byte) []byte {
	if version != Version5 {
		return append(dst, DISCONNECT<<4, 0)
	}
	ps := p.Props.size()
	switch {
	case ps == 0 && p.Reason == NormalDisconnection:
		return append(dst, DISCONNECT<<4, 0)
	case ps == 0:
		return append(dst, DISCONNECT<<4, 1, byte(p.Reason))
	}
	dst = appendHeader(dst, DISCONNECT<<4, 1+varintLen(ps)+ps)
	dst = append(dst, byte(p.Reason))
	return p.Props.appendProps(dst, ps)
}
