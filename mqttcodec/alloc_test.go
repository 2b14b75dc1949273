package mqttcodec

import (
	"testing"
)

// The allocation budget of DESIGN.md: decoding a PUBLISH, the acks and a
// PINGREQ into reused structs allocates nothing, and so does encoding
// PUBLISH and acks into a buffer with room.

func allocs(t *testing.T, name string, f func()) {
	t.Helper()
	f() // warm up: let reused slices reach their size
	if n := testing.AllocsPerRun(200, f); n != 0 {
		t.Errorf("%s: %v allocations per run, want 0", name, n)
	}
}

func frameOf(t *testing.T, wire []byte) (FixedHeader, []byte) {
	t.Helper()
	fh, body, _, err := Frame(wire, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fh, body
}

func fixtureWire(name string) []byte {
	for _, f := range fixtures {
		if f.name == name {
			return f.wire
		}
	}
	panic("BUG: no fixture " + name)
}

func TestDecodeAllocs(t *testing.T) {
	var p Publish
	for _, c := range []struct {
		name    string
		version byte
	}{
		{"PUBLISH/qos0", Version311}, {"PUBLISH/qos1-dup-retain", Version311}, {"PUBLISH/qos2", Version311},
		{"PUBLISH/v3/200-byte-payload", Version311}, {"PUBLISH/v3/20000-byte-payload", Version31},
		{"PUBLISH/v5/qos0-no-properties", Version5}, {"PUBLISH/v5/qos1-all-properties", Version5},
		{"PUBLISH/v5/topic-alias-only", Version5}, {"PUBLISH/v5/20000-byte-payload", Version5},
	} {
		fh, body := frameOf(t, fixtureWire(c.name))
		allocs(t, "decode "+c.name, func() {
			if err := p.Decode(fh, body, c.version); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A non-ASCII topic and user properties, decoded into the same struct.
	fh, body := frameOf(t, pkt(0x32, str("d\u00e9v/\u4e16/temp"), b(0, 9), props(b(0x26), str("k"), str("v"), b(0x26), str("k2"), str("v2"), b(0x0B, 7)), []byte("22.5")))
	allocs(t, "decode PUBLISH/v5/utf-8-topic-user-properties", func() {
		if err := p.Decode(fh, body, Version5); err != nil || len(p.Props.User) != 2 {
			t.Fatal(err)
		}
	})

	var a Ack
	for _, c := range []struct {
		name    string
		version byte
	}{
		{"PUBACK/v3", Version311}, {"PUBREC/v3", Version311}, {"PUBREL/v3", Version311}, {"PUBCOMP/v3", Version311},
		{"PUBACK/v5/short-success", Version5}, {"PUBACK/v5/reason-only", Version5}, {"PUBACK/v5/reason-and-properties", Version5},
		{"PUBREC/v5/reason-only", Version5}, {"PUBREL/v5/not-found", Version5}, {"PUBCOMP/v5/short-success", Version5},
	} {
		fh, body := frameOf(t, fixtureWire(c.name))
		allocs(t, "decode "+c.name, func() {
			if err := a.Decode(fh, body, c.version); err != nil {
				t.Fatal(err)
			}
		})
	}

	ping := fixtureWire("PINGREQ")
	allocs(t, "decode PINGREQ", func() {
		fh, body, _, err := Frame(ping, 0)
		if err != nil || DecodePing(fh, body) != nil {
			t.Fatal(err)
		}
	})
	// Framing itself never allocates, nor does ReadFixedHeader with a limit.
	big := fixtureWire("PUBLISH/v5/20000-byte-payload")
	allocs(t, "Frame", func() {
		if _, _, _, err := Frame(big, 1<<20); err != nil {
			t.Fatal(err)
		}
	})
	allocs(t, "Frame incomplete", func() {
		if _, _, _, err := Frame(big[:100], 1<<20); err != ErrIncomplete {
			t.Fatal(err)
		}
	})
}

func TestEncodeAllocs(t *testing.T) {
	buf := make([]byte, 0, 64<<10)
	for _, c := range []struct {
		name    string
		version byte
	}{
		{"PUBLISH/qos0", Version311}, {"PUBLISH/qos1-dup-retain", Version311}, {"PUBLISH/v3/20000-byte-payload", Version311},
		{"PUBLISH/v5/qos0-no-properties", Version5}, {"PUBLISH/v5/qos1-all-properties", Version5},
		{"PUBACK/v3", Version311}, {"PUBREL/v3", Version311}, {"PUBACK/v5/short-success", Version5},
		{"PUBACK/v5/reason-only", Version5}, {"PUBACK/v5/reason-and-properties", Version5},
	} {
		p, err := decodeWire(t, fixtureWire(c.name), c.version)
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case *Publish:
			allocs(t, "encode "+c.name, func() { buf = AppendPublish(buf[:0], p, c.version) })
			allocs(t, "PublishSize "+c.name, func() { _ = PublishSize(p, c.version) })
		case *Ack:
			allocs(t, "encode "+c.name, func() { buf = AppendAck(buf[:0], p, c.version) })
		}
	}
	allocs(t, "encode PINGRESP", func() { buf = AppendPingresp(buf[:0]) })
	allocs(t, "encode DISCONNECT", func() { buf = AppendDisconnect(buf[:0], &Disconnect{Reason: SessionTakenOver}, Version5) })
	allocs(t, "encode CONNACK", func() { buf = AppendConnack(buf[:0], &Connack{SessionPresent: true}, Version5) })
}

// TestResetKeepsCapacity: every struct's Reset keeps its slices' capacity,
// so a long-lived decoder struct stops allocating after its first packets.
func TestResetKeepsCapacity(t *testing.T) {
	var s Subscribe
	fh, body := frameOf(t, fixtureWire("SUBSCRIBE/v5/options-shared"))
	allocs(t, "decode SUBSCRIBE", func() {
		if err := s.Decode(fh, body, Version5); err != nil {
			t.Fatal(err)
		}
	})
	var u Unsubscribe
	fh, body = frameOf(t, fixtureWire("UNSUBSCRIBE/v3"))
	allocs(t, "decode UNSUBSCRIBE", func() {
		if err := u.Decode(fh, body, Version311); err != nil {
			t.Fatal(err)
		}
	})
	var sa Suback
	fh, body = frameOf(t, fixtureWire("SUBACK/v5"))
	allocs(t, "decode SUBACK", func() {
		if err := sa.Decode(fh, body, Version5); err != nil {
			t.Fatal(err)
		}
	})
	var c Connect
	fh, body = frameOf(t, fixtureWire("CONNECT/v5/all-properties-will"))
	allocs(t, "decode CONNECT", func() {
		if err := c.Decode(fh, body); err != nil {
			t.Fatal(err)
		}
	})
	var d Disconnect
	fh, body = frameOf(t, fixtureWire("DISCONNECT/v5/use-another-server"))
	allocs(t, "decode DISCONNECT", func() {
		if err := d.Decode(fh, body, Version5); err != nil {
			t.Fatal(err)
		}
	})
	var ca Connack
	fh, body = frameOf(t, fixtureWire("CONNACK/v5/all-properties"))
	allocs(t, "decode CONNACK", func() {
		if err := ca.Decode(fh, body, Version5); err != nil {
			t.Fatal(err)
		}
	})
	var au Auth
	fh, body = frameOf(t, fixtureWire("AUTH/v5/continue"))
	allocs(t, "decode AUTH", func() {
		if err := au.Decode(fh, body, Version5); err != nil {
			t.Fatal(err)
		}
	})
	// Reset clears borrowed slices.
	s.Reset()
	if len(s.Subs) != 0 || cap(s.Subs) == 0 || s.Subs[:1][0].Filter != nil {
		t.Fatalf("Subscribe.Reset: %+v", s.Subs[:1])
	}
	c.Reset()
	if !samePacket(&c, &Connect{}) {
		t.Fatalf("Connect.Reset: %+v", c)
	}
}
