package mqttcodec

import (
	"bytes"
	"errors"
	"testing"
)

func TestVarint(t *testing.T) {
	for _, c := range []struct {
		v    int
		wire []byte
	}{
		{0, h(`00`)}, {1, h(`01`)}, {127, h(`7f`)},
		{128, h(`80 01`)}, {16383, h(`ff 7f`)},
		{16384, h(`80 80 01`)}, {2097151, h(`ff ff 7f`)},
		{2097152, h(`80 80 80 01`)}, {MaxRemaining, h(`ff ff ff 7f`)},
	} {
		if got := AppendVarint(nil, c.v); !bytes.Equal(got, c.wire) {
			t.Fatalf("AppendVarint(%d) = % x, want % x", c.v, got, c.wire)
		}
		if varintLen(c.v) != len(c.wire) {
			t.Fatalf("varintLen(%d) = %d", c.v, varintLen(c.v))
		}
		v, n, err := DecodeVarint(append(c.wire, 0xAA))
		if err != nil || v != c.v || n != len(c.wire) {
			t.Fatalf("DecodeVarint(% x) = %d, %d, %v", c.wire, v, n, err)
		}
		for i := 0; i < len(c.wire); i++ {
			if _, _, err := DecodeVarint(c.wire[:i]); err != ErrIncomplete {
				t.Fatalf("DecodeVarint(% x) = %v, want ErrIncomplete", c.wire[:i], err)
			}
		}
	}
	// A fourth byte with the continuation bit: malformed without a fifth.
	_, _, err := DecodeVarint(h(`ff ff ff ff`))
	wantReason(t, err, MalformedPacket, "longer than 4 bytes")
	_, _, err = DecodeVarint(h(`80 80 80 80 01`))
	wantReason(t, err, MalformedPacket)
	// Non-minimal encodings are accepted (see DecodeVarint).
	if v, n, err := DecodeVarint(h(`80 80 00`)); v != 0 || n != 3 || err != nil {
		t.Fatalf("non-minimal zero: %d %d %v", v, n, err)
	}
	for _, bad := range []int{-1, MaxRemaining + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("AppendVarint(%d) did not panic", bad)
				}
			}()
			AppendVarint(nil, bad)
		}()
	}
}

func TestReadFixedHeader(t *testing.T) {
	fh, err := ReadFixedHeader(h(`3d ff ff ff 7f`), 0)
	if err != nil || fh != (FixedHeader{Type: PUBLISH, Flags: 0xD, Remaining: MaxRemaining, HeaderLen: 5}) {
		t.Fatalf("%+v %v", fh, err)
	}
	if _, err := ReadFixedHeader(nil, 0); err != ErrIncomplete {
		t.Fatal(err)
	}
	if _, err := ReadFixedHeader(h(`30`), 0); err != ErrIncomplete {
		t.Fatal(err)
	}
	if _, err := ReadFixedHeader(h(`30 80 80 80`), 0); err != ErrIncomplete {
		t.Fatal(err)
	}
	// Type and flags are checked on the first byte alone.
	_, err = ReadFixedHeader(h(`00`), 0)
	wantReason(t, err, MalformedPacket, "reserved packet type 0")
	_, err = ReadFixedHeader(h(`36`), 0)
	wantReason(t, err, MalformedPacket, "cannot decode PUBLISH: qos 3")
	fh, err = ReadFixedHeader(h(`30 80 80 80 80`), 0)
	wantReason(t, err, MalformedPacket, "cannot decode PUBLISH: remaining length: variable byte integer longer than 4 bytes")
	if fh.Type != PUBLISH {
		t.Fatalf("type not reported with the error: %+v", fh)
	}
}

func TestMaximumPacketSize(t *testing.T) {
	// 2 header bytes + 100 = 102 bytes.
	wire := cat(h(`30 64 00 01 74`), make([]byte, 97))
	if _, _, _, err := Frame(wire, 102); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Frame(wire, 0); err != nil {
		t.Fatal(err)
	}
	// Refused from the header alone: no body needed.
	fh, err := ReadFixedHeader(wire[:2], 101)
	wantReason(t, err, PacketTooLarge, "cannot decode PUBLISH: packet of 102 bytes exceeds the maximum packet size of 101")
	if fh.Remaining != 100 || fh.HeaderLen != 2 {
		t.Fatalf("%+v", fh)
	}
	_, _, _, err = Frame(wire[:2], 101)
	wantReason(t, err, PacketTooLarge)
	// A remaining length of 268,435,455 against a 1 MiB limit.
	_, err = ReadFixedHeader(h(`30 ff ff ff 7f`), 1<<20)
	wantReason(t, err, PacketTooLarge, "268435460 bytes")
}

func TestFrame(t *testing.T) {
	stream := cat(h(`c0 00`), h(`30 05 00 01 74 68 69`), h(`e0`))
	fh, body, n, err := Frame(stream, 0)
	if err != nil || fh.Type != PINGREQ || len(body) != 0 || n != 2 {
		t.Fatalf("%+v % x %d %v", fh, body, n, err)
	}
	fh, body, n, err = Frame(stream[n:], 0)
	if err != nil || fh.Type != PUBLISH || string(body) != "\x00\x01thi" || n != 7 || cap(body) != len(body) {
		t.Fatalf("%+v % x %d %v", fh, body, n, err)
	}
	if _, _, _, err := Frame(stream[9:], 0); err != ErrIncomplete {
		t.Fatal(err)
	}
	if TypeName(0) != "RESERVED" || TypeName(AUTH) != "AUTH" || TypeName(16) != "UNKNOWN" || TypeName(PUBREL) != "PUBREL" {
		t.Fatal("TypeName")
	}
}

func TestPing(t *testing.T) {
	for _, v := range allVers {
		if _, err := decodeWire(t, h(`c0 00`), v); err != nil {
			t.Fatal(err)
		}
		_, err := decodeWire(t, h(`c0 01 00`), v)
		wantReason(t, err, MalformedPacket, "cannot decode PINGREQ: remaining length is 1, must be 0")
		_, err = decodeWire(t, h(`d0 02 00 00`), v)
		wantReason(t, err, MalformedPacket, "PINGRESP")
	}
	wantReason(t, DecodePing(FixedHeader{Type: PINGREQ, Flags: 1}, nil), MalformedPacket, "fixed header flags 0b0001")
	wantReason(t, new(Publish).Decode(FixedHeader{Type: PUBLISH, Flags: 0x10}, nil, 5), MalformedPacket, "four bits")
	err := DecodePing(FixedHeader{Type: PUBLISH}, nil)
	wantReason(t, err, ProtocolError, "fixed header is for a PUBLISH packet")
}

// TestWrongHeader passes every decoder the header of another type, and a
// body of another length than the header says.
func TestWrongHeader(t *testing.T) {
	body := []byte{0, 1, 0}
	decs := map[byte]func(FixedHeader) error{
		CONNECT:     func(fh FixedHeader) error { return new(Connect).Decode(fh, body) },
		CONNACK:     func(fh FixedHeader) error { return new(Connack).Decode(fh, body, 5) },
		PUBLISH:     func(fh FixedHeader) error { return new(Publish).Decode(fh, body, 5) },
		PUBACK:      func(fh FixedHeader) error { return new(Ack).Decode(fh, body, 5) },
		SUBSCRIBE:   func(fh FixedHeader) error { return new(Subscribe).Decode(fh, body, 5) },
		SUBACK:      func(fh FixedHeader) error { return new(Suback).Decode(fh, body, 5) },
		UNSUBSCRIBE: func(fh FixedHeader) error { return new(Unsubscribe).Decode(fh, body, 5) },
		UNSUBACK:    func(fh FixedHeader) error { return new(Unsuback).Decode(fh, body, 5) },
		DISCONNECT:  func(fh FixedHeader) error { return new(Disconnect).Decode(fh, body, 5) },
		AUTH:        func(fh FixedHeader) error { return new(Auth).Decode(fh, body, 5) },
	}
	for typ, dec := range decs {
		if typ != PUBLISH {
			wantReason(t, dec(FixedHeader{Type: typ, Flags: requiredFlags[typ] ^ 1, Remaining: 3}), MalformedPacket, "fixed header flags")
		}
		other := byte(PINGREQ)
		wantReason(t, dec(FixedHeader{Type: other, Remaining: 3}), ProtocolError, "fixed header is for a PINGREQ packet")
		flags := requiredFlags[typ]
		if typ == PUBLISH {
			flags = 0
		}
		wantReason(t, dec(FixedHeader{Type: typ, Flags: flags, Remaining: 7}), MalformedPacket, "body is 3 bytes but the remaining length is 7")
	}
}

func TestErrorType(t *testing.T) {
	err := error(&Error{Reason: TopicFilterInvalid, Packet: SUBSCRIBE, Msg: "topic filter 3",
		Err: &Error{Reason: TopicFilterInvalid, Msg: "'#' must be the last level"}})
	if got := err.Error(); got != "cannot decode SUBSCRIBE: topic filter 3: '#' must be the last level (0x8F topic filter invalid)" {
		t.Fatalf("%q", got)
	}
	plain := &Error{Reason: ProtocolError, Msg: "x", Err: errors.New("cause")}
	if got := plain.Error(); got != "mqttcodec: x: cause (0x82 protocol error)" {
		t.Fatalf("%q", got)
	}
	if !errors.Is(plain, plain.Err) || errors.Unwrap(plain) != plain.Err {
		t.Fatal("Unwrap")
	}
	if got := (&Error{Reason: 0x05}).Error(); got != "mqttcodec:  (0x05 reason 0x05)" {
		t.Fatalf("%q", got)
	}
	for _, c := range []struct {
		err  error
		want ReasonCode
	}{
		{nil, Success}, {ErrIncomplete, MalformedPacket}, {errors.New("x"), UnspecifiedError},
		{err, TopicFilterInvalid}, {wrapErr(PUBLISH, "f", errors.New("y")), MalformedPacket},
		{fmtWrap(err), TopicFilterInvalid},
	} {
		if got := ReasonOf(c.err); got != c.want {
			t.Fatalf("ReasonOf(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func fmtWrap(err error) error { return &wrapped{err} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "outer: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func TestReasonCodes(t *testing.T) {
	named := 0
	for r := 0; r < 256; r++ {
		s := ReasonCode(r).String()
		if reasonNames[r] != "" {
			named++
		} else if s != "reason "+hex2(byte(r)) {
			t.Fatalf("%#x: %q", r, s)
		}
		if ReasonCode(r).IsError() != (r >= 0x80) {
			t.Fatal("IsError")
		}
	}
	if named != 43 {
		t.Fatalf("%d named reason codes, MQTT 5 defines 43 values", named)
	}
	for _, c := range []struct {
		r    ReasonCode
		want byte
	}{
		{Success, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5},
		{UnsupportedProtocolVersion, 1}, {ClientIdentifierNotValid, 2},
		{ServerUnavailable, 3}, {ServerBusy, 3}, {ServerShuttingDown, 3}, {UseAnotherServer, 3}, {ServerMoved, 3},
		{ConnectionRateExceeded, 3}, {UnspecifiedError, 3}, {MalformedPacket, 3}, {ProtocolError, 3},
		{ImplementationSpecificError, 3}, {PacketTooLarge, 3}, {QuotaExceeded, 3}, {TopicNameInvalid, 3},
		{BadUserNameOrPassword, 4}, {NotAuthorized, 5}, {Banned, 5}, {BadAuthenticationMethod, 5},
	} {
		if got := V3ConnackCode(c.r); got != c.want {
			t.Fatalf("V3ConnackCode(%s) = %d, want %d", c.r, got, c.want)
		}
	}
	for r := 0; r < 256; r++ {
		want := byte(0x80)
		if r <= 2 {
			want = byte(r)
		}
		if V3SubackCode(ReasonCode(r)) != want {
			t.Fatalf("V3SubackCode(%#x)", r)
		}
	}
	if ValidReason(PINGREQ, 0) || !ValidReason(AUTH, ReAuthenticate) || ValidReason(AUTH, 0x80) {
		t.Fatal("ValidReason")
	}
	// CONNACK for v3 never carries a v5 byte.
	for r := 0; r < 256; r++ {
		if enc := AppendConnack(nil, &Connack{Reason: ReasonCode(r)}, Version311); enc[3] > 5 {
			t.Fatalf("v3 CONNACK for %#x carries %#x", r, enc[3])
		}
	}
}
