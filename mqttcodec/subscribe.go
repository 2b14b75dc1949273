package mqttcodec

// Subscription is one topic filter of a SUBSCRIBE with its options. The
// v5-only options (NoLocal, RetainAsPublished, RetainHandling) are zero
// for v3 packets.
type Subscription struct {
	Filter            []byte // as sent, "$share/{group}/" prefix included
	QoS               byte   // maximum QoS, 0..2
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0: send retained on subscribe, 1: only if new, 2: never
}

// Subscribe is a SUBSCRIBE packet. After Decode the filters and properties
// borrow from the decoded body.
type Subscribe struct {
	PacketID uint16
	Props    Properties // v5 only
	Subs     []Subscription
}

// Reset zeroes p, keeping the capacity of its slices.
func (p *Subscribe) Reset() {
	p.Props.Reset()
	clear(p.Subs)
	*p = Subscribe{Props: p.Props, Subs: p.Subs[:0]}
}

// Subscription option bits.
const (
	subQoS               = 0x03
	subNoLocal           = 0x04
	subRetainAsPublished = 0x08
	subRetainHandling    = 0x30
	subReservedV5        = 0xC0
	subReservedV3        = 0xFC
)

// Decode decodes a SUBSCRIBE body of protocol level version. It resets p
// first. Errors name the filter by its index in p.Subs (from 0).
//
// Checks: non-zero packet identifier [MQTT-2.2.1-3]; at least one filter
// [MQTT-3.8.3-3] (3.1.1) [MQTT-3.8.3-2] (5.0); filters are UTF-8
// [MQTT-3.8.3-1] and valid topic filters (0x8F), a "$share/" filter a valid
// shared subscription [MQTT-4.8.2-1] [MQTT-4.8.2-2]; reserved option bits
// are 0 and QoS is not 3 [MQTT-3-8.3-4] (3.1.1) [MQTT-3.8.3-5] (5.0); v5:
// Retain Handling is not 3 and No Local is not set on a shared subscription
// [MQTT-3.8.3-4] (protocol errors); properties valid for SUBSCRIBE (at most
// one subscription identifier, not 0).
func (p *Subscribe) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, SUBSCRIBE, body); err != nil {
		return err
	}
	r := reader{b: body}
	var err error
	if p.PacketID, err = readPacketID(&r, SUBSCRIBE); err != nil {
		return err
	}
	v5 := version == Version5
	if v5 {
		n, err := p.Props.decode(body[r.i:], SUBSCRIBE, false)
		if err != nil {
			return err
		}
		r.i += n
	}
	for r.left() > 0 {
		i := len(p.Subs)
		f, ok := r.bin()
		if !ok {
			return truncated(SUBSCRIBE, "topic filter "+itoa(i))
		}
		opts, ok := r.u8()
		if !ok {
			return truncated(SUBSCRIBE, "subscription options of topic filter "+itoa(i))
		}
		if err := checkFilter(SUBSCRIBE, f, i); err != nil {
			return err
		}
		s := Subscription{Filter: f, QoS: opts & subQoS}
		if v5 {
			if opts&subReservedV5 != 0 { // [MQTT-3.8.3-5]
				return malformed(SUBSCRIBE, "subscription options of topic filter "+itoa(i)+": reserved bits 7-6 are set")
			}
			if s.QoS == 3 {
				return protoErr(SUBSCRIBE, "subscription options of topic filter "+itoa(i)+": maximum qos is 3")
			}
			s.NoLocal = opts&subNoLocal != 0
			s.RetainAsPublished = opts&subRetainAsPublished != 0
			s.RetainHandling = (opts & subRetainHandling) >> 4
			if s.RetainHandling == 3 {
				return protoErr(SUBSCRIBE, "subscription options of topic filter "+itoa(i)+": retain handling is 3")
			}
			if s.NoLocal && IsShared(f) { // [MQTT-3.8.3-4]
				return protoErr(SUBSCRIBE, "subscription options of topic filter "+itoa(i)+": no local is set on a shared subscription")
			}
		} else {
			if opts&subReservedV3 != 0 { // [MQTT-3-8.3-4]
				return malformed(SUBSCRIBE, "requested qos byte of topic filter "+itoa(i)+": reserved bits 7-2 are set")
			}
			if s.QoS == 3 { // [MQTT-3-8.3-4]
				return malformed(SUBSCRIBE, "requested qos of topic filter "+itoa(i)+" is 3")
			}
		}
		p.Subs = append(p.Subs, s)
	}
	if len(p.Subs) == 0 { // [MQTT-3.8.3-3] (3.1.1) [MQTT-3.8.3-2] (5.0)
		return protoErr(SUBSCRIBE, "no topic filter")
	}
	return nil
}

// readPacketID reads a packet identifier that must not be 0 [MQTT-2.2.1-3]
// (5.0) [MQTT-2.3.1-1] (3.1.1).
func readPacketID(r *reader, pkt byte) (uint16, error) {
	id, ok := r.u16()
	if !ok {
		return 0, truncated(pkt, "packet identifier")
	}
	if id == 0 {
		return 0, protoErr(pkt, "packet identifier is 0")
	}
	return id, nil
}

// checkFilter validates topic filter i of a SUBSCRIBE or UNSUBSCRIBE: UTF-8
// first (a malformed packet, [MQTT-1.5.4-1]), then the filter rules (0x8F),
// and for a "$share/" filter the shared subscription syntax.
func checkFilter(pkt byte, f []byte, i int) error {
	if at, what := utf8Problem(f); at >= 0 { // [MQTT-3.8.3-1] [MQTT-3.10.3-1]
		return utf8Err(pkt, "topic filter "+itoa(i), at, what)
	}
	if _, msg := topicFilterProblem(f); msg != "" {
		return newErr(pkt, TopicFilterInvalid, "topic filter "+itoa(i)+": "+msg)
	}
	if IsShared(f) {
		if _, _, _, err := ParseShared(f); err != nil {
			return wrapErr(pkt, "topic filter "+itoa(i), err)
		}
	}
	return nil
}

// AppendSubscribe appends a SUBSCRIBE for protocol level version (fixed
// flags 0b0010 [MQTT-3.8.1-1]). v3 packets carry only the QoS of each
// subscription.
func AppendSubscribe(dst []byte, p *Subscribe, version byte) []byte {
	v5 := version == Version5
	rem, ps := 2, 0
	if v5 {
		ps = p.Props.size()
		rem += varintLen(ps) + ps
	}
	for i := range p.Subs {
		rem += 3 + len(p.Subs[i].Filter)
	}
	dst = appendHeader(dst, SUBSCRIBE<<4|0x02, rem)
	dst = appendU16(dst, p.PacketID)
	if v5 {
		dst = p.Props.appendProps(dst, ps)
	}
	for i := range p.Subs {
		s := &p.Subs[i]
		dst = appendBin(dst, s.Filter)
		opts := s.QoS & subQoS
		if v5 {
			if s.NoLocal {
				opts |= subNoLocal
			}
			if s.RetainAsPublished {
				opts |= subRetainAsPublished
			}
			opts |= s.RetainHandling << 4 & subRetainHandling
		}
		dst = append(dst, opts)
	}
	return dst
}

// Suback is a SUBACK packet: one reason code per filter of the SUBSCRIBE,
// in order. For v3 packets Reasons hold the v3 return codes (0, 1, 2 or
// 0x80), which are the same values as the v5 ones.
type Suback struct {
	PacketID uint16
	Props    Properties // v5 only
	Reasons  []ReasonCode
}

// Reset zeroes p, keeping the capacity of its slices.
func (p *Suback) Reset() {
	p.Props.Reset()
	*p = Suback{Props: p.Props, Reasons: p.Reasons[:0]}
}

// Decode decodes a SUBACK body of protocol level version. It resets p
// first. Each return code must be one the version defines: 0, 1, 2, 0x80
// for 3.1.1 [MQTT-3.9.3-2], the SUBACK reason codes for 5.0 (malformed
// otherwise); at least one must be present.
func (p *Suback) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, SUBACK, body); err != nil {
		return err
	}
	r := reader{b: body}
	var err error
	if p.PacketID, err = readPacketID(&r, SUBACK); err != nil {
		return err
	}
	set := &v3SubackCodes
	if version == Version5 {
		set = &subackReasons
		n, err := p.Props.decode(body[r.i:], SUBACK, false)
		if err != nil {
			return err
		}
		r.i += n
	}
	for i, c := range r.rest() {
		if !set.has(ReasonCode(c)) { // [MQTT-3.9.3-2]
			return malformed(SUBACK, "reason code "+itoa(i)+" is "+hex2(c)+", not a SUBACK code")
		}
		p.Reasons = append(p.Reasons, ReasonCode(c))
	}
	if len(p.Reasons) == 0 {
		return protoErr(SUBACK, "no reason code")
	}
	return nil
}

// AppendSuback appends a SUBACK for protocol level version; for v3 the
// reasons are converted with V3SubackCode and no properties are written.
func AppendSuback(dst []byte, p *Suback, version byte) []byte {
	v5 := version == Version5
	rem, ps := 2+len(p.Reasons), 0
	if v5 {
		ps = p.Props.size()
		rem += varintLen(ps) + ps
	}
	dst = appendHeader(dst, SUBACK<<4, rem)
	dst = appendU16(dst, p.PacketID)
	if v5 {
		dst = p.Props.appendProps(dst, ps)
		for _, r := range p.Reasons {
			dst = append(dst, byte(r))
		}
		return dst
	}
	for _, r := range p.Reasons {
		dst = append(dst, V3SubackCode(r))
	}
	return dst
}

// Unsubscribe is an UNSUBSCRIBE packet. After Decode the filters and
// properties borrow from the decoded body.
type Unsubscribe struct {
	PacketID uint16
	Props    Properties // v5 only
	Filters  [][]byte
}

// Reset zeroes p, keeping the capacity of its slices.
func (p *Unsubscribe) Reset() {
	p.Props.Reset()
	clear(p.Filters)
	*p = Unsubscribe{Props: p.Props, Filters: p.Filters[:0]}
}

// Decode decodes an UNSUBSCRIBE body of protocol level version. It resets p
// first. Checks: non-zero packet identifier, at least one filter
// [MQTT-3.10.3-2], each UTF-8 [MQTT-3.10.3-1] and a valid topic filter
// (0x8F); properties valid for UNSUBSCRIBE.
func (p *Unsubscribe) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, UNSUBSCRIBE, body); err != nil {
		return err
	}
	r := reader{b: body}
	var err error
	if p.PacketID, err = readPacketID(&r, UNSUBSCRIBE); err != nil {
		return err
	}
	if version == Version5 {
		n, err := p.Props.decode(body[r.i:], UNSUBSCRIBE, false)
		if err != nil {
			return err
		}
		r.i += n
	}
	for r.left() > 0 {
		i := len(p.Filters)
		f, ok := r.bin()
		if !ok {
			return truncated(UNSUBSCRIBE, "topic filter "+itoa(i))
		}
		if err := checkFilter(UNSUBSCRIBE, f, i); err != nil {
			return err
		}
		p.Filters = append(p.Filters, f)
	}
	if len(p.Filters) == 0 { // [MQTT-3.10.3-2]
		return protoErr(UNSUBSCRIBE, "no topic filter")
	}
	return nil
}

// AppendUnsubscribe appends an UNSUBSCRIBE for protocol level version
// (fixed flags 0b0010 [MQTT-3.10.1-1]).
func AppendUnsubscribe(dst []byte, p *Unsubscribe, version byte) []byte {
	v5 := version == Version5
	rem, ps := 2, 0
	if v5 {
		ps = p.Props.size()
		rem += varintLen(ps) + ps
	}
	for _, f := range p.Filters {
		rem += 2 + len(f)
	}
	dst = appendHeader(dst, UNSUBSCRIBE<<4|0x02, rem)
	dst = appendU16(dst, p.PacketID)
	if v5 {
		dst = p.Props.appendProps(dst, ps)
	}
	for _, f := range p.Filters {
		dst = appendBin(dst, f)
	}
	return dst
}

// Unsuback is an UNSUBACK packet. v3 UNSUBACKs carry only the packet
// identifier (Reasons is empty); v5 ones one reason code per filter.
type Unsuback struct {
	PacketID uint16
	Props    Properties // v5 only
	Reasons  []ReasonCode
}

// Reset zeroes p, keeping the capacity of its slices.
func (p *Unsuback) Reset() {
	p.Props.Reset()
	*p = Unsuback{Props: p.Props, Reasons: p.Reasons[:0]}
}

// Decode decodes an UNSUBACK body of protocol level version. It resets p
// first.
func (p *Unsuback) Decode(fh FixedHeader, body []byte, version byte) error {
	p.Reset()
	if err := checkType(fh, UNSUBACK, body); err != nil {
		return err
	}
	r := reader{b: body}
	var err error
	if p.PacketID, err = readPacketID(&r, UNSUBACK); err != nil {
		return err
	}
	if version != Version5 {
		if len(body) != 2 {
			return malformed(UNSUBACK, "remaining length is "+itoa(len(body))+", must be 2")
		}
		return nil
	}
	n, err := p.Props.decode(body[r.i:], UNSUBACK, false)
	if err != nil {
		return err
	}
	r.i += n
	for i, c := range r.rest() {
		if !unsubackReasons.has(ReasonCode(c)) { // [MQTT-3.11.3-2]
			return malformed(UNSUBACK, "reason code "+itoa(i)+" is "+hex2(c)+", not an UNSUBACK code")
		}
		p.Reasons = append(p.Reasons, ReasonCode(c))
	}
	if len(p.Reasons) == 0 {
		return protoErr(UNSUBACK, "no reason code")
	}
	return nil
}

// AppendUnsuback appends an UNSUBACK for protocol level version; v3
// UNSUBACKs have no payload, so Reasons and Props are not written.
func AppendUnsuback(dst []byte, p *Unsuback, version byte) []byte {
	if version != Version5 {
		return append(dst, UNSUBACK<<4, 2, byte(p.PacketID>>8), byte(p.PacketID))
	}
	ps := p.Props.size()
	dst = appendHeader(dst, UNSUBACK<<4, 2+varintLen(ps)+ps+len(p.Reasons))
	dst = appendU16(dst, p.PacketID)
	dst = p.Props.appendProps(dst, ps)
	for _, r := range p.Reasons {
		dst = append(dst, byte(r))
	}
	return dst
}
