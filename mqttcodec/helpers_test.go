package mqttcodec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// h parses annotated hex: every "//" comment is dropped, then all
// whitespace; what is left must be hex digits.
func h(s string) []byte {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(strings.Join(strings.Fields(line), ""))
	}
	out, err := hex.DecodeString(b.String())
	if err != nil {
		panic("BUG: bad fixture hex: " + err.Error())
	}
	return out
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// ping stands for a PINGREQ or PINGRESP in the generic helpers.
type ping struct{ Type byte }

// decodePacket frames and decodes the first packet of b into a fresh
// struct. It returns the struct (a pointer), the bytes consumed and the
// error of Frame or Decode.
func decodePacket(b []byte, version byte) (any, int, error) {
	fh, body, n, err := Frame(b, 0)
	if err != nil {
		return nil, 0, err
	}
	p, err := decodeBody(fh, body, version)
	return p, n, err
}

func decodeBody(fh FixedHeader, body []byte, version byte) (any, error) {
	switch fh.Type {
	case CONNECT:
		p := new(Connect)
		return p, p.Decode(fh, body)
	case CONNACK:
		p := new(Connack)
		return p, p.Decode(fh, body, version)
	case PUBLISH:
		p := new(Publish)
		return p, p.Decode(fh, body, version)
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		p := new(Ack)
		return p, p.Decode(fh, body, version)
	case SUBSCRIBE:
		p := new(Subscribe)
		return p, p.Decode(fh, body, version)
	case SUBACK:
		p := new(Suback)
		return p, p.Decode(fh, body, version)
	case UNSUBSCRIBE:
		p := new(Unsubscribe)
		return p, p.Decode(fh, body, version)
	case UNSUBACK:
		p := new(Unsuback)
		return p, p.Decode(fh, body, version)
	case PINGREQ, PINGRESP:
		return &ping{fh.Type}, DecodePing(fh, body)
	case DISCONNECT:
		p := new(Disconnect)
		return p, p.Decode(fh, body, version)
	case AUTH:
		p := new(Auth)
		return p, p.Decode(fh, body, version)
	}
	panic("BUG: Frame returned packet type " + fmt.Sprint(fh.Type))
}

// encodePacket appends p (as returned by decodePacket) for version.
func encodePacket(dst []byte, p any, version byte) []byte {
	switch p := p.(type) {
	case *Connect:
		return AppendConnect(dst, p)
	case *Connack:
		return AppendConnack(dst, p, version)
	case *Publish:
		return AppendPublish(dst, p, version)
	case *Ack:
		return AppendAck(dst, p, version)
	case *Subscribe:
		return AppendSubscribe(dst, p, version)
	case *Suback:
		return AppendSuback(dst, p, version)
	case *Unsubscribe:
		return AppendUnsubscribe(dst, p, version)
	case *Unsuback:
		return AppendUnsuback(dst, p, version)
	case *ping:
		if p.Type == PINGREQ {
			return AppendPingreq(dst)
		}
		return AppendPingresp(dst)
	case *Disconnect:
		return AppendDisconnect(dst, p, version)
	case *Auth:
		return AppendAuth(dst, p)
	}
	panic(fmt.Sprintf("BUG: encodePacket of %T", p))
}

// show renders a packet struct for comparison: %+v prints nil and empty
// slices alike and includes the unexported presence bits.
func show(p any) string { return fmt.Sprintf("%+v", p) }

// reasonOf asserts err is an *Error and returns it.
func asError(t testing.TB, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return e
}

// wantReason fails unless err is an *Error with reason r whose message
// contains every one of parts.
func wantReason(t testing.TB, err error, r ReasonCode, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want reason %s (%s)", hex2(byte(r)), r)
	}
	e := asError(t, err)
	if e.Reason != r {
		t.Fatalf("reason %s (%s), want %s (%s); error: %v", hex2(byte(e.Reason)), e.Reason, hex2(byte(r)), r, err)
	}
	msg := err.Error()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Fatalf("error %q does not contain %q", msg, p)
		}
	}
	if e.Msg != "" && unicode.IsUpper(rune(e.Msg[0])) {
		t.Fatalf("error message %q does not start in lower case", e.Msg)
	}
}

// decodeWire frames b and decodes it for version, failing the test if
// Frame fails; it returns the decode error.
func decodeWire(t testing.TB, b []byte, version byte) (any, error) {
	t.Helper()
	fh, body, n, err := Frame(b, 0)
	if err != nil {
		return nil, err
	}
	if n != len(b) {
		t.Fatalf("frame spans %d bytes of %d", n, len(b))
	}
	return decodeBody(fh, body, version)
}

// str is a two-byte length prefixed string.
func str(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// pkt builds a packet: first byte, remaining length computed, body parts.
func pkt(first byte, parts ...[]byte) []byte {
	body := cat(parts...)
	return append(AppendVarint([]byte{first}, len(body)), body...)
}

// props builds a property block: varint length then the bytes.
func props(parts ...[]byte) []byte {
	b := cat(parts...)
	return append(AppendVarint(nil, len(b)), b...)
}

func b(v ...byte) []byte { return v }

// mkProps builds a Properties from (PropID, value) pairs, marking each
// present: values are int for integer properties, string for strings and
// binary data, and [2]string for a user property.
func mkProps(kv ...any) Properties {
	var p Properties
	for i := 0; i < len(kv); i += 2 {
		id := kv[i].(PropID)
		switch v := kv[i+1].(type) {
		case [2]string:
			p.User = append(p.User, UserProperty{[]byte(v[0]), []byte(v[1])})
			continue
		case string:
			bs := []byte(v)
			switch id {
			case PropContentType:
				p.ContentType = bs
			case PropResponseTopic:
				p.ResponseTopic = bs
			case PropCorrelationData:
				p.CorrelationData = bs
			case PropAssignedClientID:
				p.AssignedClientID = bs
			case PropAuthMethod:
				p.AuthMethod = bs
			case PropAuthData:
				p.AuthData = bs
			case PropResponseInfo:
				p.ResponseInfo = bs
			case PropServerReference:
				p.ServerReference = bs
			case PropReasonString:
				p.ReasonString = bs
			default:
				panic("BUG: mkProps: string for " + id.String())
			}
		case int:
			switch id {
			case PropPayloadFormat:
				p.PayloadFormat = byte(v)
			case PropMessageExpiry:
				p.MessageExpiry = uint32(v)
			case PropSubscriptionID:
				p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
				continue
			case PropSessionExpiry:
				p.SessionExpiry = uint32(v)
			case PropServerKeepAlive:
				p.ServerKeepAlive = uint16(v)
			case PropRequestProblemInfo:
				p.RequestProblemInfo = byte(v)
			case PropWillDelay:
				p.WillDelay = uint32(v)
			case PropRequestResponseInfo:
				p.RequestResponseInfo = byte(v)
			case PropReceiveMaximum:
				p.ReceiveMaximum = uint16(v)
			case PropTopicAliasMaximum:
				p.TopicAliasMaximum = uint16(v)
			case PropTopicAlias:
				p.TopicAlias = uint16(v)
			case PropMaximumQoS:
				p.MaximumQoS = byte(v)
			case PropRetainAvailable:
				p.RetainAvailable = byte(v)
			case PropMaximumPacketSize:
				p.MaximumPacketSize = uint32(v)
			case PropWildcardSubAvailable:
				p.WildcardSubAvailable = byte(v)
			case PropSubIDAvailable:
				p.SubIDAvailable = byte(v)
			case PropSharedSubAvailable:
				p.SharedSubAvailable = byte(v)
			default:
				panic("BUG: mkProps: int for " + id.String())
			}
		}
		p.Set(id)
	}
	return p
}

// samePacket reports whether two decoded packets are equal, treating nil
// and empty slices alike (a decoder returns empty, non-nil slices for
// empty fields; a hand-built struct may hold nil).
func samePacket(a, b any) bool { return sameValue(reflect.ValueOf(a), reflect.ValueOf(b)) }

func sameValue(a, b reflect.Value) bool {
	if a.Kind() != b.Kind() || a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		if a.Type().Elem().Kind() == reflect.Uint8 {
			return bytes.Equal(a.Bytes(), b.Bytes())
		}
		for i := 0; i < a.Len(); i++ {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return a.Uint() == b.Uint()
	}
	panic("BUG: samePacket: kind " + a.Kind().String())
}
