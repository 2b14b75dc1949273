package mqttcodec

import (
	"bytes"
	"testing"
)

// Tests named after the normative statements of MQTT 3.1.1 that a codec
// can check (the numbering differs from 5.0 in places). MQTT 3.1 (level 3)
// shares the 3.1.1 wire format but for CONNECT; where a rule applies to it
// too, the test runs both levels.

func connect311(flags byte, payload ...[]byte) []byte {
	return pkt(0x10, str("MQTT"), b(4, flags, 0, 60), cat(payload...))
}

func TestConformance311(t *testing.T) {
	const v = Version311

	t.Run("MQTT-1.5.3-1/v311/ill-formed-utf-8-closes", func(t *testing.T) {
		for _, c := range badUTF8[:len(badUTF8)-1] {
			for _, level := range v3only {
				mustFail(t, pkt(0x30, str(string(c.bytes))), level, MalformedPacket, "topic name", c.what)
				mustFail(t, pkt(0x82, b(0, 1), str(string(c.bytes)), b(0)), level, MalformedPacket, "topic filter 0", c.what)
			}
			mustFail(t, connect311(0x02, str(string(c.bytes))), v, MalformedPacket, "client identifier", c.what)
		}
	})
	t.Run("MQTT-1.5.3-2/v311/null-character-closes", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("a\x00b")), v, MalformedPacket, "topic name", "u+0000 at byte 1")
		mustFail(t, connect311(0x82, str("c"), str("\x00")), v, MalformedPacket, "user name", "u+0000 at byte 0")
	})
	t.Run("MQTT-1.5.3-3/v311/byte-order-mark-kept", func(t *testing.T) {
		c := mustDecode(t, connect311(0x02, str("\xEF\xBB\xBFid")), v).(*Connect)
		if string(c.ClientID) != "\xEF\xBB\xBFid" {
			t.Fatalf("client id % x", c.ClientID)
		}
	})
	t.Run("MQTT-2.2.2-1/v311/reserved-flags", func(t *testing.T) {
		for _, c := range []struct{ first, ok byte }{{0x10, 1}, {0x11, 0}, {0x20, 1}, {0x28, 0}, {0x40, 1}, {0x41, 0},
			{0x62, 1}, {0x60, 0}, {0x63, 0}, {0x82, 1}, {0x83, 0}, {0xA2, 1}, {0xA0, 0}, {0xC0, 1}, {0xC4, 0}, {0xE0, 1}, {0xE8, 0}} {
			_, err := ReadFixedHeader([]byte{c.first, 0}, 0)
			if (err == nil) != (c.ok == 1) {
				t.Fatalf("first byte %#x: %v", c.first, err)
			}
		}
	})
	t.Run("MQTT-2.2.2-2/v311/invalid-flags-close", func(t *testing.T) {
		_, _, _, err := Frame(h(`92 03 00 01 00`), 0)
		wantReason(t, err, MalformedPacket, "SUBACK", "fixed header flags 0b0010, must be 0b0000")
	})
	t.Run("MQTT-2.3.1-1/v311/packet-identifier-non-zero", func(t *testing.T) {
		for _, level := range v3only {
			mustFail(t, h(`32 05 00 01 74 00 00`), level, ProtocolError, "PUBLISH", "packet identifier is 0")
			mustFail(t, h(`82 06 00 00 00 01 74 00`), level, ProtocolError, "SUBSCRIBE", "packet identifier is 0")
			mustFail(t, h(`a2 05 00 00 00 01 74`), level, ProtocolError, "UNSUBSCRIBE", "packet identifier is 0")
		}
	})
	t.Run("MQTT-2.3.1-5/v311/qos0-has-no-packet-identifier", func(t *testing.T) {
		enc := AppendPublish(nil, &Publish{Topic: []byte("t"), PacketID: 5}, v)
		if !bytes.Equal(enc, h(`30 03 00 01 74`)) {
			t.Fatalf("encoded % x", enc)
		}
	})
	t.Run("MQTT-3.1.2-1/v311/protocol-name", func(t *testing.T) {
		mustFail(t, pkt(0x10, str("MQTT3"), b(4, 2, 0, 0), str("c")), v, ProtocolError, "protocol name \"MQTT3\"")
		mustFail(t, pkt(0x10, str("MQIsdp"), b(4, 2, 0, 0), str("c")), v, UnsupportedProtocolVersion, "protocol level 4 with protocol name \"MQIsdp\"")
		mustFail(t, pkt(0x10, str("MQTT"), b(3, 2, 0, 0), str("c")), v, UnsupportedProtocolVersion, "protocol level 3 with protocol name \"MQTT\"")
	})
	t.Run("MQTT-3.1.2-2/v311/unacceptable-protocol-level", func(t *testing.T) {
		w := pkt(0x10, str("MQTT"), b(6, 2, 0, 0), str("c"))
		_, err := decodeWire(t, w, v)
		wantReason(t, err, UnsupportedProtocolVersion)
		if code := V3ConnackCode(ReasonOf(err)); code != 1 {
			t.Fatalf("v3 return code %d, want 1 (unacceptable protocol version)", code)
		}
		if got := AppendConnack(nil, &Connack{Reason: ReasonOf(err)}, v); !bytes.Equal(got, h(`20 02 00 01`)) {
			t.Fatalf("CONNACK % x", got)
		}
	})
	t.Run("MQTT-3.1.2-3/v311/reserved-flag-zero", func(t *testing.T) {
		mustFail(t, connect311(0x01, str("c")), v, MalformedPacket, "reserved bit 0")
		mustFail(t, pkt(0x10, str("MQIsdp"), b(3, 0x03, 0, 0), str("c")), Version31, MalformedPacket, "reserved bit 0")
	})
	t.Run("MQTT-3.1.2-9/v311/will-fields-present", func(t *testing.T) {
		mustFail(t, connect311(0x06, str("c")), v, MalformedPacket, "will topic")
		mustFail(t, connect311(0x06, str("c"), str("w")), v, MalformedPacket, "will payload")
	})
	t.Run("MQTT-3.1.2-11/v311/no-will-no-will-fields", func(t *testing.T) {
		mustFail(t, connect311(0x02, str("c"), str("w"), str("x")), v, MalformedPacket, "6 bytes after the end of the payload")
		mustFail(t, connect311(0x0A, str("c")), v, MalformedPacket, "will qos is 1 without the will flag")
		mustFail(t, connect311(0x22, str("c")), v, MalformedPacket, "will retain")
	})
	t.Run("MQTT-3.1.2-13/v311/will-qos-zero-without-will", func(t *testing.T) {
		mustFail(t, connect311(0x12, str("c")), v, MalformedPacket, "will qos is 2 without the will flag")
	})
	t.Run("MQTT-3.1.2-14/v311/will-qos-not-3", func(t *testing.T) {
		mustFail(t, connect311(0x1E, str("c"), str("w"), str("x")), v, MalformedPacket, "will qos is 3")
	})
	t.Run("MQTT-3.1.2-15/v311/will-retain-zero-without-will", func(t *testing.T) {
		mustFail(t, connect311(0x22, str("c")), v, MalformedPacket, "will retain is set without the will flag")
	})
	t.Run("MQTT-3.1.2-18/v311/no-user-name-without-flag", func(t *testing.T) {
		mustFail(t, connect311(0x02, str("c"), str("u")), v, MalformedPacket, "bytes after the end of the payload")
	})
	t.Run("MQTT-3.1.2-19/v311/user-name-with-flag", func(t *testing.T) {
		mustFail(t, connect311(0x82, str("c")), v, MalformedPacket, "user name", "runs past the end")
	})
	t.Run("MQTT-3.1.2-20/v311/no-password-without-flag", func(t *testing.T) {
		mustFail(t, connect311(0x82, str("c"), str("u"), str("p")), v, MalformedPacket, "bytes after the end of the payload")
	})
	t.Run("MQTT-3.1.2-21/v311/password-with-flag", func(t *testing.T) {
		mustFail(t, connect311(0xC2, str("c"), str("u")), v, MalformedPacket, "password", "runs past the end")
	})
	t.Run("MQTT-3.1.2-22/v311/password-needs-user-name", func(t *testing.T) {
		mustFail(t, connect311(0x42, str("c"), str("p")), v, MalformedPacket, "password flag is set without the user name flag")
		mustFail(t, pkt(0x10, str("MQIsdp"), b(3, 0x42, 0, 0), str("c"), str("p")), Version31, MalformedPacket, "password flag")
	})
	t.Run("MQTT-3.1.3-1/v311/payload-order", func(t *testing.T) {
		c := mustDecode(t, connect311(0xC6, str("id"), str("wt"), str("wp"), str("un"), str("pw")), v).(*Connect)
		got := string(c.ClientID) + "," + string(c.WillTopic) + "," + string(c.WillPayload) + "," + string(c.Username) + "," + string(c.Password)
		if got != "id,wt,wp,un,pw" {
			t.Fatalf("payload decoded as %s", got)
		}
	})
	t.Run("MQTT-3.1.3-3/v311/client-identifier-present", func(t *testing.T) {
		mustFail(t, connect311(0x02), v, MalformedPacket, "client identifier", "runs past the end")
	})
	t.Run("MQTT-3.1.3-4/v311/client-identifier-utf-8", func(t *testing.T) {
		mustFail(t, connect311(0x02, str("\xC3\x28")), v, MalformedPacket, "client identifier", "not well-formed utf-8 at byte 0")
	})
	t.Run("MQTT-3.1.3-5/v311/client-identifiers-allowed", func(t *testing.T) {
		for _, id := range []string{"a", "0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "id-with.punct_uation"} {
			c := mustDecode(t, connect311(0x00, str(id)), v).(*Connect)
			if string(c.ClientID) != id {
				t.Fatalf("client id %q decoded as %q", id, c.ClientID)
			}
			mustDecode(t, pkt(0x10, str("MQIsdp"), b(3, 0, 0, 0), str(id)), Version31)
		}
	})
	t.Run("MQTT-3.1.3-7/v311/empty-client-identifier-needs-clean-session", func(t *testing.T) {
		mustDecode(t, connect311(0x02, str("")), v)
	})
	t.Run("MQTT-3.1.3-8/v311/empty-client-identifier-rejected", func(t *testing.T) {
		_, err := decodeWire(t, connect311(0x00, str("")), v)
		wantReason(t, err, ClientIdentifierNotValid, "client identifier is empty and clean session is 0")
		if V3ConnackCode(ReasonOf(err)) != 2 {
			t.Fatalf("v3 return code %d, want 2 (identifier rejected)", V3ConnackCode(ReasonOf(err)))
		}
		// MQTT 3.1 never allowed an empty identifier.
		mustFail(t, pkt(0x10, str("MQIsdp"), b(3, 2, 0, 0), str("")), Version31, ClientIdentifierNotValid, "MQTT 3.1")
	})
	t.Run("MQTT-3.1.3-10/v311/will-topic-utf-8", func(t *testing.T) {
		mustFail(t, connect311(0x06, str("c"), str("\xFF"), str("x")), v, MalformedPacket, "will topic", "not well-formed utf-8")
		mustFail(t, connect311(0x06, str("c"), str("a/+"), str("x")), v, TopicNameInvalid, "will topic", "wildcard '+'")
		mustFail(t, connect311(0x06, str("c"), str(""), str("x")), v, TopicNameInvalid, "will topic", "empty")
	})
	t.Run("MQTT-3.1.3-11/v311/user-name-utf-8", func(t *testing.T) {
		mustFail(t, connect311(0x82, str("c"), str("\xED\xA0\x80")), v, MalformedPacket, "user name", "not well-formed utf-8")
	})
	t.Run("MQTT-3.1.4-1/v311/connect-format-validated", func(t *testing.T) {
		mustFail(t, pkt(0x10, str("MQTT"), b(4, 2)), v, MalformedPacket, "keep alive")
		mustFail(t, pkt(0x10, b(0, 9), []byte("MQTT")), v, MalformedPacket, "protocol name", "runs past the end")
		mustFail(t, connect311(0x02, str("c"), b(0)), v, MalformedPacket, "1 bytes after the end of the payload")
	})
	t.Run("MQTT-3.2.2-4/v311/session-present-zero-on-refusal", func(t *testing.T) {
		mustFail(t, h(`20 02 01 05`), v, ProtocolError, "session present is set with return code 5")
		mustFail(t, h(`20 02 00 06`), v, MalformedPacket, "return code 6 is reserved")
		mustFail(t, h(`20 02 02 00`), v, MalformedPacket, "reserved bits 7-1")
		mustFail(t, h(`20 03 00 00 00`), v, MalformedPacket, "remaining length is 3, must be 2")
	})
	t.Run("MQTT-3.3.1-2/v311/dup-zero-for-qos0", func(t *testing.T) {
		mustFail(t, h(`38 03 00 01 74`), v, ProtocolError, "dup flag set on a qos 0 message")
		mustFail(t, h(`38 03 00 01 74`), Version31, ProtocolError, "dup flag")
	})
	t.Run("MQTT-3.3.1-4/v311/qos-bits-not-both-set", func(t *testing.T) {
		_, _, _, err := Frame(h(`36 03 00 01 74`), 0)
		wantReason(t, err, MalformedPacket, "qos 3")
	})
	t.Run("MQTT-3.3.2-1/v311/topic-name-utf-8-first", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("\xE0\x80\x80")), v, MalformedPacket, "topic name", "not well-formed utf-8")
		mustFail(t, h(`30 01 00`), v, MalformedPacket, "topic name", "runs past the end")
		mustFail(t, pkt(0x30, str("")), v, TopicNameInvalid, "topic name: is empty")
	})
	t.Run("MQTT-3.3.2-2/v311/topic-name-no-wildcards", func(t *testing.T) {
		mustFail(t, pkt(0x30, str("a/#")), v, TopicNameInvalid, "wildcard '#' at byte 2")
		mustFail(t, pkt(0x32, str("\u00e9/+"), b(0, 1)), v, TopicNameInvalid, "wildcard '+' at byte 3")
	})
	t.Run("MQTT-3.6.1-1/v311/pubrel-flags", func(t *testing.T) {
		_, err := ReadFixedHeader(h(`60 02`), 0)
		wantReason(t, err, MalformedPacket, "PUBREL", "must be 0b0010")
	})
	t.Run("MQTT-3.8.1-1/v311/subscribe-flags", func(t *testing.T) {
		_, err := ReadFixedHeader(h(`80 02`), 0)
		wantReason(t, err, MalformedPacket, "SUBSCRIBE")
	})
	t.Run("MQTT-3.8.3-1/v311/filters-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0x82, b(0, 1), str("a"), b(0), str("\xFE"), b(1)), v, MalformedPacket, "topic filter 1", "not well-formed utf-8")
	})
	t.Run("MQTT-3.8.3-3/v311/at-least-one-filter", func(t *testing.T) {
		mustFail(t, h(`82 02 00 01`), v, ProtocolError, "no topic filter")
	})
	t.Run("MQTT-3-8.3-4/v311/reserved-bits-and-qos", func(t *testing.T) {
		mustFail(t, pkt(0x82, b(0, 1), str("t"), b(0x04)), v, MalformedPacket, "reserved bits 7-2")
		mustFail(t, pkt(0x82, b(0, 1), str("t"), b(0x80)), v, MalformedPacket, "reserved bits 7-2")
		mustFail(t, pkt(0x82, b(0, 1), str("t"), b(0x03)), v, MalformedPacket, "requested qos of topic filter 0 is 3")
	})
	t.Run("MQTT-3.9.3-2/v311/suback-return-codes", func(t *testing.T) {
		for r := 0; r < 256; r++ {
			_, err := decodeWire(t, b(0x90, 3, 0, 1, byte(r)), v)
			ok := r == 0 || r == 1 || r == 2 || r == 0x80
			if ok != (err == nil) {
				t.Fatalf("SUBACK return code %#x: %v", r, err)
			}
		}
		// Encoding maps every v5 failure to 0x80.
		enc := AppendSuback(nil, &Suback{PacketID: 1, Reasons: []ReasonCode{GrantedQoS2, NotAuthorized, TopicFilterInvalid, QuotaExceeded}}, v)
		if !bytes.Equal(enc, h(`90 06 00 01 02 80 80 80`)) {
			t.Fatalf("SUBACK % x", enc)
		}
	})
	t.Run("MQTT-3.10.1-1/v311/unsubscribe-flags", func(t *testing.T) {
		_, err := ReadFixedHeader(h(`a3 02`), 0)
		wantReason(t, err, MalformedPacket, "UNSUBSCRIBE")
	})
	t.Run("MQTT-3.10.3-1/v311/unsubscribe-filters-utf-8", func(t *testing.T) {
		mustFail(t, pkt(0xA2, b(0, 1), str("\xC0\x80")), v, MalformedPacket, "UNSUBSCRIBE", "topic filter 0")
	})
	t.Run("MQTT-3.10.3-2/v311/unsubscribe-at-least-one-filter", func(t *testing.T) {
		mustFail(t, h(`a2 02 00 01`), v, ProtocolError, "no topic filter")
	})
	t.Run("MQTT-3.14.1-1/v311/disconnect-reserved-bits", func(t *testing.T) {
		_, err := ReadFixedHeader(h(`e2 00`), 0)
		wantReason(t, err, MalformedPacket, "DISCONNECT")
		mustFail(t, h(`e0 01 00`), v, MalformedPacket, "DISCONNECT", "remaining length is 1, must be 0")
	})
	t.Run("MQTT-4.7.1-1/v311/no-wildcards-in-topic-names", func(t *testing.T) {
		wantReason(t, ValidTopicName([]byte("a/+")), TopicNameInvalid, "wildcard '+' at byte 2")
	})
	t.Run("MQTT-4.7.1-2/v311/multi-level-wildcard", func(t *testing.T) {
		for _, c := range []struct {
			f, t string
			want bool
		}{
			{"sport/tennis/player1/#", "sport/tennis/player1", true},
			{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
			{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
			{"sport/#", "sport", true},
			{"#", "sport/tennis", true},
			{"sport/tennis/#", "sport/tennis2", false},
		} {
			if got := Match([]byte(c.f), []byte(c.t)); got != c.want {
				t.Fatalf("Match(%q, %q) = %v", c.f, c.t, got)
			}
		}
		mustFail(t, pkt(0x82, b(0, 1), str("sport/tennis#"), b(0)), v, TopicFilterInvalid, "'#' at byte 12 must occupy a whole level")
		mustFail(t, pkt(0x82, b(0, 1), str("sport/tennis/#/ranking"), b(0)), v, TopicFilterInvalid, "must be the last level")
	})
	t.Run("MQTT-4.7.1-3/v311/single-level-wildcard", func(t *testing.T) {
		for _, c := range []struct {
			f, t string
			want bool
		}{
			{"sport/tennis/+", "sport/tennis/player1", true},
			{"sport/tennis/+", "sport/tennis/player2", true},
			{"sport/tennis/+", "sport/tennis/player1/ranking", false},
			{"sport/+", "sport", false},
			{"sport/+", "sport/", true},
			{"+/+", "/finance", true},
			{"/+", "/finance", true},
			{"+", "/finance", false},
		} {
			if got := Match([]byte(c.f), []byte(c.t)); got != c.want {
				t.Fatalf("Match(%q, %q) = %v", c.f, c.t, got)
			}
		}
		mustFail(t, pkt(0x82, b(0, 1), str("sport+"), b(0)), v, TopicFilterInvalid, "'+' at byte 5 must occupy a whole level")
	})
	t.Run("MQTT-4.7.2-1/v311/dollar-topics", func(t *testing.T) {
		if Match([]byte("#"), []byte("$SYS/broker/load")) || Match([]byte("+/monitor/Clients"), []byte("$SYS/monitor/Clients")) {
			t.Fatal("a leading wildcard matched a $ topic")
		}
		if !Match([]byte("$SYS/#"), []byte("$SYS/broker/load")) || !Match([]byte("$SYS/monitor/+"), []byte("$SYS/monitor/Clients")) {
			t.Fatal("$SYS filters must match $SYS topics")
		}
	})
	t.Run("MQTT-4.7.3-1/v311/at-least-one-character", func(t *testing.T) {
		mustFail(t, pkt(0xA2, b(0, 1), str("")), v, TopicFilterInvalid, "is empty")
		if !Match([]byte("+/+"), []byte("/")) {
			t.Fatal(`"/" is a valid topic of two empty levels`)
		}
	})
	t.Run("MQTT-4.7.3-2/v311/no-null-character", func(t *testing.T) {
		mustFail(t, pkt(0x82, b(0, 1), str("a\x00"), b(0)), v, MalformedPacket, "topic filter 0", "u+0000")
	})
	t.Run("MQTT-4.7.3-3/v311/at-most-65535-bytes", func(t *testing.T) {
		long := bytes.Repeat([]byte("x/"), 40000)
		wantReason(t, ValidTopicFilter(long), TopicFilterInvalid, "longer than 65535 bytes")
	})
	t.Run("MQTT-4.7.3-4/v311/matching-without-normalisation", func(t *testing.T) {
		if Match([]byte("Sport"), []byte("sport")) || Match([]byte("sport/+"), []byte("SPORT/x")) {
			t.Fatal("matching folded case")
		}
	})
}
