package server_test

// Expected outcomes and raw wire builders for the hostile-bytes corpus (hostile_test.go).

import (
	"fmt"

	"github.com/ferrymq/ferry/mqttcodec"
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
