package mqttcodec

import "math/bits"

// PropID is an MQTT 5 property identifier (MQTT 5.0 section 2.2.2.2).
type PropID byte

// Property identifiers.
const (
	PropPayloadFormat        PropID = 0x01 // byte: PUBLISH, will
	PropMessageExpiry        PropID = 0x02 // four byte integer: PUBLISH, will
	PropContentType          PropID = 0x03 // utf-8 string: PUBLISH, will
	PropResponseTopic        PropID = 0x08 // utf-8 string: PUBLISH, will
	PropCorrelationData      PropID = 0x09 // binary data: PUBLISH, will
	PropSubscriptionID       PropID = 0x0B // variable byte integer: PUBLISH (repeatable), SUBSCRIBE
	PropSessionExpiry        PropID = 0x11 // four byte integer: CONNECT, CONNACK, DISCONNECT
	PropAssignedClientID     PropID = 0x12 // utf-8 string: CONNACK
	PropServerKeepAlive      PropID = 0x13 // two byte integer: CONNACK
	PropAuthMethod           PropID = 0x15 // utf-8 string: CONNECT, CONNACK, AUTH
	PropAuthData             PropID = 0x16 // binary data: CONNECT, CONNACK, AUTH
	PropRequestProblemInfo   PropID = 0x17 // byte: CONNECT
	PropWillDelay            PropID = 0x18 // four byte integer: will
	PropRequestResponseInfo  PropID = 0x19 // byte: CONNECT
	PropResponseInfo         PropID = 0x1A // utf-8 string: CONNACK
	PropServerReference      PropID = 0x1C // utf-8 string: CONNACK, DISCONNECT
	PropReasonString         PropID = 0x1F // utf-8 string: CONNACK, acks, SUBACK, UNSUBACK, DISCONNECT, AUTH
	PropReceiveMaximum       PropID = 0x21 // two byte integer: CONNECT, CONNACK
	PropTopicAliasMaximum    PropID = 0x22 // two byte integer: CONNECT, CONNACK
	PropTopicAlias           PropID = 0x23 // two byte integer: PUBLISH
	PropMaximumQoS           PropID = 0x24 // byte: CONNACK
	PropRetainAvailable      PropID = 0x25 // byte: CONNACK
	PropUserProperty         PropID = 0x26 // utf-8 string pair: every packet with properties (repeatable)
	PropMaximumPacketSize    PropID = 0x27 // four byte integer: CONNECT, CONNACK
	PropWildcardSubAvailable PropID = 0x28 // byte: CONNACK
	PropSubIDAvailable       PropID = 0x29 // byte: CONNACK
	PropSharedSubAvailable   PropID = 0x2A // byte: CONNACK
)

// UserProperty is one User Property: a UTF-8 string pair. Both slices
// borrow from the decoded buffer.
type UserProperty struct {
	Key, Value []byte
}

// Properties holds the MQTT 5 properties of a packet (or of a will) in a
// flat struct; which single-valued properties are present is tracked in a
// bitmask (Has / Set). Byte-slice fields BORROW from the decoded buffer:
// they are valid only as long as it is. A zero Properties has no property.
//
// The two repeatable properties are present when their slice is non-empty:
// User (in wire order, repeats kept) and SubscriptionIDs (PUBLISH may carry
// several, SUBSCRIBE at most one).
type Properties struct {
	PayloadFormat        byte
	MessageExpiry        uint32
	ContentType          []byte
	ResponseTopic        []byte
	CorrelationData      []byte
	SubscriptionIDs      []uint32
	SessionExpiry        uint32
	AssignedClientID     []byte
	ServerKeepAlive      uint16
	AuthMethod           []byte
	AuthData             []byte
	RequestProblemInfo   byte
	WillDelay            uint32
	RequestResponseInfo  byte
	ResponseInfo         []byte
	ServerReference      []byte
	ReasonString         []byte
	ReceiveMaximum       uint16
	TopicAliasMaximum    uint16
	TopicAlias           uint16
	MaximumQoS           byte
	RetainAvailable      byte
	MaximumPacketSize    uint32
	WildcardSubAvailable byte
	SubIDAvailable       byte
	SharedSubAvailable   byte
	User                 []UserProperty

	present uint64 // bit id set: single-valued property id is present
}

// Has reports whether property id is present. For the repeatable
// properties (PropUserProperty, PropSubscriptionID) that means a non-empty
// slice.
func (p *Properties) Has(id PropID) bool {
	switch id {
	case PropUserProperty:
		return len(p.User) > 0
	case PropSubscriptionID:
		return len(p.SubscriptionIDs) > 0
	}
	return id < 64 && p.present&(1<<id) != 0
}

// Set marks a single-valued property present, so encoders write it. Setting
// the repeatable ones is not needed (their slice says it); Set ignores ids
// that are not properties.
func (p *Properties) Set(id PropID) {
	if id < 64 && propTable[id].kind != 0 && id != PropUserProperty && id != PropSubscriptionID {
		p.present |= 1 << id
	}
}

// Clear marks a property absent (for the repeatable ones, empties the slice).
func (p *Properties) Clear(id PropID) {
	switch id {
	case PropUserProperty:
		clear(p.User)
		p.User = p.User[:0]
	case PropSubscriptionID:
		p.SubscriptionIDs = p.SubscriptionIDs[:0]
	default:
		if id < 64 {
			p.present &^= 1 << id
		}
	}
}

// Empty reports whether no property is present.
func (p *Properties) Empty() bool {
	return p.present == 0 && len(p.User) == 0 && len(p.SubscriptionIDs) == 0
}

// Reset zeroes every property but keeps the capacity of User and
// SubscriptionIDs, so reusing a Properties does not allocate. The slots of
// User are cleared so no borrowed buffer stays reachable.
func (p *Properties) Reset() {
	if p.present == 0 && len(p.User) == 0 && len(p.SubscriptionIDs) == 0 {
		return
	}
	clear(p.User)
	u, s := p.User[:0], p.SubscriptionIDs[:0]
	*p = Properties{User: u, SubscriptionIDs: s}
}

// Property value kinds.
const (
	kByte = iota + 1
	kU16
	kU32
	kVarint
	kString
	kBinary
	kPair
)

// Where a property may appear: one bit per packet type (bit = type), plus
// ctxWill for the will properties of CONNECT.
const ctxWill = 1 << 0 // packet type 0 is reserved, its bit is free

const (
	ctxAcks = 1<<PUBACK | 1<<PUBREC | 1<<PUBREL | 1<<PUBCOMP
	ctxAll  = 1<<CONNECT | 1<<CONNACK | 1<<PUBLISH | ctxWill | ctxAcks | 1<<SUBSCRIBE | 1<<SUBACK |
		1<<UNSUBSCRIBE | 1<<UNSUBACK | 1<<DISCONNECT | 1<<AUTH
)

type propInfo struct {
	name string
	kind uint8
	ctx  uint16
}

var propTable = [64]propInfo{
	PropPayloadFormat:        {"payload format indicator", kByte, 1<<PUBLISH | ctxWill},
	PropMessageExpiry:        {"message expiry interval", kU32, 1<<PUBLISH | ctxWill},
	PropContentType:          {"content type", kString, 1<<PUBLISH | ctxWill},
	PropResponseTopic:        {"response topic", kString, 1<<PUBLISH | ctxWill},
	PropCorrelationData:      {"correlation data", kBinary, 1<<PUBLISH | ctxWill},
	PropSubscriptionID:       {"subscription identifier", kVarint, 1<<PUBLISH | 1<<SUBSCRIBE},
	PropSessionExpiry:        {"session expiry interval", kU32, 1<<CONNECT | 1<<CONNACK | 1<<DISCONNECT},
	PropAssignedClientID:     {"assigned client identifier", kString, 1 << CONNACK},
	PropServerKeepAlive:      {"server keep alive", kU16, 1 << CONNACK},
	PropAuthMethod:           {"authentication method", kString, 1<<CONNECT | 1<<CONNACK | 1<<AUTH},
	PropAuthData:             {"authentication data", kBinary, 1<<CONNECT | 1<<CONNACK | 1<<AUTH},
	PropRequestProblemInfo:   {"request problem information", kByte, 1 << CONNECT},
	PropWillDelay:            {"will delay interval", kU32, ctxWill},
	PropRequestResponseInfo:  {"request response information", kByte, 1 << CONNECT},
	PropResponseInfo:         {"response information", kString, 1 << CONNACK},
	PropServerReference:      {"server reference", kString, 1<<CONNACK | 1<<DISCONNECT},
	PropReasonString:         {"reason string", kString, 1<<CONNACK | ctxAcks | 1<<SUBACK | 1<<UNSUBACK | 1<<DISCONNECT | 1<<AUTH},
	PropReceiveMaximum:       {"receive maximum", kU16, 1<<CONNECT | 1<<CONNACK},
	PropTopicAliasMaximum:    {"topic alias maximum", kU16, 1<<CONNECT | 1<<CONNACK},
	PropTopicAlias:           {"topic alias", kU16, 1 << PUBLISH},
	PropMaximumQoS:           {"maximum qos", kByte, 1 << CONNACK},
	PropRetainAvailable:      {"retain available", kByte, 1 << CONNACK},
	PropUserProperty:         {"user property", kPair, ctxAll},
	PropMaximumPacketSize:    {"maximum packet size", kU32, 1<<CONNECT | 1<<CONNACK},
	PropWildcardSubAvailable: {"wildcard subscription available", kByte, 1 << CONNACK},
	PropSubIDAvailable:       {"subscription identifier available", kByte, 1 << CONNACK},
	PropSharedSubAvailable:   {"shared subscription available", kByte, 1 << CONNACK},
}

// String returns the property's name as in the specification, lower case.
func (id PropID) String() string {
	if id < 64 && propTable[id].name != "" {
		return propTable[id].name
	}
	return "property " + hex2(byte(id))
}

// AllowedIn reports whether property id may appear in a packet of type pkt
// (will=true: in the will properties of CONNECT).
func (id PropID) AllowedIn(pkt byte, will bool) bool {
	if id >= 64 || pkt > 15 {
		return false
	}
	return propTable[id].ctx&ctxBit(pkt, will) != 0
}

func ctxBit(pkt byte, will bool) uint16 {
	if will {
		return ctxWill
	}
	return 1 << pkt
}

// decode reads a Property Length and the properties that follow from the
// start of b, validating them for packet pkt (or the will, if will): which
// property may appear where [MQTT 5.0 2.2.2.2: any other is a malformed
// packet], that single-valued properties appear once (protocol error),
// value ranges (protocol error) and UTF-8 strings [MQTT-1.5.4-1]. It
// returns the bytes consumed. p must have been Reset.
func (p *Properties) decode(b []byte, pkt byte, will bool) (int, error) {
	field := "properties"
	if will {
		field = "will properties"
	}
	plen, n, ok := decodeVarintBody(b)
	if !ok {
		return 0, malformed(pkt, field+": property length is not a valid variable byte integer")
	}
	if plen > len(b)-n {
		return 0, malformed(pkt, field+": property length "+itoa(plen)+" runs past the end of the packet")
	}
	if plen == 0 {
		return n, nil
	}
	r := reader{b: b[n : n+plen]}
	ctx := ctxBit(pkt, will)
	for r.left() > 0 {
		at := r.i
		c, _ := r.u8()
		id := PropID(c)
		// A property identifier is a Variable Byte Integer, but every
		// defined id is below 0x80; a multi-byte one is no defined id.
		if id >= 64 || propTable[id].kind == 0 {
			return 0, malformed(pkt, field+": unknown property identifier "+hex2(c)+" at byte "+itoa(at))
		}
		info := &propTable[id]
		if info.ctx&ctx == 0 {
			where := TypeName(pkt)
			if will {
				where = "the will properties"
			}
			return 0, malformed(pkt, field+": "+info.name+" ("+hex2(c)+") is not allowed in "+where)
		}
		if id != PropUserProperty && id != PropSubscriptionID {
			if p.present&(1<<id) != 0 {
				return 0, protoErr(pkt, field+": "+info.name+" included more than once")
			}
			p.present |= 1 << id
		}
		if err := p.decodeOne(&r, id, info, pkt, field); err != nil {
			return 0, err
		}
	}
	return n + plen, nil
}

// decodeOne reads the value of property id and checks its range: every
// byte property is 0 or 1, Receive Maximum, Maximum Packet Size and
// Subscription Identifier are not 0 (protocol errors), Topic Alias is not 0
// (Topic Alias invalid [MQTT-3.3.2-8]), strings are UTF-8 [MQTT-1.5.4-1]
// [MQTT-1.5.7-1] and a Response Topic is a topic name [MQTT-3.3.2-14].
func (p *Properties) decodeOne(r *reader, id PropID, info *propInfo, pkt byte, field string) error {
	switch info.kind {
	case kByte:
		v, ok := r.u8()
		if !ok {
			return errPropShort(pkt, field, info)
		}
		if v > 1 {
			return protoErr(pkt, field+": "+info.name+" is "+itoa(int(v))+", must be 0 or 1")
		}
		*p.bytePtr(id) = v
	case kU16:
		v, ok := r.u16()
		if !ok {
			return errPropShort(pkt, field, info)
		}
		if v == 0 && id == PropTopicAlias { // [MQTT-3.3.2-8]
			return newErr(pkt, TopicAliasInvalid, field+": topic alias is 0")
		}
		if v == 0 && id == PropReceiveMaximum {
			return protoErr(pkt, field+": receive maximum is 0")
		}
		*p.u16Ptr(id) = v
	case kU32:
		v, ok := r.u32()
		if !ok {
			return errPropShort(pkt, field, info)
		}
		if v == 0 && id == PropMaximumPacketSize {
			return protoErr(pkt, field+": maximum packet size is 0")
		}
		*p.u32Ptr(id) = v
	case kVarint: // the subscription identifier
		v, ok := 0, false
		if r.left() > 0 {
			v, ok = r.varint()
		}
		if !ok {
			return malformed(pkt, field+": subscription identifier is not a valid variable byte integer")
		}
		if v == 0 { // [MQTT 5.0 3.8.2.1.2]
			return protoErr(pkt, field+": subscription identifier is 0")
		}
		if pkt == SUBSCRIBE && len(p.SubscriptionIDs) > 0 {
			return protoErr(pkt, field+": subscription identifier included more than once")
		}
		p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
	case kString, kBinary:
		s, ok := r.bin()
		if !ok {
			return errPropShort(pkt, field, info)
		}
		if info.kind == kString {
			if at, what := utf8Problem(s); at >= 0 { // [MQTT-1.5.4-1] [MQTT-3.3.2-13] [MQTT-3.3.2-19]
				return utf8Err(pkt, field+": "+info.name, at, what)
			}
		}
		if id == PropResponseTopic {
			if _, msg := topicNameProblem(s); msg != "" { // [MQTT-3.3.2-14] no wildcards
				return protoErr(pkt, field+": response topic: "+msg)
			}
		}
		*p.bytesPtr(id) = s
	case kPair:
		k, ok := r.bin()
		v, ok2 := r.bin()
		if !ok || !ok2 {
			return errPropShort(pkt, field, info)
		}
		if at, what := utf8Problem(k); at >= 0 { // [MQTT-1.5.7-1]
			return utf8Err(pkt, field+": user property", at, what)
		}
		if at, what := utf8Problem(v); at >= 0 {
			return utf8Err(pkt, field+": user property value", at, what)
		}
		p.User = append(p.User, UserProperty{Key: k, Value: v})
	}
	return nil
}

func errPropShort(pkt byte, field string, info *propInfo) error {
	return malformed(pkt, field+": "+info.name+": value runs past the end of the properties")
}

// The fields behind each property id, by value kind. They are only called
// with ids of that kind (propTable); anything else is a bug.

func (p *Properties) bytePtr(id PropID) *byte {
	switch id {
	case PropPayloadFormat:
		return &p.PayloadFormat
	case PropRequestProblemInfo:
		return &p.RequestProblemInfo
	case PropRequestResponseInfo:
		return &p.RequestResponseInfo
	case PropMaximumQoS:
		return &p.MaximumQoS
	case PropRetainAvailable:
		return &p.RetainAvailable
	case PropWildcardSubAvailable:
		return &p.WildcardSubAvailable
	case PropSubIDAvailable:
		return &p.SubIDAvailable
	case PropSharedSubAvailable:
		return &p.SharedSubAvailable
	}
	panic("BUG: mqttcodec: " + id.String() + " is not a byte property")
}

func (p *Properties) u16Ptr(id PropID) *uint16 {
	switch id {
	case PropServerKeepAlive:
		return &p.ServerKeepAlive
	case PropReceiveMaximum:
		return &p.ReceiveMaximum
	case PropTopicAliasMaximum:
		return &p.TopicAliasMaximum
	case PropTopicAlias:
		return &p.TopicAlias
	}
	panic("BUG: mqttcodec: " + id.String() + " is not a two byte integer property")
}

func (p *Properties) u32Ptr(id PropID) *uint32 {
	switch id {
	case PropMessageExpiry:
		return &p.MessageExpiry
	case PropSessionExpiry:
		return &p.SessionExpiry
	case PropWillDelay:
		return &p.WillDelay
	case PropMaximumPacketSize:
		return &p.MaximumPacketSize
	}
	panic("BUG: mqttcodec: " + id.String() + " is not a four byte integer property")
}

func (p *Properties) bytesPtr(id PropID) *[]byte {
	switch id {
	case PropContentType:
		return &p.ContentType
	case PropResponseTopic:
		return &p.ResponseTopic
	case PropCorrelationData:
		return &p.CorrelationData
	case PropAssignedClientID:
		return &p.AssignedClientID
	case PropAuthMethod:
		return &p.AuthMethod
	case PropAuthData:
		return &p.AuthData
	case PropResponseInfo:
		return &p.ResponseInfo
	case PropServerReference:
		return &p.ServerReference
	case PropReasonString:
		return &p.ReasonString
	}
	panic("BUG: mqttcodec: " + id.String() + " is not a string or binary property")
}

// size returns the encoded size of the properties, without the Property
// Length in front.
func (p *Properties) size() int {
	if p.present == 0 && len(p.User) == 0 && len(p.SubscriptionIDs) == 0 {
		return 0
	}
	n := 0
	for _, v := range p.SubscriptionIDs {
		n += 1 + varintLen(int(v))
	}
	for i := range p.User {
		n += 5 + len(p.User[i].Key) + len(p.User[i].Value)
	}
	for m := p.present; m != 0; m &= m - 1 {
		id := PropID(bits.TrailingZeros64(m))
		switch propTable[id].kind {
		case kByte:
			n += 2
		case kU16:
			n += 3
		case kU32:
			n += 5
		case kString, kBinary:
			n += 3 + len(*p.bytesPtr(id))
		}
	}
	return n
}

// appendProps appends the Property Length (size, as returned by p.size())
// and the properties, in identifier order, user properties in their order.
func (p *Properties) appendProps(dst []byte, size int) []byte {
	dst = AppendVarint(dst, size)
	if size == 0 {
		return dst
	}
	for m := p.present; m != 0; m &= m - 1 {
		id := PropID(bits.TrailingZeros64(m))
		dst = append(dst, byte(id))
		switch propTable[id].kind {
		case kByte:
			dst = append(dst, *p.bytePtr(id))
		case kU16:
			dst = appendU16(dst, *p.u16Ptr(id))
		case kU32:
			dst = appendU32(dst, *p.u32Ptr(id))
		default:
			dst = appendBin(dst, *p.bytesPtr(id))
		}
	}
	for _, v := range p.SubscriptionIDs {
		dst = AppendVarint(append(dst, byte(PropSubscriptionID)), int(v))
	}
	for i := range p.User {
		dst = append(dst, byte(PropUserProperty))
		dst = appendBin(dst, p.User[i].Key)
		dst = appendBin(dst, p.User[i].Value)
	}
	return dst
}
