package mqttcodec

// Publish is a PUBLISH packet. After Decode Topic, Payload and the
// properties borrow from the decoded body.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    []byte // may be empty in v5 when Props carries a Topic Alias
	PacketID uint16 // only for QoS 1 and 2
	Props    Properties
	Payload  []byte
}

// Reset zeroes p, keeping the capacity of its property slices.
func (p *Publish) Reset() {
	p.Props.Reset()
	// Field by field: copying the whole struct would move Props twice.
	p.Dup, p.QoS, p.Retain, p.PacketID = false, 0, false, 0
	p.Topic, p.Payload = nil, nil
}

// Decode decodes a PUBLISH body of protocol level version; DUP, QoS and
// RETAIN come from fh.Flags. It resets p first and does not allocate once
// p.Props.User and p.Props.SubscriptionIDs have grown to the number of
// values the packet carries.
//
// Checks: DUP is 0 for QoS 0 [MQTT-3.3.1-2]; the topic name is well-formed
// UTF-8 [MQTT-3.3.2-1] without wildcards [MQTT-3.3.2-2] and, in v5, empty
// only with a Topic Alias [MQTT 5.0 3.3.2.1]; QoS 1 and 2 carry a non-zero
// packet identifier [MQTT-2.2.1-3] (v5) [MQTT-2.3.1-1] (3.1.1); the
// properties are valid for PUBLISH.
//
// The Payload Format Indicator is not checked against the payload (that
// costs a pass over it, and is optional [MQTT-3.3.2-4 receiver MAY]): call
// CheckPayloadFormat when wanted.
func (p *Publish) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if fh.Type != PUBLISH || fh.Remaining != len(body) || fh.Flags > 0x0F {
		return checkType(fh, PUBLISH, body)
	}
	p.Dup = fh.Flags&flagDup != 0
	p.QoS = (fh.Flags & flagQoS) >> 1
	p.Retain = fh.Flags&flagRetain != 0
	if p.QoS == 3 { // [MQTT-3.3.1-4]
		return malformed(PUBLISH, "qos 3 in the fixed header")
	}
	if p.Dup && p.QoS == 0 { // [MQTT-3.3.1-2]
		return protoErr(PUBLISH, "dup flag set on a qos 0 message")
	}
	r := reader{b: body}
	var ok bool
	if p.Topic, ok = r.bin(); !ok {
		return truncated(PUBLISH, "topic name")
	}
	if p.QoS > 0 {
		if p.PacketID, ok = r.u16(); !ok {
			return truncated(PUBLISH, "packet identifier")
		}
		if p.PacketID == 0 { // [MQTT-2.2.1-3] (5.0) [MQTT-2.3.1-1] (3.1.1)
			return protoErr(PUBLISH, "packet identifier is 0 on a qos "+itoa(int(p.QoS))+" message")
		}
	}
	if version == Version5 {
		n, err := p.Props.decode(body[r.i:], PUBLISH, false)
		if err != nil {
			return err
		}
		r.i += n
	}
	p.Payload = r.rest()
	return checkPublishTopic(p.Topic, version == Version5, p.Props.Has(PropTopicAlias))
}

// checkPublishTopic validates a PUBLISH topic name, in one pass for the
// common all-ASCII case.
func checkPublishTopic(t []byte, v5, hasAlias bool) error {
	if len(t) == 0 {
		if !v5 { // [MQTT-4.7.3-1]
			return newErr(PUBLISH, TopicNameInvalid, "topic name: is empty")
		}
		if !hasAlias { // [MQTT 5.0 3.3.2.3.4]
			return protoErr(PUBLISH, "topic name: is empty and there is no topic alias")
		}
		return nil // v5: an empty topic name uses the alias
	}
	for i, c := range t {
		if topicSpecial[c] {
			if c == '+' || c == '#' { // [MQTT-3.3.2-2]
				return newErr(PUBLISH, TopicNameInvalid, "topic name: contains the wildcard '"+string(rune(c))+"' at byte "+itoa(i))
			}
			if at, what := utf8Problem(t[i:]); at >= 0 { // [MQTT-3.3.2-1] [MQTT-1.5.4-1] [MQTT-1.5.4-2]
				return utf8Err(PUBLISH, "topic name", i+at, what)
			}
			for j := i; j < len(t); j++ {
				if t[j] == '+' || t[j] == '#' {
					return newErr(PUBLISH, TopicNameInvalid, "topic name: contains the wildcard '"+string(rune(t[j]))+"' at byte "+itoa(j))
				}
			}
			return nil
		}
	}
	return nil
}

// topicSpecial marks the bytes the one-pass topic check must look at:
// wildcards, NUL and every non-ASCII byte.
var topicSpecial = func() (t [256]bool) {
	t['+'], t['#'], t[0] = true, true, true
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}()

// CheckPayloadFormat returns a PayloadFormatInvalid (0x99) *Error if p says
// its payload is UTF-8 (Payload Format Indicator 1) and it is not well-formed
// UTF-8 [MQTT-3.3.2-4]. U+0000 is allowed in a payload.
func CheckPayloadFormat(p *Publish) error {
	if p.Props.PayloadFormat != 1 {
		return nil
	}
	if at := invalidUTF8At(p.Payload); at >= 0 {
		return newErr(PUBLISH, PayloadFormatInvalid, "payload is marked utf-8 but is not well-formed utf-8 at byte "+itoa(at))
	}
	return nil
}

// CheckClientPublish applies the rule that holds only for a PUBLISH sent by
// a client, which Decode cannot know: it carries no Subscription Identifier
// [MQTT-3.3.4-6] (protocol error). A server calls it on every v5 PUBLISH it
// receives; it does not allocate unless it fails.
func CheckClientPublish(p *Publish) error {
	if len(p.Props.SubscriptionIDs) > 0 { // [MQTT-3.3.4-6]
		return protoErr(PUBLISH, "properties: a client sent a subscription identifier")
	}
	return nil
}

// publishRemaining returns the Remaining Length of p and the size of its
// properties.
func publishRemaining(p *Publish, version byte) (rem, ps int) {
	rem = 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		rem += 2
	}
	if version == Version5 {
		ps = p.Props.size()
		rem += varintLen(ps) + ps
	}
	return rem, ps
}

// PublishSize returns the size AppendPublish would write for p, fixed
// header included, to compare with a client's Maximum Packet Size without
// encoding [MQTT-3.1.2-24].
func PublishSize(p *Publish, version byte) int {
	rem, _ := publishRemaining(p, version)
	return 1 + varintLen(rem) + rem
}

// AppendPublish appends a PUBLISH for protocol level version. The packet
// identifier is written only for QoS 1 and 2, properties only for v5.
// AppendPublish does not validate p.
func AppendPublish(dst []byte, p *Publish, version byte) []byte {
	first := PUBLISH<<4 | p.QoS<<1&flagQoS
	if p.Dup {
		first |= flagDup
	}
	if p.Retain {
		first |= flagRetain
	}
	rem, ps := publishRemaining(p, version)
	dst = appendHeader(dst, first, rem)
	dst = appendBin(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if version == Version5 {
		dst = p.Props.appendProps(dst, ps)
	}
	return append(dst, p.Payload...)
}
