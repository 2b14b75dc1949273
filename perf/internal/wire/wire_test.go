package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestVarint(t *testing.T) {
	// MQTT 3.1.1 §2.2.3 table 2.4 boundaries.
	cases := []struct {
		n    int
		wire []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7f}},
		{128, []byte{0x80, 0x01}},
		{16383, []byte{0xff, 0x7f}},
		{16384, []byte{0x80, 0x80, 0x01}},
		{2097151, []byte{0xff, 0xff, 0x7f}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
		{268435455, []byte{0xff, 0xff, 0xff, 0x7f}},
	}
	for _, c := range cases {
		got := AppendVarint(nil, c.n)
		if !bytes.Equal(got, c.wire) {
			t.Errorf("AppendVarint(%d) = %x, want %x", c.n, got, c.wire)
		}
		v, n, err := ReadVarint(c.wire)
		if err != nil || v != c.n || n != len(c.wire) {
			t.Errorf("ReadVarint(%x) = %d,%d,%v", c.wire, v, n, err)
		}
		if _, _, err := ReadVarint(c.wire[:len(c.wire)-1]); len(c.wire) > 1 && !errors.Is(err, ErrIncomplete) {
			t.Errorf("truncated %x: err %v", c.wire, err)
		}
	}
	if _, _, err := ReadVarint([]byte{0xff, 0xff, 0xff, 0xff, 0x01}); !errors.Is(err, ErrMalformed) {
		t.Errorf("5-byte varint: err %v", err)
	}
}

func TestConnectGolden(t *testing.T) {
	got := AppendConnect(nil, Connect{ClientID: "c1", KeepAlive: 60, CleanSession: true})
	want := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 2, 'c', '1'}
	if !bytes.Equal(got, want) {
		t.Fatalf("connect = %x\nwant      %x", got, want)
	}
	got = AppendConnect(nil, Connect{ClientID: "c", Username: "u", Password: "p"})
	want = []byte{0x10, 19, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc0, 0, 0, 0, 1, 'c', 0, 1, 'u', 0, 1, 'p'}
	if !bytes.Equal(got, want) {
		t.Fatalf("connect+auth = %x\nwant           %x", got, want)
	}
	got = AppendConnect(nil, Connect{ClientID: "c", CleanSession: true, Will: true})
	want = []byte{0x10, 24, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 0, 0, 1, 'c', 0, 7, 'w', 'i', 'l', 'l', 's', '/', 'c', 0, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("connect+will = %x\nwant           %x", got, want)
	}
}

func TestPublishRoundTrip(t *testing.T) {
	for _, qos := range []byte{0, 1, 2} {
		for _, size := range []int{0, 5, 200, 20000} { // 200 and 20000 need 2- and 3-byte lengths
			payload := bytes.Repeat([]byte{0xab}, size)
			b := AppendPublish(nil, "bench/7", qos, qos == 2, qos == 1, 513, payload)
			f, n, err := Split(b)
			if err != nil || n != len(b) || f.Type != PUBLISH {
				t.Fatalf("qos %d size %d: split %v %d %d", qos, size, err, n, f.Type)
			}
			p, err := ParsePublish(f)
			if err != nil {
				t.Fatal(err)
			}
			if p.QoS != qos || string(p.Topic) != "bench/7" || !bytes.Equal(p.Payload, payload) ||
				p.Retain != (qos == 2) || p.Dup != (qos == 1) {
				t.Fatalf("qos %d size %d: got %+v", qos, size, p)
			}
			if qos > 0 && p.PID != 513 {
				t.Fatalf("pid %d", p.PID)
			}
			for cut := 0; cut < len(b) && cut < 8; cut++ {
				if _, _, err := Split(b[:cut]); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("cut %d: %v", cut, err)
				}
			}
		}
	}
	golden := []byte{0x32, 9, 0, 3, 'a', '/', 'b', 0x01, 0x02, 'h', 'i'}
	if got := AppendPublish(nil, "a/b", 1, false, false, 0x0102, []byte("hi")); !bytes.Equal(got, golden) {
		t.Fatalf("publish = %x, want %x", got, golden)
	}
}

func TestAcksAndControl(t *testing.T) {
	if got := AppendAck(nil, PUBACK, 0x1234); !bytes.Equal(got, []byte{0x40, 2, 0x12, 0x34}) {
		t.Errorf("puback %x", got)
	}
	if got := AppendAck(nil, PUBREL, 1); !bytes.Equal(got, []byte{0x62, 2, 0, 1}) { // [MQTT-3.6.1-1]
		t.Errorf("pubrel %x", got)
	}
	if got := AppendPingreq(nil); !bytes.Equal(got, []byte{0xc0, 0}) {
		t.Errorf("pingreq %x", got)
	}
	if got := AppendDisconnect(nil); !bytes.Equal(got, []byte{0xe0, 0}) {
		t.Errorf("disconnect %x", got)
	}
	sub := AppendSubscribe(nil, 10, 1, "a/#", "b")
	want := []byte{0x82, 12, 0, 10, 0, 3, 'a', '/', '#', 1, 0, 1, 'b', 1}
	if !bytes.Equal(sub, want) {
		t.Errorf("subscribe %x want %x", sub, want)
	}
	unsub := AppendUnsubscribe(nil, 10, "a/#", "b")
	want = []byte{0xa2, 10, 0, 10, 0, 3, 'a', '/', '#', 0, 1, 'b'}
	if !bytes.Equal(unsub, want) {
		t.Errorf("unsubscribe %x want %x", unsub, want)
	}
	f, _, _ := Split(AppendAck(nil, PUBCOMP, 77))
	if pid, err := AckPID(f); err != nil || pid != 77 || f.Type != PUBCOMP {
		t.Errorf("AckPID %d %v", pid, err)
	}
	f, _, _ = Split([]byte{0x20, 2, 0, 5})
	if c, err := ConnackCode(f); err != nil || c != 5 {
		t.Errorf("connack %d %v", c, err)
	}
	f, _, _ = Split([]byte{0x90, 4, 0, 1, 1, 0x80})
	if codes, err := SubackCodes(f); err != nil || !bytes.Equal(codes, []byte{1, 0x80}) {
		t.Errorf("suback %x %v", codes, err)
	}
}

func TestSplitStream(t *testing.T) {
	var b []byte
	b = append(b, 0x20, 2, 0, 0)
	b = AppendPublish(b, strings.Repeat("t", 300), 0, false, false, 0, []byte("x"))
	b = append(b, 0xd0, 0)
	var types []byte
	for len(b) > 0 {
		f, n, err := Split(b)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, f.Type)
		b = b[n:]
	}
	if !bytes.Equal(types, []byte{CONNACK, PUBLISH, PINGRESP}) {
		t.Fatalf("types %v", types)
	}
}

func TestAppendAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	payload := make([]byte, 64)
	n := testing.AllocsPerRun(100, func() {
		b := AppendPublish(buf[:0], "bench/1", 1, false, false, 9, payload)
		f, _, _ := Split(b)
		_, _ = ParsePublish(f)
	})
	if n != 0 {
		t.Fatalf("allocs %v", n)
	}
}
