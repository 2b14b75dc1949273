package mqttcodec

// Connect is a CONNECT packet. After Decode every byte slice borrows from
// the decoded body.
type Connect struct {
	ProtocolName []byte // "MQTT" (levels 4, 5) or "MQIsdp" (level 3); AppendConnect picks it when empty
	Version      byte   // protocol level: Version31, Version311 or Version5
	CleanStart   bool   // Clean Session in 3.1/3.1.1
	KeepAlive    uint16 // seconds
	Props        Properties

	ClientID []byte

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillProps   Properties
	WillTopic   []byte
	WillPayload []byte

	UsernameFlag bool
	Username     []byte
	PasswordFlag bool
	Password     []byte
}

// Reset zeroes p, keeping the capacity of its property slices.
func (p *Connect) Reset() {
	p.Props.Reset()
	p.WillProps.Reset()
	props, will := p.Props, p.WillProps
	*p = Connect{Props: props, WillProps: will}
}

// Connect flag bits.
const (
	connReserved     = 0x01
	connCleanStart   = 0x02
	connWill         = 0x04
	connWillQoSShift = 3
	connWillRetain   = 0x20
	connPassword     = 0x40
	connUsername     = 0x80
)

// checkType returns an error if the caller passed the header of another
// packet type to a decoder; it also checks the fixed flags (for a
// FixedHeader not made by ReadFixedHeader) and that body has the length the
// header announced.
func checkType(fh FixedHeader, want byte, body []byte) error {
	if fh.Type != want {
		return &Error{Reason: ProtocolError, Packet: want, Msg: "fixed header is for a " + TypeName(fh.Type) + " packet"}
	}
	if err := checkTypeFlags(fh.Type, fh.Flags); err != nil {
		return err
	}
	if fh.Remaining != len(body) {
		return &Error{Reason: MalformedPacket, Packet: want,
			Msg: "body is " + itoa(len(body)) + " bytes but the remaining length is " + itoa(fh.Remaining)}
	}
	return nil
}

// Decode decodes a CONNECT body, finding the protocol version itself. It
// resets p first; on success every slice of p borrows from body.
//
// An unsupported protocol level of a known protocol name returns an *Error
// with reason UnsupportedProtocolVersion (0x84) after setting
// p.ProtocolName and p.Version, so the server can still answer with a
// CONNACK in the client's version (V3ConnackCode gives 1 for v3).
// [MQTT-3.1.2-2]. On any other error p.Version is set if it was read, so a
// v5 client can be answered with a CONNACK reason code.
func (p *Connect) Decode(fh FixedHeader, body []byte) error {
	p.Reset()
	if err := checkType(fh, CONNECT, body); err != nil {
		return err
	}
	r := reader{b: body}
	var ok bool
	if p.ProtocolName, ok = r.bin(); !ok {
		return truncated(CONNECT, "protocol name")
	}
	if p.Version, ok = r.u8(); !ok {
		return truncated(CONNECT, "protocol level")
	}
	switch string(p.ProtocolName) {
	case "MQTT":
		if p.Version != Version311 && p.Version != Version5 {
			return newErr(CONNECT, UnsupportedProtocolVersion, "protocol level "+itoa(int(p.Version))+" with protocol name \"MQTT\"") // [MQTT-3.1.2-2]
		}
	case "MQIsdp":
		if p.Version != Version31 {
			return newErr(CONNECT, UnsupportedProtocolVersion, "protocol level "+itoa(int(p.Version))+" with protocol name \"MQIsdp\"") // [MQTT-3.1.2-2]
		}
	default: // [MQTT-3.1.2-1]
		return protoErr(CONNECT, "protocol name "+quoteTrunc(p.ProtocolName)+" is neither \"MQTT\" nor \"MQIsdp\"")
	}
	v5 := p.Version == Version5
	flags, ok := r.u8()
	if !ok {
		return truncated(CONNECT, "connect flags")
	}
	if err := p.setFlags(flags); err != nil {
		return err
	}
	if p.KeepAlive, ok = r.u16(); !ok {
		return truncated(CONNECT, "keep alive")
	}
	if v5 {
		n, err := p.Props.decode(body[r.i:], CONNECT, false)
		if err != nil {
			return err
		}
		r.i += n
		if p.Props.Has(PropAuthData) && !p.Props.Has(PropAuthMethod) {
			return protoErr(CONNECT, "properties: authentication data without an authentication method")
		}
	}
	if err := p.decodePayload(&r, body); err != nil {
		return err
	}
	if r.left() != 0 {
		return malformed(CONNECT, itoa(r.left())+" bytes after the end of the payload")
	}
	return nil
}

// setFlags checks and stores the Connect Flags byte.
func (p *Connect) setFlags(flags byte) error {
	if flags&connReserved != 0 { // [MQTT-3.1.2-3]
		return malformed(CONNECT, "connect flags: reserved bit 0 is set")
	}
	p.CleanStart = flags&connCleanStart != 0
	p.WillFlag = flags&connWill != 0
	p.WillQoS = flags >> connWillQoSShift & 3
	p.WillRetain = flags&connWillRetain != 0
	p.PasswordFlag = flags&connPassword != 0
	p.UsernameFlag = flags&connUsername != 0
	if p.WillQoS == 3 { // [MQTT-3.1.2-12] (v5) [MQTT-3.1.2-14] (v3.1.1)
		return malformed(CONNECT, "connect flags: will qos is 3")
	}
	if !p.WillFlag {
		if p.WillQoS != 0 { // [MQTT-3.1.2-11] (5.0, 3.1.1) [MQTT-3.1.2-13] (3.1.1)
			return malformed(CONNECT, "connect flags: will qos is "+itoa(int(p.WillQoS))+" without the will flag")
		}
		if p.WillRetain { // [MQTT-3.1.2-13] (v5) [MQTT-3.1.2-15] (v3.1.1)
			return malformed(CONNECT, "connect flags: will retain is set without the will flag")
		}
	}
	if p.Version != Version5 && p.PasswordFlag && !p.UsernameFlag { // [MQTT-3.1.2-22] (v3.1.1)
		return malformed(CONNECT, "connect flags: password flag is set without the user name flag")
	}
	return nil
}

// decodePayload reads client identifier, will, user name and password.
func (p *Connect) decodePayload(r *reader, body []byte) error {
	var ok bool
	if p.ClientID, ok = r.bin(); !ok { // [MQTT-3.1.3-3]
		return truncated(CONNECT, "client identifier")
	}
	if at, what := utf8Problem(p.ClientID); at >= 0 { // [MQTT-3.1.3-4]
		return utf8Err(CONNECT, "client identifier", at, what)
	}
	if len(p.ClientID) == 0 {
		switch {
		case p.Version == Version31: // MQTT 3.1: 1 to 23 characters
			return newErr(CONNECT, ClientIdentifierNotValid, "client identifier is empty, which MQTT 3.1 does not allow")
		case p.Version == Version311 && !p.CleanStart: // [MQTT-3.1.3-8]
			return newErr(CONNECT, ClientIdentifierNotValid, "client identifier is empty and clean session is 0")
		}
	}
	if p.WillFlag { // [MQTT-3.1.2-9]
		if p.Version == Version5 {
			n, err := p.WillProps.decode(body[r.i:], CONNECT, true)
			if err != nil {
				return err
			}
			r.i += n
		}
		if p.WillTopic, ok = r.bin(); !ok {
			return truncated(CONNECT, "will topic")
		}
		if at, what := utf8Problem(p.WillTopic); at >= 0 { // [MQTT-3.1.3-11] (5.0) [MQTT-3.1.3-10] (3.1.1)
			return utf8Err(CONNECT, "will topic", at, what)
		}
		if _, msg := topicNameProblem(p.WillTopic); msg != "" {
			return newErr(CONNECT, TopicNameInvalid, "will topic: "+msg)
		}
		if p.WillPayload, ok = r.bin(); !ok {
			return truncated(CONNECT, "will payload")
		}
	}
	if p.UsernameFlag { // [MQTT-3.1.2-19] (3.1.1) [MQTT-3.1.2-17] (5.0)
		if p.Username, ok = r.bin(); !ok {
			return truncated(CONNECT, "user name")
		}
		if at, what := utf8Problem(p.Username); at >= 0 { // [MQTT-3.1.3-11] (3.1.1) [MQTT-3.1.3-12] (5.0)
			return utf8Err(CONNECT, "user name", at, what)
		}
	}
	if p.PasswordFlag { // [MQTT-3.1.2-21] (3.1.1) [MQTT-3.1.2-19] (5.0)
		if p.Password, ok = r.bin(); !ok {
			return truncated(CONNECT, "password")
		}
	}
	return nil
}

// AppendConnect appends a CONNECT packet for protocol level p.Version. The
// flags are taken from the Flag fields (WillFlag, UsernameFlag,
// PasswordFlag); p.ProtocolName is written if set, else "MQIsdp" for
// level 3 and "MQTT" otherwise. AppendConnect does not validate p.
func AppendConnect(dst []byte, p *Connect) []byte {
	name := p.ProtocolName
	if len(name) == 0 {
		name = protoNameFor(p.Version)
	}
	v5 := p.Version == Version5
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(p.ClientID)
	ps, wps := 0, 0
	if v5 {
		ps = p.Props.size()
		n += varintLen(ps) + ps
	}
	flags := p.WillQoS << connWillQoSShift
	if p.CleanStart {
		flags |= connCleanStart
	}
	if p.WillFlag {
		flags |= connWill
		if v5 {
			wps = p.WillProps.size()
			n += varintLen(wps) + wps
		}
		n += 4 + len(p.WillTopic) + len(p.WillPayload)
	}
	if p.WillRetain {
		flags |= connWillRetain
	}
	if p.UsernameFlag {
		flags |= connUsername
		n += 2 + len(p.Username)
	}
	if p.PasswordFlag {
		flags |= connPassword
		n += 2 + len(p.Password)
	}
	dst = appendHeader(dst, CONNECT<<4, n)
	dst = appendBin(dst, name)
	dst = append(dst, p.Version, flags)
	dst = appendU16(dst, p.KeepAlive)
	if v5 {
		dst = p.Props.appendProps(dst, ps)
	}
	dst = appendBin(dst, p.ClientID)
	if p.WillFlag {
		if v5 {
			dst = p.WillProps.appendProps(dst, wps)
		}
		dst = appendBin(dst, p.WillTopic)
		dst = appendBin(dst, p.WillPayload)
	}
	if p.UsernameFlag {
		dst = appendBin(dst, p.Username)
	}
	if p.PasswordFlag {
		dst = appendBin(dst, p.Password)
	}
	return dst
}

var (
	nameMQTT   = []byte("MQTT")
	nameMQIsdp = []byte("MQIsdp")
)

func protoNameFor(version byte) []byte {
	if version == Version31 {
		return nameMQIsdp
	}
	return nameMQTT
}

// Connack is a CONNACK packet. For protocol levels 3 and 4 Reason holds the
// v3 return code byte (0..5) when decoded, and AppendConnack converts it
// with V3ConnackCode, so a server may put a v5 reason in it for any client.
type Connack struct {
	SessionPresent bool
	Reason         ReasonCode
	Props          Properties // v5 only
}

// Reset zeroes p, keeping the capacity of its property slices.
func (p *Connack) Reset() {
	p.Props.Reset()
	*p = Connack{Props: p.Props}
}

// Decode decodes a CONNACK body of protocol level version. It resets p
// first; on success the properties borrow from body.
func (p *Connack) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, CONNACK, body); err != nil {
		return err
	}
	if version != Version5 && len(body) != 2 {
		return malformed(CONNACK, "remaining length is "+itoa(len(body))+", must be 2")
	}
	if len(body) < 2 {
		return truncated(CONNACK, "connect acknowledge flags and reason code")
	}
	if body[0]&0xFE != 0 { // [MQTT-3.2.2-1] (5.0); 3.1.1 3.2.2.1 says the same without a tag
		return malformed(CONNACK, "connect acknowledge flags: reserved bits 7-1 are "+flagBits(body[0]>>1))
	}
	p.SessionPresent = body[0]&1 != 0
	p.Reason = ReasonCode(body[1])
	if version != Version5 {
		if p.Reason > 5 { // 6-255 are reserved (3.1.1 table 3.1)
			return malformed(CONNACK, "return code "+itoa(int(p.Reason))+" is reserved")
		}
		if p.SessionPresent && p.Reason != 0 { // [MQTT-3.2.2-4] (3.1.1)
			return protoErr(CONNACK, "session present is set with return code "+itoa(int(p.Reason)))
		}
		return nil
	}
	if !connackReasons.has(p.Reason) { // [MQTT-3.2.2-8] (5.0)
		return malformed(CONNACK, "reason code "+hex2(body[1])+" is not a CONNACK reason code")
	}
	if p.SessionPresent && p.Reason != Success { // [MQTT-3.2.2-6] (5.0)
		return protoErr(CONNACK, "session present is set with reason code "+hex2(body[1]))
	}
	n, err := p.Props.decode(body[2:], CONNACK, false)
	if err != nil {
		return err
	}
	if 2+n != len(body) {
		return malformed(CONNACK, itoa(len(body)-2-n)+" bytes after the properties")
	}
	if p.Props.Has(PropAuthData) && !p.Props.Has(PropAuthMethod) {
		return protoErr(CONNACK, "properties: authentication data without an authentication method")
	}
	return nil
}

// AppendConnack appends a CONNACK for protocol level version. For levels 3
// and 4 the reason is converted with V3ConnackCode and no properties are
// written.
func AppendConnack(dst []byte, p *Connack, version byte) []byte {
	var flags byte
	if p.SessionPresent {
		flags = 1
	}
	if version != Version5 {
		return append(dst, CONNACK<<4, 2, flags, V3ConnackCode(p.Reason))
	}
	ps := p.Props.size()
	dst = appendHeader(dst, CONNACK<<4, 2+varintLen(ps)+ps)
	dst = append(dst, flags, byte(p.Reason))
	return p.Props.appendProps(dst, ps)
}
