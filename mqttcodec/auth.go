package mqttcodec

// Auth is an AUTH packet (MQTT 5 only).
type Auth struct {
	Reason ReasonCode // Success, ContinueAuthentication or ReAuthenticate
	Props  Properties
}

// Reset zeroes p, keeping the capacity of its property slices.
func (p *Auth) Reset() {
	p.Props.Reset()
	*p = Auth{Props: p.Props}
}

// Decode decodes an AUTH body of protocol level version. It resets p first.
// AUTH exists only in MQTT 5: for an earlier version packet type 15 is
// reserved and the packet malformed. An empty body is Success without
// properties [MQTT 5.0 3.15.2.1]; otherwise the reason code must be 0x00,
// 0x18 or 0x19 (malformed otherwise) and the properties must hold an
// Authentication Method (protocol error otherwise [MQTT 5.0 3.15.2.2.2]).
func (p *Auth) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, AUTH, body); err != nil {
		return err
	}
	if version != Version5 {
		return malformed(AUTH, "packet type 15 is reserved before mqtt 5")
	}
	if len(body) == 0 {
		return nil
	}
	p.Reason = ReasonCode(body[0])
	if !authReasons.has(p.Reason) { // [MQTT-3.15.2-1]
		return malformed(AUTH, "reason code "+hex2(body[0])+" is not an AUTH reason code")
	}
	if len(body) == 1 {
		return protoErr(AUTH, "no authentication method")
	}
	n, err := p.Props.decode(body[1:], AUTH, false)
	if err != nil {
		return err
	}
	if 1+n != len(body) {
		return malformed(AUTH, itoa(len(body)-1-n)+" bytes after the properties")
	}
	if !p.Props.Has(PropAuthMethod) {
		return protoErr(AUTH, "properties: no authentication method")
	}
	return nil
}

// AppendAuth appends an AUTH packet: no body for Success without
// properties, else the reason code and the properties (which should hold
// an Authentication Method).
func AppendAuth(dst []byte, p *Auth) []byte {
	ps := p.Props.size()
	if ps == 0 && p.Reason == Success {
		return append(dst, AUTH<<4, 0)
	}
	dst = appendHeader(dst, AUTH<<4, 1+varintLen(ps)+ps)
	dst = append(dst, byte(p.Reason))
	return p.Props.appendProps(dst, ps)
}
