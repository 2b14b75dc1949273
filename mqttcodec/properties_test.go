package mqttcodec

import (
	"strings"
	"testing"
)

// propContexts are the places properties appear: every packet type that
// has properties, and the will.
var propContexts = []struct {
	name string
	pkt  byte
	will bool
}{
	{"CONNECT", CONNECT, false}, {"will", CONNECT, true}, {"CONNACK", CONNACK, false}, {"PUBLISH", PUBLISH, false},
	{"PUBACK", PUBACK, false}, {"PUBREC", PUBREC, false}, {"PUBREL", PUBREL, false}, {"PUBCOMP", PUBCOMP, false},
	{"SUBSCRIBE", SUBSCRIBE, false}, {"SUBACK", SUBACK, false}, {"UNSUBSCRIBE", UNSUBSCRIBE, false},
	{"UNSUBACK", UNSUBACK, false}, {"DISCONNECT", DISCONNECT, false}, {"AUTH", AUTH, false},
}

// withProps builds a v5 packet of type pkt (or a CONNECT with a will)
// whose property block holds the bytes in.
func withProps(pkt byte, will bool, in []byte) []byte {
	blk := props(in)
	switch pkt {
	case CONNECT:
		if will {
			return connect5(0x06, b(0), str("c"), blk, str("w"), str("x"))
		}
		return connect5(0x02, blk, str("c"))
	case CONNACK:
		return pkt2(0x20, b(0, 0), blk)
	case PUBLISH:
		return pkt2(0x30, str("t"), blk)
	case PUBACK, PUBREC, PUBCOMP:
		return pkt2(pkt<<4, b(0, 1, 0), blk)
	case PUBREL:
		return pkt2(0x62, b(0, 1, 0), blk)
	case SUBSCRIBE:
		return pkt2(0x82, b(0, 1), blk, str("t"), b(0))
	case SUBACK:
		return pkt2(0x90, b(0, 1), blk, b(0))
	case UNSUBSCRIBE:
		return pkt2(0xA2, b(0, 1), blk, str("t"))
	case UNSUBACK:
		return pkt2(0xB0, b(0, 1), blk, b(0))
	case DISCONNECT:
		return pkt2(0xE0, b(0), blk)
	case AUTH:
		return pkt2(0xF0, b(0), blk)
	}
	panic("BUG")
}

func pkt2(first byte, parts ...[]byte) []byte { return pkt(first, parts...) }

// propBytes is a valid encoding of property id.
func propBytes(id PropID) []byte {
	switch propTable[id].kind {
	case kByte:
		return b(byte(id), 1)
	case kU16:
		return b(byte(id), 0, 1)
	case kU32:
		return b(byte(id), 0, 0, 0, 1)
	case kVarint:
		return b(byte(id), 1)
	case kString, kBinary:
		return cat(b(byte(id)), str("x"))
	case kPair:
		return cat(b(byte(id)), str("k"), str("v"))
	}
	panic("BUG")
}

// needed adds what a packet needs beside property id to be valid: an
// authentication method for AUTH and for authentication data.
func needed(pkt byte, will bool, id PropID) []byte {
	if id != PropAuthMethod && (pkt == AUTH || id == PropAuthData) && PropAuthMethod.AllowedIn(pkt, will) {
		return propBytes(PropAuthMethod)
	}
	return nil
}

func TestPropertyPlacement(t *testing.T) {
	allowed := 0
	for id := PropID(1); id < 64; id++ {
		if propTable[id].kind == 0 {
			continue
		}
		for _, c := range propContexts {
			wire := withProps(c.pkt, c.will, cat(needed(c.pkt, c.will, id), propBytes(id)))
			_, err := decodeWire(t, wire, Version5)
			if id.AllowedIn(c.pkt, c.will) {
				allowed++
				if err != nil {
					t.Errorf("%s in %s: %v", id, c.name, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s in %s: accepted", id, c.name)
				continue
			}
			wantReason(t, err, MalformedPacket, id.String(), "is not allowed in")
		}
	}
	// Table 2-4 of MQTT 5.0: 27 properties in 64 (property, place) pairs
	// when the four acks count separately (user property: all 14 places,
	// reason string: 9).
	if allowed != 64 {
		t.Fatalf("%d allowed (property, place) pairs", allowed)
	}
}

func TestPropertyDuplicates(t *testing.T) {
	for id := PropID(1); id < 64; id++ {
		if propTable[id].kind == 0 {
			continue
		}
		for _, c := range propContexts {
			if !id.AllowedIn(c.pkt, c.will) {
				continue
			}
			wire := withProps(c.pkt, c.will, cat(needed(c.pkt, c.will, id), propBytes(id), propBytes(id)))
			_, err := decodeWire(t, wire, Version5)
			repeatable := id == PropUserProperty || (id == PropSubscriptionID && c.pkt == PUBLISH)
			if repeatable {
				if err != nil {
					t.Errorf("repeated %s in %s: %v", id, c.name, err)
				}
				continue
			}
			wantReason(t, err, ProtocolError, id.String(), "included more than once")
		}
	}
}

func TestPropertyValues(t *testing.T) {
	cases := []struct {
		name   string
		pkt    byte
		will   bool
		in     []byte
		reason ReasonCode
		msg    string
	}{
		{"payload-format-2", PUBLISH, false, b(0x01, 2), ProtocolError, "payload format indicator is 2, must be 0 or 1"},
		{"will-payload-format-255", CONNECT, true, b(0x01, 255), ProtocolError, "will properties: payload format indicator is 255"},
		{"request-problem-info-2", CONNECT, false, b(0x17, 2), ProtocolError, "request problem information is 2"},
		{"request-response-info-2", CONNECT, false, b(0x19, 2), ProtocolError, "request response information is 2"},
		{"maximum-qos-2", CONNACK, false, b(0x24, 2), ProtocolError, "maximum qos is 2"},
		{"retain-available-2", CONNACK, false, b(0x25, 2), ProtocolError, "retain available is 2"},
		{"wildcard-sub-available-3", CONNACK, false, b(0x28, 3), ProtocolError, "wildcard subscription available is 3"},
		{"sub-id-available-9", CONNACK, false, b(0x29, 9), ProtocolError, "subscription identifier available is 9"},
		{"shared-sub-available-2", CONNACK, false, b(0x2A, 2), ProtocolError, "shared subscription available is 2"},
		{"receive-maximum-0-connect", CONNECT, false, b(0x21, 0, 0), ProtocolError, "receive maximum is 0"},
		{"receive-maximum-0-connack", CONNACK, false, b(0x21, 0, 0), ProtocolError, "receive maximum is 0"},
		{"maximum-packet-size-0", CONNACK, false, b(0x27, 0, 0, 0, 0), ProtocolError, "maximum packet size is 0"},
		{"subscription-id-0-publish", PUBLISH, false, b(0x0B, 0), ProtocolError, "subscription identifier is 0"},
		{"subscription-id-0-subscribe", SUBSCRIBE, false, b(0x0B, 0), ProtocolError, "subscription identifier is 0"},
		{"subscription-id-5-bytes", PUBLISH, false, b(0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), MalformedPacket, "subscription identifier is not a valid variable byte integer"},
		{"subscription-id-truncated", PUBLISH, false, b(0x0B, 0x80), MalformedPacket, "subscription identifier is not a valid variable byte integer"},
		{"topic-alias-0", PUBLISH, false, b(0x23, 0, 0), TopicAliasInvalid, "topic alias is 0"},
		{"response-topic-wildcard", PUBLISH, false, cat(b(0x08), str("a/#")), ProtocolError, "response topic: contains the wildcard '#'"},
		{"response-topic-empty", PUBLISH, false, cat(b(0x08), str("")), ProtocolError, "response topic: is empty"},
		{"unknown-0x00", PUBLISH, false, b(0x00, 1), MalformedPacket, "unknown property identifier 0x00 at byte 0"},
		{"unknown-0x04", PUBLISH, false, b(0x01, 0, 0x04, 1), MalformedPacket, "unknown property identifier 0x04 at byte 2"},
		{"unknown-0x2b", CONNACK, false, b(0x2B, 1), MalformedPacket, "unknown property identifier 0x2B"},
		{"unknown-0x7f", CONNACK, false, b(0x7F, 1), MalformedPacket, "unknown property identifier 0x7F"},
		{"multi-byte-id", PUBLISH, false, b(0x81, 0x00), MalformedPacket, "unknown property identifier 0x81"},
		{"u16-truncated", PUBLISH, false, b(0x23, 0), MalformedPacket, "topic alias: value runs past the end of the properties"},
		{"u32-truncated", PUBLISH, false, b(0x02, 0, 0, 0), MalformedPacket, "message expiry interval: value runs past"},
		{"byte-truncated", PUBLISH, false, b(0x01), MalformedPacket, "payload format indicator: value runs past"},
		{"string-truncated", PUBLISH, false, b(0x03, 0, 5, 'a'), MalformedPacket, "content type: value runs past"},
		{"pair-value-truncated", PUBLISH, false, cat(b(0x26), str("k"), b(0, 3)), MalformedPacket, "user property: value runs past"},
		{"auth-data-without-method", CONNACK, false, cat(b(0x16), str("x")), ProtocolError, "authentication data without an authentication method"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeWire(t, withProps(c.pkt, c.will, c.in), Version5)
			wantReason(t, err, c.reason, c.msg)
		})
	}
	// Property length beyond the packet, and not a varint.
	t.Run("property-length-past-end", func(t *testing.T) {
		_, err := decodeWire(t, pkt(0x30, str("t"), b(5, 1, 1)), Version5)
		wantReason(t, err, MalformedPacket, "property length 5 runs past the end of the packet")
	})
	t.Run("property-length-truncated-varint", func(t *testing.T) {
		_, err := decodeWire(t, pkt(0x40, b(0, 1, 0x80, 0x80)), Version5)
		wantReason(t, err, MalformedPacket, "PUBACK", "property length is not a valid variable byte integer")
	})
	t.Run("property-length-5-bytes", func(t *testing.T) {
		_, err := decodeWire(t, pkt(0xE0, b(0, 0x80, 0x80, 0x80, 0x80, 0x01)), Version5)
		wantReason(t, err, MalformedPacket, "DISCONNECT", "property length")
	})
}

func TestPropertiesAPI(t *testing.T) {
	var p Properties
	if !p.Empty() || p.Has(PropUserProperty) || p.Has(PropSubscriptionID) || p.Has(PropContentType) {
		t.Fatal("zero Properties has something")
	}
	p.ContentType = []byte("x")
	p.Set(PropContentType)
	p.Set(PropUserProperty)   // ignored: the slice says it
	p.Set(PropSubscriptionID) // ignored
	p.Set(PropID(0x05))       // not a property: ignored
	p.Set(PropID(200))        // ignored
	if !p.Has(PropContentType) || p.Has(PropUserProperty) || p.Has(PropSubscriptionID) || p.Has(PropID(0x05)) || p.Has(PropID(200)) {
		t.Fatalf("Has after Set: %+v", p)
	}
	p.User = append(p.User, UserProperty{[]byte("k"), []byte("v")}, UserProperty{[]byte("k"), []byte("w")})
	p.SubscriptionIDs = append(p.SubscriptionIDs, 3)
	if !p.Has(PropUserProperty) || !p.Has(PropSubscriptionID) || p.Empty() {
		t.Fatal("repeatable properties not seen")
	}
	capU, capS := cap(p.User), cap(p.SubscriptionIDs)
	u := p.User
	p.Reset()
	if !p.Empty() || cap(p.User) != capU || cap(p.SubscriptionIDs) != capS || len(p.ContentType) != 0 {
		t.Fatalf("Reset: %+v", p)
	}
	if u[:2][0].Key != nil {
		t.Fatal("Reset left a borrowed slice reachable")
	}
	p.ReasonString = []byte("r")
	p.Set(PropReasonString)
	p.Clear(PropReasonString)
	if p.Has(PropReasonString) {
		t.Fatal("Clear")
	}
	p.User = append(p.User, UserProperty{})
	p.Clear(PropUserProperty)
	p.SubscriptionIDs = append(p.SubscriptionIDs, 1)
	p.Clear(PropSubscriptionID)
	if !p.Empty() {
		t.Fatal("Clear of repeatable properties")
	}
	for id := PropID(0); id < 0x30; id++ {
		name := id.String()
		if propTable[id].kind == 0 && !strings.HasPrefix(name, "property 0x") {
			t.Fatalf("%d named %q", id, name)
		}
		if name != strings.ToLower(name) && !strings.HasPrefix(name, "property 0x") {
			t.Fatalf("name %q not lower case", name)
		}
	}
	if PropID(1).AllowedIn(99, false) || PropID(99).AllowedIn(PUBLISH, false) {
		t.Fatal("AllowedIn out of range")
	}
}

// TestPropertiesEncodeAll round-trips a Properties with every property a
// packet allows, for every place.
func TestPropertiesEncodeAll(t *testing.T) {
	for _, c := range propContexts {
		var in []byte
		for id := PropID(1); id < 64; id++ {
			if propTable[id].kind != 0 && id.AllowedIn(c.pkt, c.will) {
				in = append(in, propBytes(id)...)
			}
		}
		wire := withProps(c.pkt, c.will, in)
		p, err := decodeWire(t, wire, Version5)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		enc := encodePacket(nil, p, Version5)
		q, err := decodeWire(t, enc, Version5)
		if err != nil || show(p) != show(q) {
			t.Fatalf("%s: round trip: %v\n%s\n%s", c.name, err, show(p), show(q))
		}
		if len(enc) != len(wire) {
			t.Fatalf("%s: re-encoded %d bytes, decoded %d", c.name, len(enc), len(wire))
		}
	}
}
