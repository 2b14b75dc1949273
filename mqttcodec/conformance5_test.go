package mqttcodec

import (
	"bytes"
	"testing"
)

// Tests named after the normative statements of MQTT 5.0 that a codec can
// check. CONFORMANCE.md maps every statement of chapters 1-3, 4.7 and
// 4.8.2 to one of these subtests or to the server; TestConformanceDocument
// keeps the two in step.

// connect5 builds a v5 CONNECT with the given flags, CONNECT properties
// block and payload fields.
func connect5(flags byte, propBlock []byte, payload ...[]byte) []byte {
	return pkt(0x10, str("MQTT"), b(5, flags, 0, 60), propBlock, cat(payload...))
}

// mustDecode decodes wire for version and fails on error.
func mustDecode(t *testing.T, wire []byte, version byte) any {
	t.Helper()
	p, err := decodeWire(t, wire, version)
	if err != nil {
		t.Fatalf("decode % x: %v", wire, err)
	}
	return p
}

// mustFail decodes wire for version and checks the reason and message.
func mustFail(t *testing.T, wire []byte, version byte, r ReasonCode, parts ...string) {
	t.Helper()
	_, err := decodeWire(t, wire, version)
	wantReason(t, err, r, parts...)
}

// headerFail checks ReadFixedHeader refuses the first byte.
func headerFail(t *testing.T, first byte, r ReasonCode, parts ...string) {
	t.Helper()
	_, err := ReadFixedHeader([]byte{first, 0}, 0)
	wantReason(t, err, r, parts...)
}

// Byte sequences that break the UTF-8 rules.
var badUTF8 = []struct {
	name  string
	bytes []byte
	what  string
}{
	{"surrogate-d800", []byte{'a', 0xED, 0xA0, 0x80}, "not well-formed utf-8 at byte 1"},
	{"surrogate-dfff", []byte{0xED, 0xBF, 0xBF}, "not well-formed utf-8 at byte 0"},
	{"overlong-slash", []byte{'a', 0xC0, 0xAF}, "not well-formed utf-8"},
	{"lone-continuation", []byte{0x80}, "not well-formed utf-8"},
	{"truncated-sequence", []byte{'x', 0xE2, 0x82}, "not well-formed utf-8"},
	{"above-u10ffff", []byte{0xF4, 0x90, 0x80, 0x80}, "not well-formed utf-8"},
	{"invalid-byte-ff", []byte{0xFF}, "not well-formed utf-8"},
	{"nul", []byte{'a', 0, 'b'}, "u+0000 at byte 1"},
}

func TestConformance5(t *testing.T) {
	const v = Version5

	t.Run("MQTT-1.5.4-1/v5/ill-formed-utf-8-is-malformed", func(t *testing.T) {
		for _, c := range badUTF8[:len(badUTF8)-1] {
			mustFail(t, pkt(0x30, str(string(c.bytes)), b(0)), v, MalformedPacket, "PUBLISH", "topic name", c.what)
			mustFail(t, connect5(0x02, b(0), str(string(c.bytes))), v, MalformedPacket, "client identifier", c.what)
			mustFail(t, pkt(0x82, b(0, 1, 0), str(string(c.bytes)), b(0)), v, MalformedPacket, "topic filter 0", c.what)
			mustFail(t, pkt(0x30, str("t"), props(b(0x03), str(string(c.bytes)))), v, MalformedPacket, "content type", c.what)
		}
	})
	t.Run("MQTT-1.5.4-2/v5/u+0000-is-malformed", func(t *testing.T) {
		nul := string([]byte{'a', 0})
		mustFail(t, pkt(0x30, str(nul), b(0)), v, MalformedPacket, "topic name", "u+0000 at byte 1")
		mustFail(t, connect5(0x82, b(0), str("c"), str(nul)), v, MalformedPacket, "user name", "u+0000")
		mustFail(t, pkt(0xE0, b(0), props(b(0x1F), str(nul))), v, MalformedPacket, "reason string", "u+0000")
		// Binary data may hold zero bytes: a password is not a string.
		mustDecode(t, connect5(0xC2, b(0), str("c"), str("u"), str(nul)), v)
	})
	t.Run("MQTT-1.5.4-3/v5/byte-order-mark-kept", func(t *testing.T) {
		bom := "\xEF\xBB\xBFa/b"
		p := mustDecode(t, pkt(0x30, str(bom), b(0)), v).(*Publish)
		if string(p.Topic) != bom {
			t.Fatalf("topic % x, want the BOM kept", p.Topic)
		}
		s := mustDecode(t, pkt(0x82, b(0, 1, 0), str(bom), b(0)), v).(*Subscribe)
		if string(s.Subs[0].Filter) != bom {
			t.Fatalf("filter % x, want the BOM kept", s.Subs[0].Filter)
		}
	})
	t.Run("MQTT-1.5.5-1/v5/varint-minimum-bytes", func(t *testing.T) {
		for _, c := range []struct{ v, n int }{{0, 1}, {127, 1}, {128, 2}, {16383, 2}, {16384, 3}, {2097151, 3}, {2097152, 4}, {MaxRemaining, 4}} {
			if got := len(AppendVarint(nil, c.v)); got != c.n {
				t.Fatalf("AppendVarint(%d) is %d bytes, want %d", c.v, got, c.n)
			}
		}
		// Encoders use it for the remaining length and properties.
		p := &Publish{Topic: []byte("t"), Payload: make([]byte, 124)} // 3 + 1 + 124 = 128
		if enc := AppendPublish(nil, p, v); enc[1] != 0x80 || enc[2] != 0x01 {
			t.Fatalf("remaining length 128 encoded as % x", enc[1:3])
		}
	})
	t.Run("MQTT-1.5.7-1/v5/user-property-pair-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("t"), props(b(0x26), str("\xff"), str("v"))), v, MalformedPacket, "user property", "not well-formed utf-8")
		mustFail(t, pkt(0x30, str("t"), props(b(0x26), str("k"), str("a\x00"))), v, MalformedPacket, "user property value", "u+0000")
	})
	t.Run("MQTT-2.1.3-1/v5/reserved-flags", func(t *testing.T) {
		for typ := byte(1); typ <= 15; typ++ {
			if typ == PUBLISH {
				continue
			}
			want := requiredFlags[typ]
			for f := byte(0); f < 16; f++ {
				_, err := ReadFixedHeader([]byte{typ<<4 | f, 0}, 0)
				if f == want && err != nil {
					t.Fatalf("%s flags %04b: %v", TypeName(typ), f, err)
				}
				if f != want {
					wantReason(t, err, MalformedPacket, TypeName(typ), "fixed header flags")
				}
			}
		}
	})
	t.Run("MQTT-2.2.1-2/v5/qos0-has-no-packet-identifier", func(t *testing.T) {
		p := &Publish{Topic: []byte("t"), PacketID: 9, Payload: []byte("x")}
		enc := AppendPublish(nil, p, v)
		if !bytes.Equal(enc, h(`30 05 00 01 74 00 78`)) {
			t.Fatalf("qos 0 publish encoded as % x", enc)
		}
		// On decode the two bytes after the topic are not an identifier.
		d := mustDecode(t, h(`30 06 00 01 74 00 00 09`), v).(*Publish)
		if d.PacketID != 0 || !bytes.Equal(d.Payload, []byte{0, 9}) {
			t.Fatalf("qos 0 decoded %+v", d)
		}
	})
	t.Run("MQTT-2.2.1-3/v5/client-packet-identifier-non-zero", func(t *testing.T) {
		mustFail(t, h(`32 06 00 01 74 00 00 00`), v, ProtocolError, "PUBLISH", "packet identifier is 0")
		mustFail(t, h(`82 07 00 00 00 00 01 74 00`), v, ProtocolError, "SUBSCRIBE", "packet identifier is 0")
		mustFail(t, h(`a2 06 00 00 00 00 01 74`), v, ProtocolError, "UNSUBSCRIBE", "packet identifier is 0")
	})
	t.Run("MQTT-2.2.1-4/v5/server-packet-identifier-non-zero", func(t *testing.T) {
		mustFail(t, h(`34 06 00 01 74 00 00 00`), v, ProtocolError, "PUBLISH", "packet identifier is 0 on a qos 2 message")
	})
	t.Run("MQTT-2.2.2-1/v5/no-properties-is-length-zero", func(t *testing.T) {
		for _, enc := range [][]byte{
			AppendPublish(nil, &Publish{Topic: []byte("t")}, v),
			AppendConnect(nil, &Connect{Version: v, ClientID: []byte("c")}),
			AppendConnack(nil, &Connack{}, v),
			AppendSubscribe(nil, &Subscribe{PacketID: 1, Subs: []Subscription{{Filter: []byte("t")}}}, v),
			AppendSuback(nil, &Suback{PacketID: 1, Reasons: []ReasonCode{0}}, v),
			AppendUnsubscribe(nil, &Unsubscribe{PacketID: 1, Filters: [][]byte{[]byte("t")}}, v),
			AppendUnsuback(nil, &Unsuback{PacketID: 1, Reasons: []ReasonCode{0}}, v),
		} {
			if _, err := decodeWire(t, enc, v); err != nil {
				t.Fatal(err)
			}
			if bytes.IndexByte(enc, 0) < 0 {
				t.Fatalf("% x has no zero property length", enc)
			}
		}
		// A CONNACK without its property length is malformed.
		mustFail(t, h(`20 02 00 00`), v, MalformedPacket, "CONNACK", "property length")
		mustFail(t, h(`82 06 00 01 00 01 74 00`), v, MalformedPacket, "SUBSCRIBE")
	})
	t.Run("MQTT-3.1.2-1/v5/protocol-name", func(t *testing.T) {
		mustFail(t, pkt(0x10, str("MQTX"), b(5, 2, 0, 0, 0), str("c")), v, ProtocolError, "protocol name \"MQTX\"")
		mustFail(t, pkt(0x10, str("mqtt"), b(5, 2, 0, 0, 0), str("c")), v, ProtocolError, "protocol name")
		mustFail(t, pkt(0x10, str("MQIsdp"), b(5, 2, 0, 0, 0), str("c")), v, UnsupportedProtocolVersion, "MQIsdp")
	})
	t.Run("MQTT-3.1.2-2/v5/unsupported-protocol-version", func(t *testing.T) {
		for _, level := range []byte{0, 1, 2, 3, 6, 7, 255} {
			w := pkt(0x10, str("MQTT"), b(level, 2, 0, 0, 0), str("c"))
			fh, body, _, _ := Frame(w, 0)
			var c Connect
			err := c.Decode(fh, body)
			wantReason(t, err, UnsupportedProtocolVersion, "protocol level "+itoa(int(level)))
			if c.Version != level || string(c.ProtocolName) != "MQTT" {
				t.Fatalf("after 0x84 the server needs the level: got %d %q", c.Version, c.ProtocolName)
			}
		}
	})
	t.Run("MQTT-3.1.2-3/v5/reserved-connect-flag", func(t *testing.T) {
		mustFail(t, connect5(0x03, b(0), str("c")), v, MalformedPacket, "reserved bit 0")
	})
	t.Run("MQTT-3.1.2-9/v5/will-fields-present", func(t *testing.T) {
		ok := connect5(0x06, b(0), str("c"), b(0), str("w"), str("x"))
		mustDecode(t, ok, v)
		mustFail(t, connect5(0x06, b(0), str("c")), v, MalformedPacket, "will properties")
		mustFail(t, connect5(0x06, b(0), str("c"), b(0)), v, MalformedPacket, "will topic", "runs past the end")
		mustFail(t, connect5(0x06, b(0), str("c"), b(0), str("w")), v, MalformedPacket, "will payload", "runs past the end")
	})
	t.Run("MQTT-3.1.2-11/v5/will-qos-without-will", func(t *testing.T) {
		mustFail(t, connect5(0x0A, b(0), str("c")), v, MalformedPacket, "will qos is 1 without the will flag")
		mustFail(t, connect5(0x12, b(0), str("c")), v, MalformedPacket, "will qos is 2 without the will flag")
	})
	t.Run("MQTT-3.1.2-12/v5/will-qos-3", func(t *testing.T) {
		mustFail(t, connect5(0x1E, b(0), str("c"), b(0), str("w"), str("x")), v, MalformedPacket, "will qos is 3")
		for q := byte(0); q < 3; q++ {
			c := mustDecode(t, connect5(0x06|q<<3, b(0), str("c"), b(0), str("w"), str("x")), v).(*Connect)
			if c.WillQoS != q {
				t.Fatalf("will qos %d decoded as %d", q, c.WillQoS)
			}
		}
	})
	t.Run("MQTT-3.1.2-13/v5/will-retain-without-will", func(t *testing.T) {
		mustFail(t, connect5(0x22, b(0), str("c")), v, MalformedPacket, "will retain is set without the will flag")
	})
	t.Run("MQTT-3.1.2-16/v5/no-user-name-without-flag", func(t *testing.T) {
		mustFail(t, connect5(0x02, b(0), str("c"), str("u")), v, MalformedPacket, "3 bytes after the end of the payload")
	})
	t.Run("MQTT-3.1.2-17/v5/user-name-with-flag", func(t *testing.T) {
		mustFail(t, connect5(0x82, b(0), str("c")), v, MalformedPacket, "user name", "runs past the end")
		c := mustDecode(t, connect5(0x82, b(0), str("c"), str("")), v).(*Connect)
		if !c.UsernameFlag || c.Username == nil || len(c.Username) != 0 {
			t.Fatalf("empty user name: %+v", c)
		}
	})
	t.Run("MQTT-3.1.2-18/v5/no-password-without-flag", func(t *testing.T) {
		mustFail(t, connect5(0x82, b(0), str("c"), str("u"), str("p")), v, MalformedPacket, "bytes after the end of the payload")
	})
	t.Run("MQTT-3.1.2-19/v5/password-with-flag", func(t *testing.T) {
		mustFail(t, connect5(0xC2, b(0), str("c"), str("u")), v, MalformedPacket, "password", "runs past the end")
		// v5 allows a password without a user name.
		mustDecode(t, connect5(0x42, b(0), str("c"), str("p")), v)
	})
	t.Run("MQTT-3.1.3-1/v5/payload-order", func(t *testing.T) {
		c := mustDecode(t, connect5(0xC6, b(0), str("id"), props(b(0x18, 0, 0, 0, 1)), str("wt"), str("wp"), str("un"), str("pw")), v).(*Connect)
		got := string(c.ClientID) + "," + string(c.WillTopic) + "," + string(c.WillPayload) + "," + string(c.Username) + "," + string(c.Password)
		if got != "id,wt,wp,un,pw" || c.WillProps.WillDelay != 1 {
			t.Fatalf("payload decoded as %s (will delay %d)", got, c.WillProps.WillDelay)
		}
	})
	t.Run("MQTT-3.1.3-3/v5/client-identifier-present", func(t *testing.T) {
		mustFail(t, connect5(0x02, b(0)), v, MalformedPacket, "client identifier", "runs past the end")
		mustFail(t, connect5(0x02, b(0), b(0)), v, MalformedPacket, "client identifier")
	})
	t.Run("MQTT-3.1.3-4/v5/client-identifier-utf-8", func(t *testing.T) {
		mustFail(t, connect5(0x02, b(0), str("a\xC0\x80")), v, MalformedPacket, "client identifier", "not well-formed utf-8 at byte 1")
	})
	t.Run("MQTT-3.1.3-5/v5/client-identifiers-allowed", func(t *testing.T) {
		for _, id := range []string{"a", "0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", "dev/ü-1 with spaces", ""} {
			c := mustDecode(t, connect5(0x00, b(0), str(id)), v).(*Connect)
			if string(c.ClientID) != id {
				t.Fatalf("client id %q decoded as %q", id, c.ClientID)
			}
		}
	})
	t.Run("MQTT-3.1.3-11/v5/will-topic-utf-8", func(t *testing.T) {
		mustFail(t, connect5(0x06, b(0), str("c"), b(0), str("\xED\xA0\x80"), str("x")), v, MalformedPacket, "will topic", "not well-formed utf-8")
		mustFail(t, connect5(0x06, b(0), str("c"), b(0), str("a/#"), str("x")), v, TopicNameInvalid, "will topic", "wildcard '#'")
	})
	t.Run("MQTT-3.1.3-12/v5/user-name-utf-8", func(t *testing.T) {
		mustFail(t, connect5(0x82, b(0), str("c"), str("\xFF")), v, MalformedPacket, "user name", "not well-formed utf-8")
	})
	t.Run("MQTT-3.1.4-1/v5/connect-format-validated", func(t *testing.T) {
		// A sample of CONNECT malformations, each an *Error the server
		// answers with CONNACK 0x81/0x82 or closes on.
		mustFail(t, pkt(0x10, b(0)), v, MalformedPacket, "protocol name")
		mustFail(t, pkt(0x10, str("MQTT")), v, MalformedPacket, "protocol level")
		mustFail(t, pkt(0x10, str("MQTT"), b(5)), v, MalformedPacket, "connect flags")
		mustFail(t, pkt(0x10, str("MQTT"), b(5, 2, 0)), v, MalformedPacket, "keep alive")
		mustFail(t, pkt(0x10, str("MQTT"), b(5, 2, 0, 0)), v, MalformedPacket, "properties")
		mustFail(t, connect5(0x02, props(b(0x01, 1)), str("c")), v, MalformedPacket, "payload format indicator", "not allowed in CONNECT")
		mustFail(t, connect5(0x02, props(b(0x21, 0, 0)), str("c")), v, ProtocolError, "receive maximum is 0")
		mustFail(t, connect5(0x02, props(b(0x27, 0, 0, 0, 0)), str("c")), v, ProtocolError, "maximum packet size is 0")
		mustFail(t, connect5(0x02, props(b(0x17, 2)), str("c")), v, ProtocolError, "request problem information is 2")
		mustFail(t, connect5(0x02, props(b(0x19, 7)), str("c")), v, ProtocolError, "request response information is 7")
		mustFail(t, connect5(0x02, props(b(0x16), str("x")), str("c")), v, ProtocolError, "authentication data without an authentication method")
		mustFail(t, connect5(0x02, props(b(0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2)), str("c")), v, ProtocolError, "session expiry interval included more than once")
		mustFail(t, connect5(0x06, b(0), str("c"), props(b(0x23, 0, 1)), str("w"), str("x")), v, MalformedPacket, "will properties", "topic alias", "not allowed in the will properties")
		mustFail(t, connect5(0x06, b(0), str("c"), props(b(0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1)), str("w"), str("x")), v, ProtocolError, "will delay interval included more than once")
	})
	t.Run("MQTT-3.1.2-24/v5/publish-size-against-maximum-packet-size", func(t *testing.T) {
		// The server compares PublishSize with the client's Maximum Packet
		// Size before encoding; it must be the exact encoded size.
		for _, f := range fixtures {
			p, ok := f.want.(*Publish)
			if !ok {
				continue
			}
			for _, level := range f.versions {
				if got, want := PublishSize(p, level), len(AppendPublish(nil, p, level)); got != want {
					t.Fatalf("%s level %d: PublishSize %d, encoded %d", f.name, level, got, want)
				}
			}
		}
	})
	t.Run("MQTT-3.2.2-1/v5/connack-reserved-flags", func(t *testing.T) {
		for _, f := range []byte{0x02, 0x80, 0xFE, 0x03} {
			mustFail(t, b(0x20, 3, f, 0, 0), v, MalformedPacket, "CONNACK", "reserved bits 7-1")
		}
	})
	t.Run("MQTT-3.2.2-6/v5/session-present-only-on-success", func(t *testing.T) {
		mustFail(t, h(`20 03 01 80 00`), v, ProtocolError, "session present is set with reason code 0x80")
	})
	t.Run("MQTT-3.2.2-8/v5/connack-reason-codes", func(t *testing.T) {
		for r := 0; r < 256; r++ {
			_, err := decodeWire(t, b(0x20, 3, 0, byte(r), 0), v)
			if connackReasons.has(ReasonCode(r)) != (err == nil) {
				t.Fatalf("CONNACK reason %#x: %v", r, err)
			}
			if err != nil {
				wantReason(t, err, MalformedPacket, "not a CONNACK reason code")
			}
		}
	})
	t.Run("MQTT-3.2.2-15/v5/maximum-packet-size-guard", func(t *testing.T) {
		// What a client must not send, the server refuses from the fixed
		// header alone, before buffering the body (DISCONNECT 0x95).
		hdr := h(`30 ff ff 03`) // PUBLISH with a remaining length of 65535
		fh, err := ReadFixedHeader(hdr, 65536)
		wantReason(t, err, PacketTooLarge, "packet of 65539 bytes exceeds the maximum packet size of 65536")
		if fh.Type != PUBLISH {
			t.Fatalf("%+v", fh)
		}
		if _, err := ReadFixedHeader(hdr, 65539); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("MQTT-3.3.1-2/v5/dup-zero-for-qos0", func(t *testing.T) {
		mustFail(t, h(`38 04 00 01 74 00`), v, ProtocolError, "dup flag set on a qos 0 message")
	})
	t.Run("MQTT-3.3.1-4/v5/qos-bits-not-both-set", func(t *testing.T) {
		headerFail(t, 0x36, MalformedPacket, "PUBLISH", "qos 3")
		headerFail(t, 0x3F, MalformedPacket, "qos 3")
	})
	t.Run("MQTT-3.3.2-1/v5/topic-name-utf-8-first", func(t *testing.T) {
		mustFail(t, h(`30 01 00`), v, MalformedPacket, "topic name", "runs past the end")
		mustFail(t, pkt(0x30, str("\xC3"), b(0)), v, MalformedPacket, "topic name", "not well-formed utf-8 at byte 0")
	})
	t.Run("MQTT-3.3.2-2/v5/topic-name-no-wildcards", func(t *testing.T) {
		for _, topic := range []string{"a/+", "#", "a/b#", "+/x", "sport/tennis/#"} {
			mustFail(t, pkt(0x30, str(topic), b(0)), v, TopicNameInvalid, "topic name", "wildcard")
		}
	})
	t.Run("MQTT-3.3.2-8/v5/topic-alias-not-zero", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("t"), props(b(0x23, 0, 0))), v, TopicAliasInvalid, "topic alias is 0")
		mustFail(t, pkt(0x30, str(""), props()), v, ProtocolError, "topic name: is empty and there is no topic alias")
	})
	t.Run("MQTT-3.3.2-13/v5/response-topic-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("t"), props(b(0x08), str("\xFF"))), v, MalformedPacket, "response topic", "not well-formed utf-8")
	})
	t.Run("MQTT-3.3.2-14/v5/response-topic-no-wildcards", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("t"), props(b(0x08), str("reply/+"))), v, ProtocolError, "response topic", "wildcard '+'")
		mustFail(t, connect5(0x06, b(0), str("c"), props(b(0x08), str("#")), str("w"), str("x")), v, ProtocolError, "will properties", "response topic")
	})
	t.Run("MQTT-3.3.2-17/v5/user-properties-unaltered", func(t *testing.T) {
		in := pkt(0x30, str("t"), props(b(0x26), str("z"), str("1"), b(0x26), str("a"), str(""), b(0x26), str("z"), str("1")))
		p := mustDecode(t, in, v).(*Publish)
		if out := AppendPublish(nil, p, v); !bytes.Equal(out, in) {
			t.Fatalf("re-encoded % x, want % x", out, in)
		}
	})
	t.Run("MQTT-3.3.2-18/v5/user-property-order-kept", func(t *testing.T) {
		in := pkt(0x30, str("t"), props(b(0x26), str("k"), str("3"), b(0x26), str("k"), str("1"), b(0x26), str("j"), str("2")))
		p := mustDecode(t, in, v).(*Publish)
		var got string
		for _, u := range p.Props.User {
			got += string(u.Key) + "=" + string(u.Value) + ";"
		}
		if got != "k=3;k=1;j=2;" {
			t.Fatalf("user properties %s", got)
		}
	})
	t.Run("MQTT-3.3.2-19/v5/content-type-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("t"), props(b(0x03), str("text/\x00"))), v, MalformedPacket, "content type", "u+0000")
	})
	t.Run("MQTT-3.3.4-6/v5/no-subscription-identifier-from-clients", func(t *testing.T) {
		p := mustDecode(t, pkt(0x30, str("t"), props(b(0x0B, 3))), v).(*Publish)
		wantReason(t, CheckClientPublish(p), ProtocolError, "PUBLISH", "a client sent a subscription identifier")
		p = mustDecode(t, pkt(0x30, str("t"), props(b(0x01, 1))), v).(*Publish)
		if err := CheckClientPublish(p); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("MQTT-3.4.2-1/v5/puback-reason-codes", func(t *testing.T) { ackReasons(t, PUBACK, pubackReasons) })
	t.Run("MQTT-3.5.2-1/v5/pubrec-reason-codes", func(t *testing.T) { ackReasons(t, PUBREC, pubackReasons) })
	t.Run("MQTT-3.6.1-1/v5/pubrel-flags", func(t *testing.T) {
		headerFail(t, 0x60, MalformedPacket, "PUBREL", "fixed header flags 0b0000, must be 0b0010")
		if enc := AppendAck(nil, &Ack{Type: PUBREL, PacketID: 1}, v); enc[0] != 0x62 {
			t.Fatalf("PUBREL encoded with first byte %#x", enc[0])
		}
	})
	t.Run("MQTT-3.6.2-1/v5/pubrel-reason-codes", func(t *testing.T) { ackReasons(t, PUBREL, pubrelReasons) })
	t.Run("MQTT-3.7.2-1/v5/pubcomp-reason-codes", func(t *testing.T) { ackReasons(t, PUBCOMP, pubrelReasons) })
	t.Run("MQTT-3.8.1-1/v5/subscribe-flags", func(t *testing.T) {
		headerFail(t, 0x80, MalformedPacket, "SUBSCRIBE", "must be 0b0010")
		headerFail(t, 0x8A, MalformedPacket, "SUBSCRIBE")
	})
	t.Run("MQTT-3.8.3-1/v5/filters-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0x82, b(0, 1, 0), str("ok"), b(0), str("x\xED\xB0\x80"), b(0)), v, MalformedPacket, "topic filter 1", "not well-formed utf-8 at byte 1")
	})
	t.Run("MQTT-3.8.3-2/v5/at-least-one-filter", func(t *testing.T) {
		mustFail(t, h(`82 03 00 01 00`), v, ProtocolError, "SUBSCRIBE", "no topic filter")
		mustFail(t, pkt(0x82, b(0, 1, 0), str("a")), v, MalformedPacket, "subscription options of topic filter 0", "runs past the end")
	})
	t.Run("MQTT-3.8.3-4/v5/no-local-on-shared", func(t *testing.T) {
		mustFail(t, pkt(0x82, b(0, 1, 0), str("$share/g/t"), b(0x04)), v, ProtocolError, "no local is set on a shared subscription")
		mustDecode(t, pkt(0x82, b(0, 1, 0), str("$share/g/t"), b(0x01)), v)
	})
	t.Run("MQTT-3.8.3-5/v5/subscription-options-reserved-bits", func(t *testing.T) {
		mustFail(t, pkt(0x82, b(0, 1, 0), str("t"), b(0x40)), v, MalformedPacket, "reserved bits 7-6")
		mustFail(t, pkt(0x82, b(0, 1, 0), str("t"), b(0x80)), v, MalformedPacket, "reserved bits 7-6")
		// The other option values: qos 3 and retain handling 3 are protocol errors.
		mustFail(t, pkt(0x82, b(0, 1, 0), str("t"), b(0x03)), v, ProtocolError, "maximum qos is 3")
		mustFail(t, pkt(0x82, b(0, 1, 0), str("t"), b(0x30)), v, ProtocolError, "retain handling is 3")
	})
	t.Run("MQTT-3.9.3-2/v5/suback-reason-codes", func(t *testing.T) {
		for r := 0; r < 256; r++ {
			_, err := decodeWire(t, b(0x90, 4, 0, 1, 0, byte(r)), v)
			if subackReasons.has(ReasonCode(r)) != (err == nil) {
				t.Fatalf("SUBACK reason %#x: %v", r, err)
			}
		}
	})
	t.Run("MQTT-3.10.1-1/v5/unsubscribe-flags", func(t *testing.T) {
		headerFail(t, 0xA0, MalformedPacket, "UNSUBSCRIBE", "must be 0b0010")
	})
	t.Run("MQTT-3.10.3-1/v5/unsubscribe-filters-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0xA2, b(0, 1, 0), str("a\x00")), v, MalformedPacket, "UNSUBSCRIBE", "topic filter 0", "u+0000")
	})
	t.Run("MQTT-3.10.3-2/v5/unsubscribe-at-least-one-filter", func(t *testing.T) {
		mustFail(t, h(`a2 03 00 01 00`), v, ProtocolError, "UNSUBSCRIBE", "no topic filter")
	})
	t.Run("MQTT-3.11.3-2/v5/unsuback-reason-codes", func(t *testing.T) {
		for r := 0; r < 256; r++ {
			_, err := decodeWire(t, b(0xB0, 4, 0, 1, 0, byte(r)), v)
			if unsubackReasons.has(ReasonCode(r)) != (err == nil) {
				t.Fatalf("UNSUBACK reason %#x: %v", r, err)
			}
		}
	})
	t.Run("MQTT-3.14.1-1/v5/disconnect-flags", func(t *testing.T) {
		headerFail(t, 0xE1, MalformedPacket, "DISCONNECT", "must be 0b0000")
	})
	t.Run("MQTT-3.14.2-1/v5/disconnect-reason-codes", func(t *testing.T) {
		for r := 0; r < 256; r++ {
			_, err := decodeWire(t, b(0xE0, 1, byte(r)), v)
			if disconnectReasons.has(ReasonCode(r)) != (err == nil) {
				t.Fatalf("DISCONNECT reason %#x: %v", r, err)
			}
		}
	})
	t.Run("MQTT-3.15.1-1/v5/auth-flags", func(t *testing.T) {
		headerFail(t, 0xF2, MalformedPacket, "AUTH", "must be 0b0000")
	})
	t.Run("MQTT-3.15.2-1/v5/auth-reason-codes", func(t *testing.T) {
		for r := 0; r < 256; r++ {
			_, err := decodeWire(t, pkt(0xF0, b(byte(r)), props(b(0x15), str("m"))), v)
			if authReasons.has(ReasonCode(r)) != (err == nil) {
				t.Fatalf("AUTH reason %#x: %v", r, err)
			}
		}
	})
	t.Run("MQTT-4.7.0-1/v5/no-wildcards-in-topic-names", func(t *testing.T) {
		for _, n := range []string{"+", "#", "a/+/b", "a#"} {
			wantReason(t, ValidTopicName([]byte(n)), TopicNameInvalid, "wildcard")
		}
	})
	t.Run("MQTT-4.7.1-1/v5/multi-level-wildcard", func(t *testing.T) {
		for _, f := range []string{"#", "a/#", "/#", "a/b/#"} {
			if err := ValidTopicFilter([]byte(f)); err != nil {
				t.Fatalf("%q: %v", f, err)
			}
		}
		for _, f := range []string{"a#", "a/#/b", "#/", "a/b#", "##"} {
			wantReason(t, ValidTopicFilter([]byte(f)), TopicFilterInvalid, "'#'")
		}
		mustFail(t, pkt(0x82, b(0, 1, 0), str("a/b"), b(0), str("x"), b(0), str("s"), b(0), str("sport/#/x"), b(0)), v,
			TopicFilterInvalid, "cannot decode SUBSCRIBE: topic filter 3: '#' at byte 6 must be the last level (0x8F topic filter invalid)")
	})
	t.Run("MQTT-4.7.1-2/v5/single-level-wildcard", func(t *testing.T) {
		for _, f := range []string{"+", "+/+", "a/+", "+/b", "a/+/b", "/+", "+/"} {
			if err := ValidTopicFilter([]byte(f)); err != nil {
				t.Fatalf("%q: %v", f, err)
			}
		}
		for _, f := range []string{"a+", "+a", "a/b+/c", "++", "a/+b"} {
			wantReason(t, ValidTopicFilter([]byte(f)), TopicFilterInvalid, "'+'", "whole level")
		}
	})
	t.Run("MQTT-4.7.2-1/v5/dollar-topics-not-matched-by-leading-wildcards", func(t *testing.T) {
		for _, c := range []struct {
			f, t string
			want bool
		}{
			{"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"+", "$x", false},
			{"$SYS/#", "$SYS/x", true}, {"$SYS/+", "$SYS/x", true}, {"a/#", "a/$x", true}, {"+/#", "a/$x", true},
		} {
			if got := Match([]byte(c.f), []byte(c.t)); got != c.want {
				t.Fatalf("Match(%q, %q) = %v", c.f, c.t, got)
			}
		}
	})
	t.Run("MQTT-4.7.3-1/v5/at-least-one-character", func(t *testing.T) {
		wantReason(t, ValidTopicName(nil), TopicNameInvalid, "empty")
		wantReason(t, ValidTopicFilter([]byte{}), TopicFilterInvalid, "empty")
		mustFail(t, pkt(0x82, b(0, 1, 0), str(""), b(0)), v, TopicFilterInvalid, "topic filter 0: is empty")
		mustFail(t, pkt(0xA2, b(0, 1, 0), str("")), v, TopicFilterInvalid, "topic filter 0: is empty")
	})
	t.Run("MQTT-4.7.3-2/v5/no-null-character", func(t *testing.T) {
		wantReason(t, ValidTopicName([]byte("a\x00")), TopicNameInvalid, "u+0000")
		wantReason(t, ValidTopicFilter([]byte("a/\x00/#")), TopicFilterInvalid, "u+0000 at byte 2")
	})
	t.Run("MQTT-4.7.3-3/v5/at-most-65535-bytes", func(t *testing.T) {
		long := bytes.Repeat([]byte("a"), 65536)
		wantReason(t, ValidTopicName(long), TopicNameInvalid, "longer than 65535")
		wantReason(t, ValidTopicFilter(long), TopicFilterInvalid, "longer than 65535")
		if err := ValidTopicName(long[:65535]); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("MQTT-4.7.3-4/v5/matching-without-normalisation", func(t *testing.T) {
		for _, c := range [][2]string{{"ACCOUNTS", "accounts"}, {"caf\u00e9", "cafe\u0301"}, {"a/b", "a//b"}, {"a/b ", "a/b"}} {
			if Match([]byte(c[0]), []byte(c[1])) {
				t.Fatalf("%q matched %q", c[0], c[1])
			}
		}
	})
	t.Run("MQTT-4.8.2-1/v5/share-name-present", func(t *testing.T) {
		_, _, shared, err := ParseShared([]byte("$share//t"))
		if !shared {
			t.Fatal("not seen as shared")
		}
		wantReason(t, err, TopicFilterInvalid, "empty share name")
		mustFail(t, pkt(0x82, b(0, 1, 0), str("$share//t"), b(0)), v, TopicFilterInvalid, "topic filter 0", "empty share name")
	})
	t.Run("MQTT-4.8.2-2/v5/share-name-characters", func(t *testing.T) {
		for _, f := range []string{"$share/g+/t", "$share/g#/t", "$share/a+b/t"} {
			_, _, _, err := ParseShared([]byte(f))
			wantReason(t, err, TopicFilterInvalid, "share name contains")
		}
		for _, f := range []string{"$share/g", "$share/g/"} {
			_, _, _, err := ParseShared([]byte(f))
			wantReason(t, err, TopicFilterInvalid)
		}
		g, f, shared, err := ParseShared([]byte("$share/grp/a/+/#"))
		if err != nil || !shared || string(g) != "grp" || string(f) != "a/+/#" {
			t.Fatalf("ParseShared: %q %q %v %v", g, f, shared, err)
		}
	})
}

// ackReasons checks which reason codes an ack of type typ accepts.
func ackReasons(t *testing.T, typ byte, set reasons) {
	t.Helper()
	first := typ << 4
	if typ == PUBREL {
		first |= 2
	}
	for r := 0; r < 256; r++ {
		_, err := decodeWire(t, b(first, 3, 0, 1, byte(r)), Version5)
		if set.has(ReasonCode(r)) != (err == nil) {
			t.Fatalf("%s reason %#x: %v", TypeName(typ), r, err)
		}
		if err != nil {
			wantReason(t, err, MalformedPacket, "not a "+TypeName(typ)+" reason code")
		}
	}
}
