package server_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
)

// FuzzConnection feeds fuzzer-made bytes to a live Ferry over a real socket. Each input opens a fresh connection
// to an instance shared by the whole fuzz process, sends a valid CONNECT (MQTT 3.1.1 when data[0] is even, 5.0
// when odd), then writes data[1:] in chunks whose sizes come from cuts (each byte: a chunk of (b&0x7F)+1 bytes,
// preceded by a 1 ms pause when b&0x80 is set, so the server also sees packets split across reads).
//
// Checked after every input: the server never panics (it runs in this process, so a panic on an event loop kills
// the fuzz worker); the event loops never stall (two long-lived healthy connections, one per loop under gnet's
// round-robin, each get PINGRESP to PINGREQ within 2 s); the fuzzed connection is usable or closed, never hung
// (whole packets followed by PINGREQ get PINGRESP or a close within 2 s; a packet that cannot be framed gets a
// close within 2 s; a stream that ends inside a packet may wait for the rest).
//
// Run it with: go test -run '^$' -fuzz FuzzConnection -fuzztime 60s ./server/ (or scripts/fuzz.sh).
func FuzzConnection(f *testing.F) {
	for _, s := range fuzzConnSeeds() {
		f.Add(s.data, s.cuts)
	}
	fz := fuzzInstance(f)
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		if len(data) == 0 {
			return
		}
		if len(data) > 64<<10 {
			data = data[:64<<10]
		}
		version := mqttcodec.Version311
		if data[0]&1 == 1 {
			version = mqttcodec.Version5
		}
		fz.run(t, version, data[1:], cuts)
		fz.checkHealth(t)
	})
}

// fuzzState is the Ferry instance of one fuzz process and its healthy connections. It is created once per
// process (sync.Once) on the first FuzzConnection call, and forgotten when that call ends, so a later call in the
// same process (-count=2) starts a new one.
type fuzzState struct {
	once   sync.Once
	f      *ferry
	health []net.Conn
	seq    atomic.Int64
}

var fuzzShared = &fuzzState{}

func fuzzInstance(f *testing.F) *fuzzState {
	fz := fuzzShared
	fz.once.Do(func() {
		fz.f = startFerry(f)
		for i := 0; i < 2; i++ { // gnet assigns connections round-robin: one healthy connection per loop
			nc, err := net.DialTimeout("tcp", fz.f.addr, 5*time.Second)
			if err != nil {
				f.Fatal(err)
			}
			f.Cleanup(func() { nc.Close() })
			p := mqttcodec.Connect{Version: mqttcodec.Version5, CleanStart: true, ClientID: []byte(fmt.Sprintf("fuzz-health-%d-%d", os.Getpid(), i))}
			if _, err := nc.Write(mqttcodec.AppendConnect(nil, &p)); err != nil {
				f.Fatal(err)
			}
			var rd []byte
			if fh, _, err := readFrame(nc, &rd, time.Now().Add(5*time.Second)); err != nil || fh.Type != mqttcodec.CONNACK {
				f.Fatalf("healthy connection: %s %v", mqttcodec.TypeName(fh.Type), err)
			}
			fz.health = append(fz.health, nc)
		}
		f.Cleanup(func() { fuzzShared = &fuzzState{} })
	})
	return fz
}

// readFrame reads the next whole packet from nc, keeping unread bytes in *rd.
func readFrame(nc net.Conn, rd *[]byte, deadline time.Time) (mqttcodec.FixedHeader, []byte, error) {
	_ = nc.SetReadDeadline(deadline)
	buf := make([]byte, 16<<10)
	for {
		fh, body, n, err := mqttcodec.Frame(*rd, 0)
		if err == nil {
			*rd = (*rd)[n:]
			return fh, body, nil
		}
		if !errors.Is(err, mqttcodec.ErrIncomplete) {
			return fh, nil, fmt.Errorf("server sent bytes that do not frame (% x): %w", *rd, err)
		}
		m, rerr := nc.Read(buf)
		*rd = append(*rd, buf[:m]...)
		if rerr != nil && m == 0 {
			return fh, nil, rerr
		}
	}
}

// checkHealth pings every healthy connection: each event loop must answer within 2 s.
func (fz *fuzzState) checkHealth(t *testing.T) {
	t.Helper()
	for i, nc := range fz.health {
		if _, err := nc.Write(mqttcodec.AppendPingreq(nil)); err != nil {
			t.Fatalf("healthy connection %d: %v", i, err)
		}
		var rd []byte
		fh, body, err := readFrame(nc, &rd, time.Now().Add(2*time.Second))
		if err != nil || fh.Type != mqttcodec.PINGRESP || len(rd) != 0 {
			t.Fatalf("healthy connection %d: no PINGRESP within 2 s (got %s % x, %v): an event loop is stuck",
				i, mqttcodec.TypeName(fh.Type), body, err)
		}
	}
}

// streamShape says what the server can make of the bytes it was given.
type streamShape uint8

const (
	shapeWhole      streamShape = iota // whole packets only
	shapePartial                       // ends inside a packet: the server waits for the rest
	shapeUnframable                    // a fixed header the server must refuse: it closes
)

func shapeOf(b []byte, max int) streamShape {
	for len(b) > 0 {
		_, _, n, err := mqttcodec.Frame(b, max)
		switch {
		case errors.Is(err, mqttcodec.ErrIncomplete):
			return shapePartial
		case err != nil:
			return shapeUnframable
		}
		b = b[n:]
	}
	return shapeWhole
}

// run connects, writes the stream in chunks and checks the fuzzed connection's end state.
func (fz *fuzzState) run(t *testing.T, version byte, stream, cuts []byte) {
	nc, err := net.DialTimeout("tcp", fz.f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	id := fmt.Sprintf("fz-%d-%d", os.Getpid(), fz.seq.Add(1))
	p := mqttcodec.Connect{Version: version, CleanStart: true, ClientID: []byte(id)}
	if _, err := nc.Write(mqttcodec.AppendConnect(nil, &p)); err != nil {
		t.Fatal(err)
	}
	var rd []byte
	fh, body, err := readFrame(nc, &rd, time.Now().Add(5*time.Second))
	if err != nil || fh.Type != mqttcodec.CONNACK {
		t.Fatalf("CONNECT v%d: got %s % x, %v", version, mqttcodec.TypeName(fh.Type), body, err)
	}

	closed := false
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	rest, pauses := stream, 0
	for i := 0; len(rest) > 0 && !closed; i++ {
		n := len(rest)
		if i < len(cuts) {
			n = min(n, int(cuts[i]&0x7F)+1)
			if cuts[i]&0x80 != 0 && pauses < 8 {
				pauses++
				time.Sleep(time.Millisecond)
			}
		}
		if _, err := nc.Write(rest[:n]); err != nil {
			if isTimeout(err) {
				t.Fatalf("write blocked for 5 s: the server stopped reading without closing")
			}
			closed = true // the server closed on something earlier in the stream
		}
		rest = rest[n:]
	}

	shape := shapeOf(stream, 1<<20)
	if closed || shape == shapePartial {
		return
	}
	if shape == shapeWhole {
		if _, err := nc.Write(mqttcodec.AppendPingreq(nil)); err != nil {
			return // closed meanwhile
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		fh, _, err := readFrame(nc, &rd, deadline)
		switch {
		case err == nil && fh.Type == mqttcodec.PINGRESP && shape == shapeWhole:
			return // usable
		case err == nil:
			continue // acks, deliveries, a DISCONNECT before the close
		case isTimeout(err) && shape == shapeWhole:
			t.Fatalf("v%d: whole packets sent, then PINGREQ: neither PINGRESP nor a close within 2 s", version)
		case isTimeout(err):
			t.Fatalf("v%d: a packet that cannot be framed was sent; the connection is still open after 2 s", version)
		default:
			return // closed
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type fuzzSeed struct{ data, cuts []byte }

// fuzzConnSeeds: valid sessions of both versions, every connected-phase case of the hostile corpus for 3.1.1 and
// 5.0, and a few split variants.
func fuzzConnSeeds() []fuzzSeed {
	var seeds []fuzzSeed
	sel := func(v byte) byte { return map[byte]byte{mqttcodec.Version311: 0, mqttcodec.Version5: 1}[v] }
	for _, v := range []byte{mqttcodec.Version311, mqttcodec.Version5} {
		session := cat(
			subscribePkt(v, 1, nil, subPair("fz/#", 2), subPair("fz/+/x", 1)),
			publishPkt(v, 0x00, "fz/a", 0, nil, "qos0"),
			publishPkt(v, 0x02, "fz/a", 1, nil, "qos1"),
			publishPkt(v, 0x04, "fz/a", 2, nil, "qos2"),
			pkt(0x62, u16(2)), // PUBREL for the QoS 2 publish
			pkt(0x40, u16(1)), // PUBACK, PUBREC, PUBCOMP for deliveries the server may have sent
			pkt(0x50, u16(2)),
			pkt(0x70, u16(2)),
			unsubscribePkt(v, 3, nil, "fz/#", "fz/+/x"),
			mqttcodec.AppendPingreq(nil),
		)
		seeds = append(seeds,
			fuzzSeed{cat([]byte{sel(v)}, session), nil},
			fuzzSeed{cat([]byte{sel(v)}, session, validPacket(mqttcodec.DISCONNECT, v)), nil},
			fuzzSeed{cat([]byte{sel(v)}, session), []byte{0x80, 0x80, 0x83, 0x01, 0x8F, 0x02, 0x7F}},
			fuzzSeed{cat([]byte{sel(v)}, mqttcodec.AppendPingreq(nil), mqttcodec.AppendPingreq(nil)), []byte{0x80}},
		)
	}
	// A 3.1.1 QoS 2 burst as large as the server's Receive Maximum, then the PUBRELs: the full window must not
	// stop the server from reading them (FOUND_BUGS.md #2).
	var burst []byte
	for id := 1; id <= 1024; id++ {
		burst = append(burst, publishPkt(mqttcodec.Version311, 0x04, "fz/burst", uint16(id), nil, "x")...)
	}
	for id := 1; id <= 1024; id++ {
		burst = append(burst, pkt(0x62, u16(uint16(id)))...)
	}
	seeds = append(seeds, fuzzSeed{cat([]byte{0}, burst), nil})
	seeds = append(seeds, fuzzSeed{cat([]byte{1},
		publishPkt(mqtt5, 0x02, "fz/alias", 1, props(pU16(mqttcodec.PropTopicAlias, 1)), "define"),
		publishPkt(mqtt5, 0x02, "", 2, props(pU16(mqttcodec.PropTopicAlias, 1), pUser("k", "v")), "use"),
		pkt(0xE0, []byte{0x04}), // DISCONNECT with will
	), nil})
	for _, c := range hostileCorpus() {
		if c.phase != afterConnect || c.version == mqttcodec.Version31 {
			continue
		}
		seeds = append(seeds, fuzzSeed{cat([]byte{sel(c.version)}, c.bytes), nil})
	}
	return seeds
}
