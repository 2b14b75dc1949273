package sessionkey

import (
	"testing"
	"time"
)

// Keys parse back to what built them, and every key of a client partitions by its id.
func TestRoundTrip(t *testing.T) {
	k := QoS2Key("dev/1", 65535)
	if k != "q:dev/1\x0065535" {
		t.Fatalf("QoS2Key = %q", k)
	}
	kind, rest, ok := Split(k)
	if !ok || kind != QoS2 {
		t.Fatalf("Split(%q) = %q, %q, %v", k, kind, rest, ok)
	}
	if id, pid, ok := ParseQoS2(rest); !ok || id != "dev/1" || pid != 65535 {
		t.Fatalf("ParseQoS2(%q) = %q, %d, %v", rest, id, pid, ok)
	}
	for _, bad := range []string{"dev", "dev\x00", "dev\x000", "dev\x0070000"} {
		if _, _, ok := ParseQoS2(bad); ok {
			t.Errorf("ParseQoS2(%q) accepted", bad)
		}
	}
	for _, k := range []string{Key(Session, "dev/1"), Key(Owner, "dev/1"), Key(Delivery, "dev/1"), Key(Will, "dev/1"), QoS2Key("dev/1", 7), PendingKey("dev/1", 9), ConnKey("dev/1", 9)} {
		if got := string(ClientID([]byte(k))); got != "dev/1" {
			t.Errorf("ClientID(%q) = %q", k, got)
		}
	}
	if _, _, ok := Split("x"); ok {
		t.Error("Split accepted a key without a kind")
	}
	if v := string(QoS2Value(time.UnixMilli(1234))); v != `{"v":1,"at":1234}` {
		t.Errorf("QoS2Value = %s", v)
	}
}

// A pending will's key parses back, partitions by the client id, and an epoch header parses as decimal only.
func TestPendingKeyAndEpoch(t *testing.T) {
	k := PendingKey("dev/1", 1765000000123456789)
	kind, rest, ok := Split(k)
	if !ok || kind != Pending {
		t.Fatalf("Split(%q) = %q, %q, %v", k, kind, rest, ok)
	}
	if id, epoch, ok := ParsePending(rest); !ok || id != "dev/1" || epoch != 1765000000123456789 {
		t.Fatalf("ParsePending(%q) = %q, %d, %v", rest, id, epoch, ok)
	}
	if got := string(ClientID([]byte(k))); got != "dev/1" {
		t.Errorf("ClientID(%q) = %q", k, got)
	}
	for _, bad := range []string{"dev", "dev\x00", "dev\x00x1"} {
		if _, _, ok := ParsePending(bad); ok {
			t.Errorf("ParsePending(%q) accepted", bad)
		}
	}
	if e, ok := ParseEpoch([]byte("42")); !ok || e != 42 {
		t.Errorf("ParseEpoch(42) = %d, %v", e, ok)
	}
	if _, ok := ParseEpoch([]byte("4 2")); ok {
		t.Error("ParseEpoch accepted a non-number")
	}
}
