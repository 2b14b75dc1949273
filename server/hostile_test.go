package server_test

// Issue 8, "Hostile bytes": a corpus of malformed, truncated, oversized and out-of-order packets, generated from
// valid encodings and fed over real sockets to ONE Ferry instance while a healthy paho.golang client keeps
// publishing and receiving on it. Every case names the normative statement it exercises (or, for rules without a
// tag, the section: "v5-3.8.3.1/..."), and its expected outcome comes from the specifications:
//
//   - MQTT 5.0, connected: DISCONNECT with the reason code, then close (4.13: "SHOULD send a DISCONNECT with
//     the reason code before closing"). 0x81 for what cannot be parsed (1.2 "Malformed Packet"; 2.2.2.2 a
//     property not valid for the packet; 1.5.4 bad UTF-8), 0x82 for what parses but breaks a rule (1.2
//     "Protocol Error"; "It is a Protocol Error to include X more than once"), 0x90/0x8F/0x94/0x95/0x99 where the
//     spec names those codes.
//   - MQTT 5.0, CONNECT: CONNACK with the reason code, then close (3.1.4: "MAY send a CONNACK with a Reason Code
//     of 0x80 or greater"; Ferry does, so the test pins it).
//   - MQTT 3.1/3.1.1: close, with no packet at all [MQTT-4.8.0-1] — except the CONNACK return codes 3.1.1
//     prescribes: 1 for an unacceptable protocol level [MQTT-3.1.2-2], 2 for a rejected identifier
//     [MQTT-3.1.3-8] [MQTT-3.1.3-9]; a malformed CONNECT gets no CONNACK [MQTT-3.1.4-1].
//   - Before CONNECT: close, no packet [MQTT-3.1.0-1].
//   - A packet whose Remaining Length promises more than is sent, then silence: nothing, until the CONNECT
//     timeout or the keep-alive (1.5 x) closes the connection (v5: DISCONNECT 0x8D then), never sooner.
//
// After the corpus come the tests of the bugs it found (FOUND_BUGS.md), each fixed since: timers, slowloris,
// keep-alive held by partial packets, the v3 QoS 2 window, Reason Strings beyond the client's packet size.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// --- expected outcomes -----------------------------------------------------------------------------------------

type outKind uint8

const (
	wantClose      outKind = iota // the server closes, sending nothing
	wantDisconnect                // v5 DISCONNECT with code, then close
	wantConnack                   // CONNACK with code (in the form of version connackForm), then close
	wantRefusal                   // close; a CONNACK with a failure code is allowed first (the spec says MAY)
	wantSilence                   // nothing until the CONNECT / keep-alive timeout closes (v5 connected: 0x8D)
	wantReply                     // a packet of type replyType (v5: with code); the connection stays usable
	wantIgnored                   // no answer; the connection stays usable
)

type outcome struct {
	kind        outKind
	code        mqttcodec.ReasonCode
	connackForm byte // protocol version whose CONNACK layout the answer uses
	replyType   byte
}

func closes() outcome                            { return outcome{kind: wantClose} }
func disconnects(c mqttcodec.ReasonCode) outcome { return outcome{kind: wantDisconnect, code: c} }
func connacks(v byte, c mqttcodec.ReasonCode) outcome {
	return outcome{kind: wantConnack, code: c, connackForm: v}
}
func refused() outcome { return outcome{kind: wantRefusal} }
func silent() outcome  { return outcome{kind: wantSilence} }
func replies(typ byte, c mqttcodec.ReasonCode) outcome {
	return outcome{kind: wantReply, replyType: typ, code: c}
}
func ignored() outcome { return outcome{kind: wantIgnored} }

func (o outcome) String() string {
	switch o.kind {
	case wantClose:
		return "close"
	case wantDisconnect:
		return fmt.Sprintf("DISCONNECT 0x%02X", byte(o.code))
	case wantConnack:
		return fmt.Sprintf("CONNACK(v%d) 0x%02X", o.connackForm, byte(o.code))
	case wantRefusal:
		return "close (failure CONNACK allowed)"
	case wantSilence:
		return "silence until timeout"
	case wantReply:
		return fmt.Sprintf("%s 0x%02X, still usable", mqttcodec.TypeName(o.replyType), byte(o.code))
	default:
		return "ignored, still usable"
	}
}

// phase says when the bytes are sent.
type phase uint8

const (
	beforeConnect phase = iota // first bytes on a fresh socket (a CONNECT-phase case when they are a CONNECT)
	afterConnect               // after a valid CONNECT of version was accepted
)

// hcase is one hostile input.
type hcase struct {
	name    string // "MQTT-x.y.z-n/<version>/<what>" or "<v5|v311>-<section>/<version>/<what>"
	version byte   // protocol level of the connection (of the CONNECT under test, for CONNECT-phase cases)
	phase   phase
	bytes   []byte
	want    outcome
}

// --- wire builders (raw, so that every field can be wrong) ------------------------------------------------------

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func str(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
func u16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
func vbi(v int) []byte    { return mqttcodec.AppendVarint(nil, v) }

// pkt frames a body with a correct Remaining Length.
func pkt(first byte, body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{first}, vbi(len(b)), b)
}

// props is a property block: Property Length and the properties.
func props(ps ...[]byte) []byte { b := cat(ps...); return cat(vbi(len(b)), b) }

func pByte(id mqttcodec.PropID, v byte) []byte  { return []byte{byte(id), v} }
func pU16(id mqttcodec.PropID, v uint16) []byte { return []byte{byte(id), byte(v >> 8), byte(v)} }
func pU32(id mqttcodec.PropID, v uint32) []byte {
	return []byte{byte(id), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
func pStr(id mqttcodec.PropID, s string) []byte { return cat([]byte{byte(id)}, str(s)) }
func pVar(id mqttcodec.PropID, v int) []byte    { return cat([]byte{byte(id)}, vbi(v)) }
func pUser(k, v string) []byte                  { return cat([]byte{byte(mqttcodec.PropUserProperty)}, str(k), str(v)) }
func orEmpty(v byte, pr []byte) []byte {
	if v != mqttcodec.Version5 {
		return nil
	}
	if pr == nil {
		return props()
	}
	return pr
}

// connectPkt builds a CONNECT: fixed-header flags 0, the protocol name of the level, then the given fields.
func connectPkt(v, flags byte, ka uint16, pr []byte, payload ...[]byte) []byte {
	return pkt(0x10, str(protoName(v)), []byte{v, flags}, u16(ka), orEmpty(v, pr), cat(payload...))
}

func protoName(v byte) string {
	if v == mqttcodec.Version31 {
		return "MQIsdp"
	}
	return "MQTT"
}

// publishPkt builds a PUBLISH; the packet identifier is written when the flags carry a QoS.
func publishPkt(v, flags byte, topic string, id uint16, pr []byte, payload string) []byte {
	var pid []byte
	if flags&0x06 != 0 {
		pid = u16(id)
	}
	return pkt(0x30|flags, str(topic), pid, orEmpty(v, pr), []byte(payload))
}

func subPair(filter string, opts byte) []byte { return cat(str(filter), []byte{opts}) }

func subscribePkt(v byte, id uint16, pr []byte, pairs ...[]byte) []byte {
	return pkt(0x82, u16(id), orEmpty(v, pr), cat(pairs...))
}

func unsubscribePkt(v byte, id uint16, pr []byte, filters ...string) []byte {
	var fs []byte
	for _, f := range filters {
		fs = append(fs, str(f)...)
	}
	return pkt(0xA2, u16(id), orEmpty(v, pr), fs)
}

// ackFirst is the first byte of PUBACK, PUBREC, PUBREL or PUBCOMP.
func ackFirst(typ byte) byte {
	if typ == mqttcodec.PUBREL {
		return typ<<4 | 0x02
	}
	return typ << 4
}

// validPacket is a well-formed packet of type typ for protocol level v, as a client could (or, for the
// server-only types, as a server would) send it.
func validPacket(typ, v byte) []byte {
	isV5 := v == mqttcodec.Version5
	switch typ {
	case mqttcodec.CONNECT:
		return connectPkt(v, 0x02, 30, nil, str("valid"))
	case mqttcodec.CONNACK:
		return mqttcodec.AppendConnack(nil, &mqttcodec.Connack{}, v)
	case mqttcodec.PUBLISH:
		return publishPkt(v, 0x02, "hostile/valid", 1, nil, "x")
	case mqttcodec.PUBACK, mqttcodec.PUBREC, mqttcodec.PUBREL, mqttcodec.PUBCOMP:
		return mqttcodec.AppendAck(nil, &mqttcodec.Ack{Type: typ, PacketID: 7}, v)
	case mqttcodec.SUBSCRIBE:
		return subscribePkt(v, 1, nil, subPair("hostile/valid", 0))
	case mqttcodec.SUBACK:
		return mqttcodec.AppendSuback(nil, &mqttcodec.Suback{PacketID: 1, Reasons: []mqttcodec.ReasonCode{0}}, v)
	case mqttcodec.UNSUBSCRIBE:
		return unsubscribePkt(v, 1, nil, "hostile/valid")
	case mqttcodec.UNSUBACK:
		u := mqttcodec.Unsuback{PacketID: 1}
		if isV5 {
			u.Reasons = []mqttcodec.ReasonCode{0}
		}
		return mqttcodec.AppendUnsuback(nil, &u, v)
	case mqttcodec.PINGREQ:
		return mqttcodec.AppendPingreq(nil)
	case mqttcodec.PINGRESP:
		return mqttcodec.AppendPingresp(nil)
	case mqttcodec.DISCONNECT:
		return mqttcodec.AppendDisconnect(nil, &mqttcodec.Disconnect{}, v)
	case mqttcodec.AUTH:
		return []byte{0xF0, 0}
	}
	panic("BUG: no packet type " + fmt.Sprint(typ))
}

// withFirst returns a copy of b with its first byte replaced.
func withFirst(b []byte, first byte) []byte {
	c := append([]byte(nil), b...)
	c[0] = first
	return c
}

// shortBody drops the last n bytes of a packet's body and writes the matching Remaining Length: the packet is
// whole, but a field in it runs past its end.
func shortBody(b []byte, n int) []byte {
	_, body, _, err := mqttcodec.Frame(b, 0)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return pkt(b[0], body[:len(body)-n:len(body)-n])
}

// shortStream keeps the Remaining Length and sends only part of the body: the server must wait for the rest.
func shortStream(b []byte, n int) []byte { return append([]byte(nil), b[:len(b)-n]...) }

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

// --- running a case ----------------------------------------------------------------------------------------------

// The CONNECT timeout the instance runs with, and the keep-alive (seconds) of connections whose case expects
// silence. The server's timing wheel has one-second steps and closes late rather than early, so a silent case
// waits at most silenceAtMost.
const (
	hostileConnectTimeout = 2 * time.Second
	hostileKeepAlive      = 1
	silenceAtMost         = 5 * time.Second
)

// silenceFloor is the earliest a timeout may close a silent case: ConnectTimeout after the socket opened, or one
// and a half keep-alive periods after the last whole packet [MQTT-3.1.2-22] (5.0) [MQTT-3.1.2-24] (3.1.1); the
// bytes of an unfinished packet do not count. 100 ms are left for the gap between the server's and the test's
// reference points (accept vs. send).
func silenceFloor(c hcase) time.Duration {
	if c.phase == beforeConnect {
		return hostileConnectTimeout - 100*time.Millisecond
	}
	return hostileKeepAlive*1500*time.Millisecond - 100*time.Millisecond
}

// readUntil reads the next whole packet from r before the deadline.
func (r *raw) readUntil(deadline time.Time) (mqttcodec.FixedHeader, []byte, error) {
	_ = r.nc.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	for {
		fh, body, n, err := mqttcodec.Frame(r.rd, 0)
		if err == nil {
			body = append([]byte(nil), body...)
			r.rd = r.rd[n:]
			return fh, body, nil
		}
		if !errors.Is(err, mqttcodec.ErrIncomplete) {
			return fh, nil, fmt.Errorf("server sent an unframeable packet % x: %w", r.rd, err)
		}
		m, rerr := r.nc.Read(buf)
		r.rd = append(r.rd, buf[:m]...)
		if rerr != nil && m == 0 {
			return fh, nil, rerr
		}
	}
}

func closedErr(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func describe(fh mqttcodec.FixedHeader, body []byte) string {
	return fmt.Sprintf("%s % x", mqttcodec.TypeName(fh.Type), body)
}

// hostileConnect opens a connection of version v with a successful CONNECT.
func hostileConnect(t testing.TB, addr string, v byte, id string, ka uint16) *raw {
	t.Helper()
	r := dialRaw(t, addr)
	p := mqttcodec.Connect{Version: v, CleanStart: true, KeepAlive: ka, ClientID: []byte(id)}
	r.send(mqttcodec.AppendConnect(nil, &p))
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if err != nil || fh.Type != mqttcodec.CONNACK {
		t.Fatalf("CONNECT v%d: got %s, %v", v, describe(fh, body), err)
	}
	var ack mqttcodec.Connack
	if err := ack.Decode(fh, body, v); err != nil || ack.Reason != 0 {
		t.Fatalf("CONNACK: %v, reason %s", err, ack.Reason)
	}
	return r
}

// expectEnd asserts that nothing but the close follows.
func expectEnd(t testing.TB, r *raw, within time.Duration) {
	t.Helper()
	fh, body, err := r.readUntil(time.Now().Add(within))
	if err == nil {
		t.Fatalf("got %s, want the connection closed", describe(fh, body))
	}
	if !closedErr(err) {
		t.Fatalf("connection still open after %v: %v", within, err)
	}
}

// expectUsable asserts that the connection still answers PINGREQ.
func expectUsable(t testing.TB, r *raw) {
	t.Helper()
	r.send(mqttcodec.AppendPingreq(nil))
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if err != nil || fh.Type != mqttcodec.PINGRESP {
		t.Fatalf("connection not usable: got %s, %v (want PINGRESP)", describe(fh, body), err)
	}
}

func runHostile(t *testing.T, addr string, c hcase, idx int) {
	var r *raw
	if c.phase == afterConnect {
		ka := uint16(30)
		if c.want.kind == wantSilence {
			ka = hostileKeepAlive
		}
		r = hostileConnect(t, addr, c.version, fmt.Sprintf("h%d", idx), ka)
	} else {
		r = dialRaw(t, addr)
	}
	start := time.Now()
	r.send(c.bytes)
	switch c.want.kind {
	case wantClose:
		expectEnd(t, r, 5*time.Second)
	case wantDisconnect:
		expectDisconnectCode(t, r, c.want.code)
	case wantConnack, wantRefusal:
		expectConnack(t, r, c)
	case wantSilence:
		expectSilence(t, r, c, start)
	case wantReply:
		expectReply(t, r, c)
	case wantIgnored:
		expectUsable(t, r)
	}
}

// expectDisconnectCode asserts a v5 DISCONNECT with the reason code, then the close.
func expectDisconnectCode(t *testing.T, r *raw, code mqttcodec.ReasonCode) {
	t.Helper()
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	var d mqttcodec.Disconnect
	if err != nil || fh.Type != mqttcodec.DISCONNECT || d.Decode(fh, body, mqttcodec.Version5) != nil {
		t.Fatalf("got %s, %v; want DISCONNECT 0x%02X", describe(fh, body), err, byte(code))
	}
	if d.Reason != code {
		t.Fatalf("DISCONNECT %s (%q); want 0x%02X %s", d.Reason, d.Props.ReasonString, byte(code), code)
	}
	expectEnd(t, r, 5*time.Second)
}

// expectConnack asserts the refusal of a CONNECT: the CONNACK code (or, for wantRefusal, any failure code or
// none at all), then the close.
func expectConnack(t *testing.T, r *raw, c hcase) {
	t.Helper()
	w := c.want
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if w.kind == wantRefusal && closedErr(err) {
		return
	}
	form := w.connackForm
	if w.kind == wantRefusal {
		form = c.version
	}
	var a mqttcodec.Connack
	if err != nil || fh.Type != mqttcodec.CONNACK || a.Decode(fh, body, form) != nil {
		t.Fatalf("got %s, %v; want %s", describe(fh, body), err, w)
	}
	if w.kind == wantConnack && a.Reason != w.code || w.kind == wantRefusal && a.Reason == 0 || a.SessionPresent {
		t.Fatalf("CONNACK reason 0x%02X present=%v; want %s", byte(a.Reason), a.SessionPresent, w)
	}
	expectEnd(t, r, 5*time.Second)
}

// expectSilence asserts that nothing comes until a timeout closes the connection, no sooner than silenceFloor;
// a connected v5 client is told 0x8D Keep Alive timeout first.
func expectSilence(t *testing.T, r *raw, c hcase, sent time.Time) {
	t.Helper()
	fh, body, err := r.readUntil(sent.Add(silenceAtMost))
	if err == nil && c.phase == afterConnect && c.version == mqttcodec.Version5 && fh.Type == mqttcodec.DISCONNECT {
		var d mqttcodec.Disconnect
		if d.Decode(fh, body, mqttcodec.Version5) != nil || d.Reason != mqttcodec.KeepAliveTimeout {
			t.Fatalf("got %s; want silence, then DISCONNECT 0x8D at the keep-alive timeout", describe(fh, body))
		}
		fh, body, err = r.readUntil(time.Now().Add(2 * time.Second))
	}
	took := time.Since(sent)
	if err == nil {
		t.Fatalf("got %s after %v; want silence until the timeout", describe(fh, body), took)
	}
	if !closedErr(err) {
		t.Fatalf("not closed after %v: %v", took, err)
	}
	if took < silenceFloor(c) {
		t.Fatalf("closed after %v, before the timeout (%v)", took, silenceFloor(c)+100*time.Millisecond)
	}
}

// expectReply asserts an ack of the expected type and reason code, and that the connection stays usable.
func expectReply(t *testing.T, r *raw, c hcase) {
	t.Helper()
	w := c.want
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if err != nil || fh.Type != w.replyType {
		t.Fatalf("got %s, %v; want %s", describe(fh, body), err, w)
	}
	var a mqttcodec.Ack
	if err := a.Decode(fh, body, c.version); err != nil || a.Reason != w.code {
		t.Fatalf("%s reason 0x%02X (%v); want %s", mqttcodec.TypeName(fh.Type), byte(a.Reason), err, w)
	}
	expectUsable(t, r)
}

// --- the test ----------------------------------------------------------------------------------------------------

// healthyTraffic publishes QoS 1 messages on its own topic and checks each comes back, until stop closes.
func healthyTraffic(c *v5, stop <-chan struct{}) (ok, failed int, firstErr error) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		payload := fmt.Sprintf("tick-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Publish(ctx, &paho.Publish{Topic: "healthy/tick", QoS: 1, Payload: []byte(payload)})
		cancel()
		if err == nil {
			select {
			case m := <-c.msgs:
				if string(m.Payload) != payload {
					err = fmt.Errorf("got %q, want %q", m.Payload, payload)
				}
			case <-time.After(5 * time.Second):
				err = fmt.Errorf("%s not received", payload)
			}
		}
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		ok++
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// waitGoroutines waits until at most n goroutines run, or d passes; it returns the last count.
func waitGoroutines(n int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		g := runtime.NumGoroutine()
		if g <= n || time.Now().After(deadline) {
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestHostileCorpus(t *testing.T) {
	corpus := hostileCorpus()
	if len(corpus) < 200 {
		t.Fatalf("corpus has %d cases, want at least 200", len(corpus))
	}
	seen := map[string]bool{}
	types := map[byte]bool{}
	for _, c := range corpus {
		if seen[c.name] {
			t.Fatalf("duplicate case name %s", c.name)
		}
		seen[c.name] = true
		if len(c.bytes) > 0 {
			types[c.bytes[0]>>4] = true
		}
	}
	if len(types) != 16 { // the 15 packet types and the reserved type 0
		t.Fatalf("corpus covers %d packet types, want 16", len(types))
	}

	f := startFerry(t, server.ConnectTimeout(hostileConnectTimeout))
	healthy := dialV5(t, f.addr, &paho.Connect{ClientID: "hostile-healthy", CleanStart: true})
	healthy.sub(t, paho.SubscribeOptions{Topic: "healthy/#", QoS: 1})

	// Warm up both event loops, the Kafka path and the pools, so the baseline holds what stays allocated.
	for i := 0; i < 8; i++ {
		r := hostileConnect(t, f.addr, mqttcodec.Version5, fmt.Sprintf("warm%d", i), 30)
		r.send(publishPkt(5, 0x02, "hostile/warm", 1, nil, "w"))
		if fh, _, err := r.readUntil(time.Now().Add(5 * time.Second)); err != nil || fh.Type != mqttcodec.PUBACK {
			t.Fatalf("warm-up publish: %s %v", mqttcodec.TypeName(fh.Type), err)
		}
		r.send([]byte{0xE0, 0})
		expectEnd(t, r, 5*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	baseG := runtime.NumGoroutine()
	baseHeap := heapAfterGC()

	stop := make(chan struct{})
	var hOK, hFailed int
	var hErr error
	var hDone sync.WaitGroup
	hDone.Add(1)
	go func() { defer hDone.Done(); hOK, hFailed, hErr = healthyTraffic(healthy, stop) }()

	start := time.Now()
	var passed atomic.Int64
	sem := make(chan struct{}, 48)
	var wg sync.WaitGroup
	t.Run("cases", func(t *testing.T) {
		for i, c := range corpus {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				// Subtests may run from several goroutines at once; each waits here for its own case.
				if t.Run(c.name, func(t *testing.T) { runHostile(t, f.addr, c, i) }) {
					passed.Add(1)
				}
			}()
		}
		wg.Wait()
	})
	close(stop)
	hDone.Wait()
	t.Logf("corpus: %d cases, %d passed, in %v; healthy client: %d round trips, %d failed",
		len(corpus), passed.Load(), time.Since(start).Round(time.Millisecond), hOK, hFailed)
	if hFailed > 0 || hOK == 0 {
		t.Errorf("healthy client during the corpus: %d ok, %d failed, first error %v", hOK, hFailed, hErr)
	}

	// The healthy client still works afterwards.
	healthy.pub(t, &paho.Publish{Topic: "healthy/after", QoS: 1, Payload: []byte("alive")})
	if m := healthy.next(t); string(m.Payload) != "alive" {
		t.Fatalf("healthy client got %q after the corpus", m.Payload)
	}

	// Every hostile connection is gone: no goroutine or heap is left behind by them.
	const gMargin, heapMargin = 8, 4 << 20
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m := f.srv.Metrics().Snapshot()
		if m.ConnsCurrent == 1 && m.SessionsConnected == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the corpus: %d connections, %d sessions connected; want only the healthy client's",
				m.ConnsCurrent, m.SessionsConnected)
			break
		}
	}
	g := waitGoroutines(baseG+gMargin, 10*time.Second)
	heap := heapAfterGC()
	t.Logf("goroutines: baseline %d, after %d; heap after GC: baseline %.1f MiB, after %.1f MiB",
		baseG, g, float64(baseHeap)/(1<<20), float64(heap)/(1<<20))
	if g > baseG+gMargin {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutine leak: %d goroutines, baseline %d\n%s", g, baseG, buf[:runtime.Stack(buf, true)])
	}
	if heap > baseHeap+heapMargin {
		t.Errorf("heap grew from %d to %d bytes (margin %d)", baseHeap, heap, heapMargin)
	}
}

// --- the bugs the corpus found (FOUND_BUGS.md), fixed since ---------------------------------------------------

// [MQTT-3.6.4-1] (3.1.1): QoS 2 messages that got PUBREC must not stop the server from reading their PUBREL.
func TestHostileV3QoS2WindowReleases(t *testing.T) {
	f := startFerry(t, server.ReceiveMaximum(4))
	for _, v := range []byte{mqttcodec.Version31, mqttcodec.Version311} {
		r := hostileConnect(t, f.addr, v, fmt.Sprintf("q2win%d", v), 30)
		for id := uint16(1); id <= 4; id++ {
			r.send(publishPkt(v, 0x04, "hostile/q2", id, nil, "x"))
		}
		for id := uint16(1); id <= 4; id++ {
			if fh, body, err := r.readUntil(time.Now().Add(5 * time.Second)); err != nil || fh.Type != mqttcodec.PUBREC {
				t.Fatalf("got %s, %v; want PUBREC %d", describe(fh, body), err, id)
			}
		}
		r.send(pkt(0x62, u16(1))) // PUBREL 1
		fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
		if err != nil || fh.Type != mqttcodec.PUBCOMP {
			t.Fatalf("MQTT-3.6.4-1 v%d: PUBREL not answered: got %s, %v; want PUBCOMP 1", v, describe(fh, body), err)
		}
		expectUsable(t, r)
	}
}

// [MQTT-3.1.2-22]: never disconnect before 1.5 × Keep Alive; ConnectTimeout never closes early either.
func TestHostileTimeoutsNotEarly(t *testing.T) {
	t.Parallel() // slow and timing-bound: runs after the corpus and its leak check
	f := startFerry(t, server.ConnectTimeout(2*time.Second))
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ { // staggered, so some start late in a second of the loop's stale clock
		wg.Add(2)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 170 * time.Millisecond)
			t.Run(fmt.Sprintf("MQTT-3.1.2-22/keep-alive-1s/%d", i), func(t *testing.T) {
				r := hostileConnect(t, f.addr, mqttcodec.Version5, fmt.Sprintf("early%d", i), 1)
				start := time.Now()
				fh, body, err := r.readUntil(start.Add(5 * time.Second))
				if took := time.Since(start); took < 1500*time.Millisecond {
					t.Errorf("disconnected %v after the last packet (got %s, %v); keep-alive 1 s allows 1.5 s", took, describe(fh, body), err)
				}
			})
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 170 * time.Millisecond)
			t.Run(fmt.Sprintf("connect-timeout-2s/%d", i), func(t *testing.T) {
				r := dialRaw(t, f.addr)
				start := time.Now()
				expectEnd(t, r, 5*time.Second)
				if took := time.Since(start); took < 2*time.Second {
					t.Errorf("closed %v after the connection opened; ConnectTimeout is 2 s", took)
				}
			})
		}()
	}
	wg.Wait()
}

// A CONNECT that never completes is closed ConnectTimeout after the socket opened, however slowly it trickles in.
func TestHostileSlowlorisConnect(t *testing.T) {
	t.Parallel() // slow and timing-bound: runs after the corpus and its leak check
	f := startFerry(t, server.ConnectTimeout(2*time.Second))
	r := dialRaw(t, f.addr)
	start := time.Now()
	b := connectPkt(mqttcodec.Version311, 0x02, 30, nil, str("slowloris-with-a-long-client-identifier"))
	for i := 0; i < len(b)-1; i++ {
		if _, err := r.nc.Write(b[i : i+1]); err != nil {
			break // closed: good
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("a CONNECT dribbled one byte per 300 ms is still open %v after the socket opened (ConnectTimeout 2 s)", time.Since(start))
		}
		time.Sleep(300 * time.Millisecond)
	}
	expectEnd(t, r, 3*time.Second)
}

// [MQTT-3.1.2-22]: only whole packets count for keep-alive; a packet that never completes does not hold it open.
func TestHostileKeepAliveNotHeldByPartialPacket(t *testing.T) {
	t.Parallel() // slow and timing-bound: runs after the corpus and its leak check
	f := startFerry(t)
	r := hostileConnect(t, f.addr, mqttcodec.Version5, "dribble", 1)
	start := time.Now()
	r.send([]byte{0x30, 100}) // a PUBLISH of 100 bytes, never finished
	for i := 0; i < 98; i++ {
		if _, err := r.nc.Write([]byte{'x'}); err != nil {
			break // closed: good
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("MQTT-3.1.2-22: no whole packet for %v with keep-alive 1 s, connection still open", time.Since(start))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// [MQTT-3.1.2-24] [MQTT-3.14.2-3] [MQTT-3.4.2-2]: a Reason String is dropped rather than exceed the client's Maximum Packet Size.
func TestHostileReasonStringWithinClientMaximumPacketSize(t *testing.T) {
	f := startFerry(t)
	connect := func(id string) *raw {
		r := dialRaw(t, f.addr)
		p := mqttcodec.Connect{Version: 5, CleanStart: true, KeepAlive: 30, ClientID: []byte(id)}
		p.Props.MaximumPacketSize = 20
		p.Props.Set(mqttcodec.PropMaximumPacketSize)
		r.send(mqttcodec.AppendConnect(nil, &p))
		if fh, _, err := r.readUntil(time.Now().Add(5 * time.Second)); err != nil || fh.Type != mqttcodec.CONNACK {
			t.Fatal(err)
		}
		return r
	}
	r := connect("small1")
	r.send([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	var d mqttcodec.Disconnect
	if size := fh.HeaderLen + len(body); err != nil || fh.Type != mqttcodec.DISCONNECT || size > 20 ||
		d.Decode(fh, body, 5) != nil || d.Reason != mqttcodec.MalformedPacket {
		t.Errorf("MQTT-3.14.2-3: DISCONNECT of %d bytes, reason 0x%02X (%v) to a client whose Maximum Packet Size is 20", size, byte(d.Reason), err)
	}
	r = connect("small2")
	r.send(publishPkt(5, 0x02, "a", 3, props(pByte(mqttcodec.PropPayloadFormat, 1)), "\xff"))
	fh, body, err = r.readUntil(time.Now().Add(5 * time.Second))
	if size := fh.HeaderLen + len(body); err != nil || fh.Type != mqttcodec.PUBACK || size > 20 {
		t.Errorf("MQTT-3.4.2-2: PUBACK of %d bytes (%v) to a client whose Maximum Packet Size is 20", size, err)
	}
}
