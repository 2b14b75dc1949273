package server_test

// The hostile-bytes corpus: malformed packets generated from valid encodings (see hostile_test.go).

import (
	"fmt"

	"github.com/ferrymq/ferry/mqttcodec"
)

// --- the corpus --------------------------------------------------------------------------------------------------

var (
	allVersions = []byte{mqttcodec.Version31, mqttcodec.Version311, mqttcodec.Version5}
	v3Versions  = []byte{mqttcodec.Version31, mqttcodec.Version311}
)

func vname(v byte) string {
	switch v {
	case mqttcodec.Version31:
		return "v31"
	case mqttcodec.Version311:
		return "v311"
	}
	return "v5"
}

// onError is the outcome of a connected client's protocol violation: v5 is told why, v3 is closed.
func onError(v byte, code mqttcodec.ReasonCode) outcome {
	if v == mqttcodec.Version5 {
		return disconnects(code)
	}
	return closes()
}

// onConnectError is the outcome of a CONNECT that must be refused: v5 gets CONNACK with the code, v3 a close.
func onConnectError(v byte, code mqttcodec.ReasonCode) outcome {
	if v == mqttcodec.Version5 {
		return connacks(v, code)
	}
	return closes()
}

// tag picks the statement tag of the version: (3.1.1 tag, 5.0 tag).
func tag(v byte, tag311, tag5 string) string {
	if v == mqttcodec.Version5 {
		return tag5
	}
	return tag311
}

const (
	mqtt5     = mqttcodec.Version5
	malformed = mqttcodec.MalformedPacket // 0x81
	protoErr  = mqttcodec.ProtocolError   // 0x82
)

// hostileCorpus generates every case. It is deterministic, so a failing case can be named and re-run.
func hostileCorpus() []hcase {
	var g corpusGen
	g.headerCases()
	g.lengthCases()
	g.publishCases()
	g.propertyCases()
	g.subscribeCases()
	g.controlCases()
	g.connectCases()
	g.connectPropertyCases()
	return g.cs
}

// corpusGen collects cases; one method per category.
type corpusGen struct{ cs []hcase }

func (g *corpusGen) add(name string, v byte, ph phase, b []byte, want outcome) {
	g.cs = append(g.cs, hcase{name: name, version: v, phase: ph, bytes: b, want: want})
}

// after adds a case sent on a connection of version v that a valid CONNECT opened.
func (g *corpusGen) after(name string, v byte, b []byte, want outcome) {
	g.add(name+"/"+vname(v), v, afterConnect, b, want)
}

// first adds a case whose bytes are the first on the connection (a CONNECT of version v, usually).
func (g *corpusGen) first(name string, v byte, b []byte, want outcome) {
	g.add(name+"/"+vname(v), v, beforeConnect, b, want)
}

// headerCases: fixed-header flags, packet types before CONNECT, reserved types.
func (g *corpusGen) headerCases() {
	// Fixed-header flags of every type but PUBLISH have fixed values [MQTT-2.1.3-1] (5.0), [MQTT-2.2.2-1]
	// [MQTT-2.2.2-2] (3.1.1). Two wrong nibbles per type, before CONNECT and on connections of every version.
	for typ := mqttcodec.CONNECT; typ <= mqttcodec.AUTH; typ++ {
		if typ == mqttcodec.PUBLISH {
			continue
		}
		for _, x := range []byte{0x1, 0x8} {
			for _, v := range allVersions {
				good := validPacket(typ, v)
				bad := withFirst(good, good[0]^x)
				name := fmt.Sprintf("%s/%s/%s-flags-0x%X", tag(v, "MQTT-2.2.2-2", "MQTT-2.1.3-1"), vname(v),
					mqttcodec.TypeName(typ), bad[0]&0x0F)
				g.add(name, v, afterConnect, bad, onError(v, malformed))
			}
			bad := withFirst(validPacket(typ, mqttcodec.Version5), validPacket(typ, mqttcodec.Version5)[0]^x)
			g.add(fmt.Sprintf("MQTT-3.1.0-1/before/%s-flags-0x%X", mqttcodec.TypeName(typ), bad[0]&0x0F),
				mqttcodec.Version5, beforeConnect, bad, closes())
		}
	}
	// Every other packet type, well-formed, as the first packet [MQTT-3.1.0-1].
	for typ := mqttcodec.CONNACK; typ <= mqttcodec.AUTH; typ++ {
		g.add("MQTT-3.1.0-1/before/"+mqttcodec.TypeName(typ), mqttcodec.Version5, beforeConnect,
			validPacket(typ, mqttcodec.Version5), closes())
	}
	// Reserved packet type 0 (2.1.2: "Reserved, forbidden"); type 15 is reserved before MQTT 5.
	for _, v := range allVersions {
		g.after("v5-2.1.2/reserved-type-0", v, []byte{0x00, 0x00}, onError(v, malformed))
		g.after("v5-2.1.2/reserved-type-0-flags", v, []byte{0x0F, 0x00}, onError(v, malformed))
	}
	g.add("MQTT-3.1.0-1/before/reserved-type-0", mqttcodec.Version5, beforeConnect, []byte{0x00, 0x00}, closes())
	for _, v := range v3Versions {
		g.after("v311-2.2.1/reserved-type-15-AUTH", v, []byte{0xF0, 0x00}, closes())
	}
	// AUTH when CONNECT carried no Authentication Method (4.12: no AUTH exchange exists): a Protocol Error.
	// A malformed AUTH is malformed first (FOUND_BUGS.md #7).
	g.after("MQTT-3.15.2-1/AUTH-reason-0x05", mqtt5, []byte{0xF0, 1, 0x05}, disconnects(malformed))
	g.after("v5-2.2.2.1/AUTH-property-length-overrun", mqtt5, pkt(0xF0, []byte{0x18}, []byte{9, 0x15}), disconnects(malformed))
	g.after("v5-4.12/AUTH-without-method", mqttcodec.Version5, []byte{0xF0, 0x00}, disconnects(protoErr))
	g.after("v5-4.12/AUTH-continue-without-method", mqttcodec.Version5,
		pkt(0xF0, []byte{0x18}, props(pStr(mqttcodec.PropAuthMethod, "SCRAM-SHA-1"))), disconnects(protoErr))

}

// lengthCases: Remaining Length and bodies that are too long, too short, or never finished.
func (g *corpusGen) lengthCases() {
	// Remaining Length: at most 4 bytes (1.5.5, 2.1.4); at most the server's Maximum Packet Size (3.2.2.3.6:
	// "the Server uses DISCONNECT with Reason Code 0x95").
	fiveByte := []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}
	oversize := cat([]byte{0x30}, vbi(1<<20+1), str("hostile/too-large"), []byte("xxxx"))
	for _, v := range allVersions {
		g.after("v5-1.5.5/remaining-length-5-bytes", v, fiveByte, onError(v, malformed))
		g.after("v5-1.5.5/remaining-length-5-bytes-PINGREQ", v, []byte{0xC0, 0x80, 0x80, 0x80, 0x80, 0x01}, onError(v, malformed))
		g.after("v5-3.2.2.3.6/packet-too-large", v, oversize, onError(v, mqttcodec.PacketTooLarge))
	}
	g.add("MQTT-3.1.0-1/before/remaining-length-5-bytes", mqttcodec.Version5, beforeConnect, fiveByte, closes())
	g.add("MQTT-3.1.4-1/before/CONNECT-too-large", mqttcodec.Version5, beforeConnect,
		cat([]byte{0x10}, vbi(1<<20+1), str("MQTT"), []byte{5}), closes())

	// Remaining Length larger than what is sent, then silence: no answer until a timeout closes.
	g.add("MQTT-3.1.4-1/before/CONNECT-v311-body-missing", mqttcodec.Version311, beforeConnect,
		shortStream(validPacket(mqttcodec.CONNECT, mqttcodec.Version311), 3), silent())
	g.add("MQTT-3.1.4-1/before/CONNECT-v5-body-missing", mqttcodec.Version5, beforeConnect,
		shortStream(validPacket(mqttcodec.CONNECT, mqttcodec.Version5), 1), silent())
	g.add("MQTT-3.1.4-1/before/CONNECT-header-only", mqttcodec.Version5, beforeConnect, []byte{0x10}, silent())
	g.add("MQTT-3.1.4-1/before/CONNECT-length-unfinished", mqttcodec.Version5, beforeConnect, []byte{0x10, 0x80}, silent())
	for _, v := range allVersions {
		ka := tag(v, "MQTT-3.1.2-24", "MQTT-3.1.2-22")
		g.after(ka+"/PUBLISH-body-missing", v, shortStream(publishPkt(v, 0x02, "hostile/short", 1, nil, "payload"), 4), silent())
		g.after(ka+"/SUBSCRIBE-body-missing", v, shortStream(validPacket(mqttcodec.SUBSCRIBE, v), 1), silent())
		g.after(ka+"/remaining-length-unfinished", v, []byte{0x30, 0xFF, 0xFF}, silent())
	}
	g.after("MQTT-3.1.2-22/header-byte-only", mqttcodec.Version5, []byte{0x82}, silent())

	// Bodies shorter than their fields (Remaining Length consistent, a field runs past the end): malformed.
	for _, v := range allVersions {
		g.after("v5-1.5.4/PUBLISH-topic-length-overrun", v, pkt(0x30, []byte{0, 9}, []byte("abc")), onError(v, malformed))
		g.after("v5-2.2.1/PUBLISH-qos1-packet-id-missing", v, pkt(0x32, str("a")), onError(v, malformed))
		g.after("v5-3.8.3/SUBSCRIBE-options-missing", v, shortBody(validPacket(mqttcodec.SUBSCRIBE, v), 1), onError(v, malformed))
		g.after("v5-3.8.3/SUBSCRIBE-filter-overrun", v, subscribePkt(v, 1, nil, []byte{0, 40, 'a', 0}), onError(v, malformed))
		g.after("v5-3.10.3/UNSUBSCRIBE-filter-overrun", v, shortBody(validPacket(mqttcodec.UNSUBSCRIBE, v), 2), onError(v, malformed))
		for _, typ := range []byte{mqttcodec.PUBACK, mqttcodec.PUBREC, mqttcodec.PUBREL, mqttcodec.PUBCOMP} {
			g.after("v5-2.2.1/"+mqttcodec.TypeName(typ)+"-length-1", v, pkt(ackFirst(typ), []byte{0}), onError(v, malformed))
			g.after("v5-2.2.1/"+mqttcodec.TypeName(typ)+"-length-0", v, []byte{ackFirst(typ), 0}, onError(v, malformed))
		}
		g.after("v5-3.12.1/PINGREQ-with-body", v, []byte{0xC0, 1, 0}, onError(v, malformed))
	}
	for _, v := range v3Versions {
		g.after("v311-3.4.2/PUBACK-length-3", v, pkt(0x40, u16(1), []byte{0}), closes())
		g.after("v311-3.14.1/DISCONNECT-with-body", v, []byte{0xE0, 1, 0}, closes())
	}
	g.after("v5-3.14.2/DISCONNECT-property-length-overrun", mqtt5, pkt(0xE0, []byte{0x00, 5}), disconnects(malformed))
	g.after("v5-3.4.2/PUBACK-property-length-overrun", mqtt5, pkt(0x40, u16(1), []byte{0x10, 9}), disconnects(malformed))
	g.after("v5-3.4.2/PUBACK-bytes-after-properties", mqtt5, pkt(0x40, u16(1), []byte{0x10, 0, 0xAA}), disconnects(malformed))

}

// publishCases: packet identifiers, PUBLISH flags, topic names, topic aliases, payload format.
func (g *corpusGen) publishCases() {
	// Packet identifier 0 on PUBLISH QoS>0, SUBSCRIBE, UNSUBSCRIBE [MQTT-2.2.1-3] (5.0) [MQTT-2.3.1-1] (3.1.1):
	// the packet parses, so for v5 it is a Protocol Error.
	for _, v := range allVersions {
		t := tag(v, "MQTT-2.3.1-1", "MQTT-2.2.1-3")
		g.after(t+"/PUBLISH-qos1-id-0", v, publishPkt(v, 0x02, "hostile/a", 0, nil, "x"), onError(v, protoErr))
		g.after(t+"/PUBLISH-qos2-id-0", v, publishPkt(v, 0x04, "hostile/a", 0, nil, "x"), onError(v, protoErr))
		g.after(t+"/SUBSCRIBE-id-0", v, subscribePkt(v, 0, nil, subPair("a", 0)), onError(v, protoErr))
		g.after(t+"/UNSUBSCRIBE-id-0", v, unsubscribePkt(v, 0, nil, "a"), onError(v, protoErr))
		g.after(tag(v, "MQTT-2.3.1-6", "MQTT-2.2.1-5")+"/PUBACK-id-0", v, pkt(0x40, u16(0)), onError(v, protoErr))
	}

	// PUBLISH flags and topic names.
	for _, v := range allVersions {
		g.after("MQTT-3.3.1-4/qos-3", v, publishPkt(v, 0x06, "hostile/a", 1, nil, "x"), onError(v, malformed))
		g.after("MQTT-3.3.1-4/qos-3-dup-retain", v, publishPkt(v, 0x0F, "hostile/a", 1, nil, "x"), onError(v, malformed))
		g.after("MQTT-3.3.1-2/dup-on-qos-0", v, publishPkt(v, 0x08, "hostile/a", 0, nil, "x"), onError(v, protoErr))
		for i, topic := range []string{"a/+", "#", "a/#", "+", "a+b"} {
			g.after(fmt.Sprintf("MQTT-3.3.2-2/wildcard-%d", i), v, publishPkt(v, 0, topic, 0, nil, "x"), onError(v, mqttcodec.TopicNameInvalid))
		}
		for i, topic := range []string{"bad\xff", "\xc0\x80", "a/\xed\xa0\x80", "\xe2\x82"} {
			g.after(fmt.Sprintf("%s/topic-ill-formed-utf8-%d", tag(v, "MQTT-1.5.3-1", "MQTT-1.5.4-1"), i), v,
				publishPkt(v, 0x02, topic, 1, nil, "x"), onError(v, malformed))
		}
		g.after(tag(v, "MQTT-1.5.3-2", "MQTT-1.5.4-2")+"/topic-U+0000", v, publishPkt(v, 0, "a\x00b", 0, nil, "x"), onError(v, malformed))
	}
	for _, v := range v3Versions {
		g.after("MQTT-4.7.3-1/PUBLISH-empty-topic", v, publishPkt(v, 0, "", 0, nil, "x"), closes())
	}
	// MQTT 5 topic aliases (3.3.2.3.4); the server advertises Topic Alias Maximum 64.
	g.after("v5-3.3.2.3.4/empty-topic-without-alias", mqtt5, publishPkt(mqtt5, 0, "", 0, nil, "x"), disconnects(protoErr))
	g.after("v5-3.3.2.3.4/alias-not-mapped", mqtt5, publishPkt(mqtt5, 0, "", 0, props(pU16(mqttcodec.PropTopicAlias, 3)), "x"), disconnects(protoErr))
	g.after("MQTT-3.3.2-8/topic-alias-0", mqtt5, publishPkt(mqtt5, 0, "hostile/a", 0, props(pU16(mqttcodec.PropTopicAlias, 0)), "x"), disconnects(mqttcodec.TopicAliasInvalid))
	g.after("MQTT-3.3.2-9/topic-alias-above-maximum", mqtt5, publishPkt(mqtt5, 0, "hostile/a", 0, props(pU16(mqttcodec.PropTopicAlias, 65)), "x"), disconnects(mqttcodec.TopicAliasInvalid))
	g.after("MQTT-3.3.2-9/topic-alias-65535", mqtt5, publishPkt(mqtt5, 0x02, "", 1, props(pU16(mqttcodec.PropTopicAlias, 65535)), "x"), disconnects(mqttcodec.TopicAliasInvalid))
	// Payload Format Indicator 1 with a payload that is not UTF-8: refused with 0x99 (3.3.2.3.2).
	pfi := props(pByte(mqttcodec.PropPayloadFormat, 1))
	g.after("v5-3.3.2.3.2/payload-not-utf8-qos1", mqtt5, publishPkt(mqtt5, 0x02, "hostile/pfi", 9, pfi, "\xff\xfe"), replies(mqttcodec.PUBACK, mqttcodec.PayloadFormatInvalid))
	g.after("v5-3.3.2.3.2/payload-not-utf8-qos0", mqtt5, publishPkt(mqtt5, 0, "hostile/pfi", 0, pfi, "\xff\xfe"), disconnects(mqttcodec.PayloadFormatInvalid))

}

// propertyCases: MQTT 5 properties outside CONNECT.
func (g *corpusGen) propertyCases() {
	// v5 properties: a property twice is a Protocol Error ("It is a Protocol Error to include X more than
	// once"); one not valid for the packet, an unknown identifier, a value of the wrong type or running past the
	// Property Length is a Malformed Packet (2.2.2.2).
	type dup struct {
		what string
		p    []byte
	}
	for _, d := range []dup{
		{"payload-format", pByte(mqttcodec.PropPayloadFormat, 0)},
		{"message-expiry", pU32(mqttcodec.PropMessageExpiry, 10)},
		{"content-type", pStr(mqttcodec.PropContentType, "text/plain")},
		{"response-topic", pStr(mqttcodec.PropResponseTopic, "r/t")},
		{"correlation-data", pStr(mqttcodec.PropCorrelationData, "c")},
		{"topic-alias", pU16(mqttcodec.PropTopicAlias, 1)},
	} {
		g.after("v5-3.3.2.3/PUBLISH-duplicate-"+d.what, mqtt5, publishPkt(mqtt5, 0x02, "hostile/a", 1, props(d.p, d.p), "x"), disconnects(protoErr))
	}
	g.after("v5-3.8.2.1.2/SUBSCRIBE-duplicate-subscription-id", mqtt5,
		subscribePkt(mqtt5, 1, props(pVar(mqttcodec.PropSubscriptionID, 1), pVar(mqttcodec.PropSubscriptionID, 2)), subPair("a", 0)), disconnects(protoErr))
	g.after("v5-3.8.2.1.2/SUBSCRIBE-subscription-id-0", mqtt5, subscribePkt(mqtt5, 1, props(pVar(mqttcodec.PropSubscriptionID, 0)), subPair("a", 0)), disconnects(protoErr))
	rs := pStr(mqttcodec.PropReasonString, "why")
	g.after("v5-3.14.2.2.3/DISCONNECT-duplicate-reason-string", mqtt5, pkt(0xE0, []byte{0}, props(rs, rs)), disconnects(protoErr))
	g.after("v5-3.4.2.2.2/PUBACK-duplicate-reason-string", mqtt5, pkt(0x40, u16(1), []byte{0}, props(rs, rs)), disconnects(protoErr))
	g.after("v5-3.6.2.2.2/PUBREL-duplicate-reason-string", mqtt5, pkt(0x62, u16(1), []byte{0}, props(rs, rs)), disconnects(protoErr))

	type notAllowed struct {
		what  string
		build func(p []byte) []byte
		p     []byte
	}
	for _, n := range []notAllowed{
		{"PUBLISH-session-expiry", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props(pU32(mqttcodec.PropSessionExpiry, 1))},
		{"PUBLISH-reason-string", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props(rs)},
		{"PUBLISH-maximum-qos", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props(pByte(mqttcodec.PropMaximumQoS, 1))},
		{"PUBLISH-will-delay", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props(pU32(mqttcodec.PropWillDelay, 1))},
		{"SUBSCRIBE-topic-alias", func(p []byte) []byte { return subscribePkt(mqtt5, 1, p, subPair("a", 0)) }, props(pU16(mqttcodec.PropTopicAlias, 1))},
		{"SUBSCRIBE-message-expiry", func(p []byte) []byte { return subscribePkt(mqtt5, 1, p, subPair("a", 0)) }, props(pU32(mqttcodec.PropMessageExpiry, 1))},
		{"UNSUBSCRIBE-subscription-id", func(p []byte) []byte { return unsubscribePkt(mqtt5, 1, p, "a") }, props(pVar(mqttcodec.PropSubscriptionID, 1))},
		{"PUBACK-topic-alias", func(p []byte) []byte { return pkt(0x40, u16(1), []byte{0}, p) }, props(pU16(mqttcodec.PropTopicAlias, 1))},
		{"PUBREL-content-type", func(p []byte) []byte { return pkt(0x62, u16(1), []byte{0}, p) }, props(pStr(mqttcodec.PropContentType, "x"))},
		{"DISCONNECT-topic-alias", func(p []byte) []byte { return pkt(0xE0, []byte{0}, p) }, props(pU16(mqttcodec.PropTopicAlias, 1))},
		{"DISCONNECT-will-delay", func(p []byte) []byte { return pkt(0xE0, []byte{0}, p) }, props(pU32(mqttcodec.PropWillDelay, 1))},
		{"PUBLISH-unknown-id-0x00", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props([]byte{0x00, 0x01})},
		{"PUBLISH-unknown-id-0x7F", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props([]byte{0x7F, 0x01})},
		{"PUBLISH-two-byte-id", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props([]byte{0x81, 0x00, 0x01})},
		{"PUBLISH-value-past-property-length", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props([]byte{byte(mqttcodec.PropMessageExpiry), 0, 0})},
		{"PUBLISH-string-past-property-length", func(p []byte) []byte { return publishPkt(mqtt5, 0, "hostile/a", 0, p, "x") }, props([]byte{byte(mqttcodec.PropContentType), 0, 9, 'a'})},
	} {
		g.after("v5-2.2.2.2/"+n.what, mqtt5, n.build(n.p), disconnects(malformed))
	}
	// Property Length overruns and over-long encodings.
	g.after("v5-2.2.2.1/PUBLISH-property-length-overrun", mqtt5, pkt(0x30, str("hostile/a"), []byte{40, 1}), disconnects(malformed))
	g.after("v5-2.2.2.1/PUBLISH-property-length-5-bytes", mqtt5, pkt(0x30, str("hostile/a"), []byte{0x80, 0x80, 0x80, 0x80, 0x01}, []byte("payload-padding")), disconnects(malformed))
	g.after("v5-2.2.2.1/SUBSCRIBE-property-length-overrun", mqtt5, pkt(0x82, u16(1), []byte{30}, subPair("a", 0)), disconnects(malformed))
	g.after("v5-2.2.2.1/UNSUBSCRIBE-property-length-overrun", mqtt5, pkt(0xA2, u16(1), []byte{30}, str("a")), disconnects(malformed))
	g.after("v5-2.2.2.1/SUBSCRIBE-properties-missing", mqtt5, pkt(0x82, u16(1)), disconnects(malformed))
	// Strings inside properties follow the UTF-8 rules [MQTT-1.5.4-1] [MQTT-1.5.4-2] [MQTT-1.5.7-1].
	g.after("MQTT-1.5.4-1/content-type-ill-formed", mqtt5, publishPkt(mqtt5, 0, "hostile/a", 0, props(pStr(mqttcodec.PropContentType, "\xff")), "x"), disconnects(malformed))
	g.after("MQTT-1.5.7-1/user-property-key-U+0000", mqtt5, publishPkt(mqtt5, 0, "hostile/a", 0, props(pUser("k\x00", "v")), "x"), disconnects(malformed))
	g.after("MQTT-1.5.7-1/user-property-value-ill-formed", mqtt5, publishPkt(mqtt5, 0, "hostile/a", 0, props(pUser("k", "\xed\xbf\xbf")), "x"), disconnects(malformed))
	g.after("MQTT-1.5.4-1/PUBACK-reason-string-ill-formed", mqtt5, pkt(0x40, u16(1), []byte{0}, props(pStr(mqttcodec.PropReasonString, "\xc1\xbf"))), disconnects(malformed))
	// A client's PUBLISH carries no Subscription Identifier [MQTT-3.3.4-6] (FOUND_BUGS.md #1).
	g.after("MQTT-3.3.4-6/PUBLISH-subscription-id-qos0", mqtt5, publishPkt(mqtt5, 0, "hostile/subid", 0, props(pVar(mqttcodec.PropSubscriptionID, 7)), "x"), disconnects(protoErr))
	g.after("MQTT-3.3.4-6/PUBLISH-subscription-id-qos1", mqtt5, publishPkt(mqtt5, 0x02, "hostile/subid", 1, props(pVar(mqttcodec.PropSubscriptionID, 7)), "x"), disconnects(protoErr))
	g.after("MQTT-3.3.2-14/response-topic-wildcard", mqtt5, publishPkt(mqtt5, 0, "hostile/a", 0, props(pStr(mqttcodec.PropResponseTopic, "r/#")), "x"), disconnects(protoErr))

}

// subscribeCases: SUBSCRIBE and UNSUBSCRIBE payloads.
func (g *corpusGen) subscribeCases() {
	// SUBSCRIBE payload.
	for _, v := range allVersions {
		g.after(tag(v, "MQTT-3.8.3-3", "MQTT-3.8.3-2")+"/no-topic-filter", v, subscribePkt(v, 1, nil), onError(v, protoErr))
		// '#' last and alone in its level: [MQTT-4.7.1-2] (3.1.1) [MQTT-4.7.1-1] (5.0); '+' alone in its level:
		// [MQTT-4.7.1-3] (3.1.1) [MQTT-4.7.1-2] (5.0); at least one character [MQTT-4.7.3-1].
		for _, bad := range []struct{ tag, what, filter string }{
			{tag(v, "MQTT-4.7.1-2", "MQTT-4.7.1-1"), "hash-not-last", "a/#/b"},
			{tag(v, "MQTT-4.7.1-2", "MQTT-4.7.1-1"), "hash-in-level", "a#"},
			{tag(v, "MQTT-4.7.1-2", "MQTT-4.7.1-1"), "hash-first-not-last", "#/a"},
			{tag(v, "MQTT-4.7.1-3", "MQTT-4.7.1-2"), "plus-in-level", "a+/b"},
			{"MQTT-4.7.3-1", "empty-filter", ""},
		} {
			g.after(bad.tag+"/SUBSCRIBE-"+bad.what, v, subscribePkt(v, 1, nil, subPair(bad.filter, 0)), onError(v, mqttcodec.TopicFilterInvalid))
		}
		g.after(tag(v, "MQTT-1.5.3-1", "MQTT-1.5.4-1")+"/SUBSCRIBE-filter-ill-formed", v, subscribePkt(v, 1, nil, subPair("a/\xff", 0)), onError(v, malformed))
		g.after(tag(v, "MQTT-1.5.3-2", "MQTT-1.5.4-2")+"/SUBSCRIBE-filter-U+0000", v, subscribePkt(v, 1, nil, subPair("a\x00", 0)), onError(v, malformed))
		g.after("MQTT-3.8.3-1/second-filter-ill-formed", v, subscribePkt(v, 1, nil, subPair("ok", 0), subPair("\xfe", 0)), onError(v, malformed))
	}
	for _, v := range v3Versions {
		for _, o := range []byte{0x03, 0x04, 0x40, 0x80, 0xFC} {
			g.after(fmt.Sprintf("MQTT-3-8.3-4/requested-qos-byte-0x%02X", o), v, subscribePkt(v, 1, nil, subPair("a", o)), closes())
		}
	}
	for _, o := range []byte{0x40, 0x80, 0xC0, 0x41} {
		g.after(fmt.Sprintf("MQTT-3.8.3-5/options-reserved-0x%02X", o), mqtt5, subscribePkt(mqtt5, 1, nil, subPair("a", o)), disconnects(malformed))
	}
	g.after("v5-3.8.3.1/retain-handling-3", mqtt5, subscribePkt(mqtt5, 1, nil, subPair("a", 0x30)), disconnects(protoErr))
	g.after("v5-3.8.3.1/maximum-qos-3", mqtt5, subscribePkt(mqtt5, 1, nil, subPair("a", 0x03)), disconnects(protoErr))
	g.after("v5-3.8.3.1/second-filter-qos-3", mqtt5, subscribePkt(mqtt5, 1, nil, subPair("a", 1), subPair("b", 0x03)), disconnects(protoErr))
	g.after("MQTT-3.8.3-4/no-local-on-shared", mqtt5, subscribePkt(mqtt5, 1, nil, subPair("$share/g/a", 0x04)), disconnects(protoErr))
	g.after("MQTT-4.8.2-1/empty-share-name", mqtt5, subscribePkt(mqtt5, 1, nil, subPair("$share//a", 0)), disconnects(mqttcodec.TopicFilterInvalid))
	g.after("MQTT-4.8.2-2/share-name-wildcard", mqtt5, subscribePkt(mqtt5, 1, nil, subPair("$share/g+/a", 0)), disconnects(mqttcodec.TopicFilterInvalid))

	// UNSUBSCRIBE payload.
	for _, v := range allVersions {
		g.after("MQTT-3.10.3-2/no-topic-filter", v, unsubscribePkt(v, 1, nil), onError(v, protoErr))
		g.after(tag(v, "MQTT-4.7.1-2", "MQTT-4.7.1-1")+"/UNSUBSCRIBE-hash-not-last", v, unsubscribePkt(v, 1, nil, "a/#/b"), onError(v, mqttcodec.TopicFilterInvalid))
		g.after("MQTT-3.10.3-1/filter-ill-formed", v, unsubscribePkt(v, 1, nil, "\xc3"), onError(v, malformed))
	}

}

// controlCases: acks, server-only packets, a second CONNECT, DISCONNECT.
func (g *corpusGen) controlCases() {
	// Acks: reason codes outside the packet's table are malformed [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1]
	// [MQTT-3.7.2-1]; acks for unknown identifiers are out of order but not errors.
	g.after("MQTT-3.4.2-1/PUBACK-reason-0x05", mqtt5, pkt(0x40, u16(1), []byte{0x05}), disconnects(malformed))
	g.after("MQTT-3.5.2-1/PUBREC-reason-0x92", mqtt5, pkt(0x50, u16(1), []byte{0x92}), disconnects(malformed))
	g.after("MQTT-3.6.2-1/PUBREL-reason-0x10", mqtt5, pkt(0x62, u16(1), []byte{0x10}), disconnects(malformed))
	g.after("MQTT-3.7.2-1/PUBCOMP-reason-0x80", mqtt5, pkt(0x70, u16(1), []byte{0x80}), disconnects(malformed))
	for _, v := range allVersions {
		code := mqttcodec.ReasonCode(0)
		if v == mqtt5 {
			code = mqttcodec.PacketIdentifierNotFound
		}
		g.after(tag(v, "MQTT-3.6.4-1", "MQTT-4.3.3-11")+"/PUBREL-unknown-id", v, pkt(0x62, u16(4242)), replies(mqttcodec.PUBCOMP, code))
		g.after("v5-3.6.2.1/PUBREC-unknown-id", v, pkt(0x50, u16(4243)), replies(mqttcodec.PUBREL, code))
		g.after("v5-4.3.2/PUBACK-unknown-id", v, pkt(0x40, u16(4244)), ignored())
		g.after("v5-4.3.3/PUBCOMP-unknown-id", v, pkt(0x70, u16(4245)), ignored())
	}

	// Packets only a server sends (2.1.2 direction column); for v5 a Protocol Error.
	for _, v := range allVersions {
		for _, typ := range []byte{mqttcodec.CONNACK, mqttcodec.SUBACK, mqttcodec.UNSUBACK, mqttcodec.PINGRESP} {
			g.after("v5-2.1.2/client-sends-"+mqttcodec.TypeName(typ), v, validPacket(typ, v), onError(v, protoErr))
		}
		g.after("MQTT-3.1.0-2/second-CONNECT", v, connectPkt(v, 0x02, 30, nil, str("second")), onError(v, protoErr))
	}

	// DISCONNECT from a v5 client.
	g.after("MQTT-3.14.2-1/DISCONNECT-reason-0x03", mqtt5, pkt(0xE0, []byte{0x03}), disconnects(malformed))
	g.after("MQTT-3.14.2-1/DISCONNECT-reason-0x7F", mqtt5, pkt(0xE0, []byte{0x7F}), disconnects(malformed))
	g.after("v5-3.14.2.2.2/DISCONNECT-session-expiry-after-0", mqtt5, pkt(0xE0, []byte{0}, props(pU32(mqttcodec.PropSessionExpiry, 60))), disconnects(protoErr))
}

// connectCases: the CONNECT itself is wrong (flags, payload, protocol name and level).
func (g *corpusGen) connectCases() {
	id := str("hostile-c")
	for _, v := range allVersions {
		g.first("MQTT-3.1.2-3/reserved-flag", v, connectPkt(v, 0x03, 30, nil, id), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.2-14", "MQTT-3.1.2-12")+"/will-qos-3", v, connectPkt(v, 0x1E, 30, nil, id, orEmpty(v, nil), str("w"), str("m")), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.2-13", "MQTT-3.1.2-11")+"/will-qos-without-will", v, connectPkt(v, 0x0A, 30, nil, id), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.2-15", "MQTT-3.1.2-13")+"/will-retain-without-will", v, connectPkt(v, 0x22, 30, nil, id), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.2-9", "MQTT-3.1.2-9")+"/will-topic-missing", v, connectPkt(v, 0x06, 30, nil, id), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.2-19", "MQTT-3.1.2-17")+"/user-name-missing", v, connectPkt(v, 0x82, 30, nil, id), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.2-21", "MQTT-3.1.2-19")+"/password-missing", v, connectPkt(v, 0xC2, 30, nil, id, str("u")), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-1.5.3-1", "MQTT-1.5.4-1")+"/client-id-ill-formed", v, connectPkt(v, 0x02, 30, nil, str("id\xff")), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-1.5.3-2", "MQTT-1.5.4-2")+"/client-id-U+0000", v, connectPkt(v, 0x02, 30, nil, str("i\x00d")), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.3-10", "MQTT-3.1.3-11")+"/will-topic-ill-formed", v, connectPkt(v, 0x06, 30, nil, id, orEmpty(v, nil), str("w/\xff"), str("m")), onConnectError(v, malformed))
		g.first(tag(v, "MQTT-3.1.3-11", "MQTT-3.1.3-12")+"/user-name-ill-formed", v, connectPkt(v, 0x82, 30, nil, id, str("\xed\xa0\x80")), onConnectError(v, malformed))
		g.first("MQTT-3.1.4-1/bytes-after-payload", v, connectPkt(v, 0x02, 30, nil, id, []byte{0xAA}), onConnectError(v, malformed))
		g.first("MQTT-3.1.4-1/client-id-overrun", v, shortBody(connectPkt(v, 0x02, 30, nil, id), 2), onConnectError(v, malformed))
		g.first("MQTT-3.1.4-1/keep-alive-missing", v, pkt(0x10, str(protoName(v)), []byte{v, 0x02, 0}), onConnectError(v, malformed))
		wantWill := onConnectError(v, mqttcodec.TopicNameInvalid) // CONNACK 0x90: "The Will Topic Name is not malformed, but is not accepted"
		g.first(tag(v, "MQTT-4.7.1-1", "MQTT-4.7.0-1")+"/will-topic-wildcard", v, connectPkt(v, 0x06, 30, nil, id, orEmpty(v, nil), str("w/#"), str("m")), wantWill)
		// The version is unknown while the fixed header is refused: a close (a v5 CONNACK 0x81 is only a MAY).
		g.first(tag(v, "MQTT-2.2.2-2", "MQTT-2.1.3-1")+"/CONNECT-flags-0x2", v, withFirst(connectPkt(v, 0x02, 30, nil, id), 0x12), closes())
	}
	for _, v := range v3Versions {
		g.first("MQTT-3.1.2-22/password-without-user-name", v, connectPkt(v, 0x42, 30, nil, id, str("p")), closes())
	}
	v4 := mqttcodec.Version311
	// Identifier rejected / unacceptable protocol version: the v3 return codes [MQTT-3.1.3-8] [MQTT-3.1.2-2].
	g.first("MQTT-3.1.3-8/empty-client-id-clean-session-0", v4, connectPkt(v4, 0x00, 30, nil, str("")), connacks(v4, 2))
	g.first("v31-3.1/empty-client-id", mqttcodec.Version31, connectPkt(mqttcodec.Version31, 0x02, 30, nil, str("")), connacks(v4, 2))
	g.first("MQTT-3.1.2-2/level-6", v4, pkt(0x10, str("MQTT"), []byte{6, 0x02}, u16(30), str("x")), connacks(v4, 1))
	g.first("MQTT-3.1.2-2/level-3-named-MQTT", v4, pkt(0x10, str("MQTT"), []byte{3, 0x02}, u16(30), str("x")), connacks(v4, 1))
	g.first("MQTT-3.1.2-2/level-4-named-MQIsdp", v4, pkt(0x10, str("MQIsdp"), []byte{4, 0x02}, u16(30), str("x")), connacks(v4, 1))
	g.first("MQTT-3.1.2-2/level-0", v4, pkt(0x10, str("MQTT"), []byte{0, 0x02}, u16(30), str("x")), connacks(v4, 1))
	// An incorrect protocol name: the server MAY disconnect [MQTT-3.1.2-1]; it must not go on as MQTT.
	g.first("MQTT-3.1.2-1/name-MQTX", v4, pkt(0x10, str("MQTX"), []byte{4, 0x02}, u16(30), str("x")), refused())
	g.first("MQTT-3.1.2-1/name-MQTX", mqtt5, pkt(0x10, str("MQTX"), []byte{5, 0x02}, u16(30), props(), str("x")), refused())
	g.first("MQTT-3.1.2-1/name-empty", mqtt5, pkt(0x10, str(""), []byte{5, 0x02}, u16(30), props(), str("x")), refused())
	g.first("MQTT-3.1.2-1/name-overrun", mqtt5, pkt(0x10, []byte{0, 50}, []byte("MQTT")), refused())
	g.first("MQTT-3.1.2-1/HTTP-request", mqtt5, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), closes())

}

// connectPropertyCases: MQTT 5 CONNECT and will properties.
func (g *corpusGen) connectPropertyCases() {
	id := str("hostile-c")
	dupCases := []struct {
		what string
		p    []byte
	}{
		{"session-expiry", pU32(mqttcodec.PropSessionExpiry, 0)},
		{"receive-maximum", pU16(mqttcodec.PropReceiveMaximum, 10)},
		{"maximum-packet-size", pU32(mqttcodec.PropMaximumPacketSize, 1000)},
		{"topic-alias-maximum", pU16(mqttcodec.PropTopicAliasMaximum, 1)},
		{"request-response-information", pByte(mqttcodec.PropRequestResponseInfo, 0)},
		{"request-problem-information", pByte(mqttcodec.PropRequestProblemInfo, 1)},
	}
	for _, d := range dupCases {
		g.first("v5-3.1.2.11/duplicate-"+d.what, mqtt5, connectPkt(mqtt5, 0x02, 30, props(d.p, d.p), id), connacks(mqtt5, protoErr))
	}
	will := func(wp []byte) []byte { return connectPkt(mqtt5, 0x06, 30, nil, id, wp, str("will/t"), str("m")) }
	g.first("v5-3.1.3.2/will-duplicate-will-delay", mqtt5, will(props(pU32(mqttcodec.PropWillDelay, 1), pU32(mqttcodec.PropWillDelay, 2))), connacks(mqtt5, protoErr))
	g.first("v5-3.1.3.2/will-duplicate-payload-format", mqtt5, will(props(pByte(mqttcodec.PropPayloadFormat, 0), pByte(mqttcodec.PropPayloadFormat, 0))), connacks(mqtt5, protoErr))
	g.first("v5-2.2.2.2/will-topic-alias", mqtt5, will(props(pU16(mqttcodec.PropTopicAlias, 1))), connacks(mqtt5, malformed))
	g.first("v5-2.2.2.2/will-session-expiry", mqtt5, will(props(pU32(mqttcodec.PropSessionExpiry, 1))), connacks(mqtt5, malformed))
	g.first("v5-2.2.2.1/will-property-length-overrun", mqtt5, connectPkt(mqtt5, 0x06, 30, nil, id, []byte{60}, str("w"), str("m")), connacks(mqtt5, malformed))
	for _, n := range []struct {
		what string
		p    []byte
	}{
		{"assigned-client-id", pStr(mqttcodec.PropAssignedClientID, "x")},
		{"will-delay", pU32(mqttcodec.PropWillDelay, 1)},
		{"topic-alias", pU16(mqttcodec.PropTopicAlias, 1)},
		{"server-keep-alive", pU16(mqttcodec.PropServerKeepAlive, 1)},
		{"unknown-0x7F", []byte{0x7F, 0}},
	} {
		g.first("v5-2.2.2.2/CONNECT-"+n.what, mqtt5, connectPkt(mqtt5, 0x02, 30, props(n.p), id), connacks(mqtt5, malformed))
	}
	g.first("v5-3.1.2.11.3/receive-maximum-0", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pU16(mqttcodec.PropReceiveMaximum, 0)), id), connacks(mqtt5, protoErr))
	g.first("v5-3.1.2.11.4/maximum-packet-size-0", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pU32(mqttcodec.PropMaximumPacketSize, 0)), id), connacks(mqtt5, protoErr))
	g.first("v5-3.1.2.11.6/request-response-information-2", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pByte(mqttcodec.PropRequestResponseInfo, 2)), id), connacks(mqtt5, protoErr))
	g.first("v5-3.1.2.11.7/request-problem-information-2", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pByte(mqttcodec.PropRequestProblemInfo, 2)), id), connacks(mqtt5, protoErr))
	g.first("v5-3.1.2.11.10/authentication-data-without-method", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pStr(mqttcodec.PropAuthData, "d")), id), connacks(mqtt5, protoErr))
	g.first("MQTT-4.12.0-1/unsupported-authentication-method", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pStr(mqttcodec.PropAuthMethod, "SCRAM-SHA-1")), id), connacks(mqtt5, mqttcodec.BadAuthenticationMethod))
	g.first("v5-2.2.2.1/CONNECT-property-length-overrun", mqtt5, connectPkt(mqtt5, 0x02, 30, []byte{100}, id), connacks(mqtt5, malformed))
	g.first("v5-2.2.2.1/CONNECT-property-length-5-bytes", mqtt5, connectPkt(mqtt5, 0x02, 30, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, id), connacks(mqtt5, malformed))
	g.first("MQTT-1.5.7-1/CONNECT-user-property-ill-formed", mqtt5, connectPkt(mqtt5, 0x02, 30, props(pUser("\xff", "v")), id), connacks(mqtt5, malformed))
}
