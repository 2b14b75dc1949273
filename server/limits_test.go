package server_test

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/pires/go-proxyproto"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// Limits at the edge (limits.go). Covered elsewhere, not repeated here: a silent socket and a slowloris CONNECT
// closed at the CONNECT timeout (TestConnectTimeout, TestHostileSlowlorisConnect, TestHostileTimeoutsNotEarly),
// a 10 MB PUBLISH announcement refused with 0x95 from its header (TestBadInput), the Receive Maximum window
// (TestBadInput, TestHostileV3QoS2WindowReleases), subscription and alias quotas (TestQuotas), the outbound
// budget (TestDeadSubscriber), and max-connections for paho clients (TestMaxConnections).

// sendConnect sends a CONNECT (after pre, e.g. a PROXY header) and returns the decoded CONNACK.
func sendConnect(t testing.TB, r *raw, pre []byte, version byte, id string) mqttcodec.Connack {
	t.Helper()
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: version, CleanStart: true, KeepAlive: 30, ClientID: []byte(id)}
	r.send(mqttcodec.AppendConnect(append([]byte(nil), pre...), &p))
	fh, body := r.packet()
	var ack mqttcodec.Connack
	if fh.Type != mqttcodec.CONNACK {
		t.Fatalf("got %s, want CONNACK", mqttcodec.TypeName(fh.Type))
	}
	if err := ack.Decode(fh, body, version); err != nil {
		t.Fatalf("CONNACK: %v", err)
	}
	return ack
}

// Over --max-connections, a v5 client gets CONNACK 0x97 and a v3 client return code 3, both counted; the
// connections already there keep working.
func TestLimitMaxConnectionsCodes(t *testing.T) {
	f := startFerry(t, server.MaxConnections(1))
	first := dialV5(t, f.addr, &paho.Connect{ClientID: "only", CleanStart: true})
	if ack := sendConnect(t, dialRaw(t, f.addr), nil, 5, "more5"); ack.Reason != mqttcodec.QuotaExceeded {
		t.Fatalf("v5: CONNACK %s, want 0x97 Quota Exceeded", ack.Reason)
	}
	if ack := sendConnect(t, dialRaw(t, f.addr), nil, 4, "more4"); ack.Reason != 3 {
		t.Fatalf("v3: CONNACK return code %d, want 3 server unavailable", ack.Reason)
	}
	if got := f.srv.Metrics().Snapshot().Refused; got[mqttcodec.QuotaExceeded] != 1 || got[mqttcodec.ServerUnavailable] != 1 {
		t.Fatalf("refusals counted %v, want one 0x97 and one 0x88 (v3 code 3)", got)
	}
	first.sub(t, paho.SubscribeOptions{Topic: "lim/#", QoS: 1})
	first.pub(t, &paho.Publish{Topic: "lim/ok", QoS: 1, Payload: []byte("still")})
	if m := first.next(t); string(m.Payload) != "still" {
		t.Fatalf("got %q", m.Payload)
	}
}

// --max-connection-rate: an address past its burst gets CONNACK 0x9F (v5) / return code 3 (v3) while another
// address connects fine; an IPv6 /64 is one source. Addresses come from PROXY headers.
func TestLimitConnectionRate(t *testing.T) {
	proxied := "127.0.0.1:" + strconv.Itoa(freePort(t))
	f := startFerry(t, server.Listen("tcp://"+proxied+"?proxy=true"), server.MaxConnectionRate(0.1, 2))
	header := func(src string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
			net.TCPAddrFromAddrPort(netip.MustParseAddrPort(proxied)))
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	connect := func(src string, version byte, id string) mqttcodec.ReasonCode {
		return sendConnect(t, dialRaw(t, proxied), header(src), version, id).Reason
	}
	for i := range 2 {
		if r := connect("203.0.113.7:4000", 5, "burst"+strconv.Itoa(i)); r != mqttcodec.Success {
			t.Fatalf("connection %d within the burst: CONNACK %s", i+1, r)
		}
	}
	if r := connect("203.0.113.7:4001", 5, "over5"); r != mqttcodec.ConnectionRateExceeded {
		t.Fatalf("v5 over the rate: CONNACK %s, want 0x9F Connection Rate Exceeded", r)
	}
	if r := connect("203.0.113.7:4002", 4, "over4"); r != 3 {
		t.Fatalf("v3 over the rate: return code %d, want 3", r)
	}
	if r := connect("198.51.100.1:4000", 5, "other"); r != mqttcodec.Success {
		t.Fatalf("another address: CONNACK %s", r)
	}
	// Two addresses of one /64 share a bucket; the next /64 has its own.
	for i, src := range []string{"[2001:db8:1:2::1]:5000", "[2001:db8:1:2::2]:5000"} {
		if r := connect(src, 5, "v6-"+strconv.Itoa(i)); r != mqttcodec.Success {
			t.Fatalf("%s within the /64's burst: CONNACK %s", src, r)
		}
	}
	if r := connect("[2001:db8:1:2::3]:5000", 5, "v6-over"); r != mqttcodec.ConnectionRateExceeded {
		t.Fatalf("third connection from one /64: CONNACK %s, want 0x9F", r)
	}
	if r := connect("[2001:db8:1:3::1]:5000", 5, "v6-next"); r != mqttcodec.Success {
		t.Fatalf("the next /64: CONNACK %s", r)
	}
	if n := f.srv.Metrics().Snapshot().Refused[mqttcodec.ConnectionRateExceeded]; n != 3 {
		t.Fatalf("ferry_connects_refused_total{code=0x9F} = %d, want 3", n)
	}
}

// A CONNECT whose fixed header announces 10 MB is refused from the header alone: the socket closes at once,
// long before 10 MB could arrive, and nothing is buffered for it.
func TestLimitHugeConnectAnnouncement(t *testing.T) {
	f := startFerry(t)
	r := dialRaw(t, f.addr)
	start := time.Now()
	r.send(mqttcodec.AppendVarint([]byte{0x10}, 10<<20))
	r.send(bytes.Repeat([]byte{0}, 100))
	expectEnd(t, r, 2*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("closed after %v", took)
	}
	if n := f.srv.Metrics().Snapshot().ProtocolErrorsByCode[mqttcodec.PacketTooLarge]; n != 1 {
		t.Fatalf("protocol errors 0x95 = %d, want 1", n)
	}
}

// --max-publish-rate: a flooding v5 client is first slowed (its packets stay unread between ticks), then,
// still over the rate after the grace period, disconnected with 0x96; a v3 one is closed. A probe client's
// round trip through Kafka stays fast meanwhile.
func TestLimitPublishRate(t *testing.T) {
	const rate, grace = 20, 2 * time.Second
	f := startFerry(t, server.MaxPublishRate(rate, rate, grace))
	probe := dialV5(t, f.addr, &paho.Connect{ClientID: "probe", CleanStart: true})
	probe.sub(t, paho.SubscribeOptions{Topic: "probe/#", QoS: 1})

	flood := func(r *raw, version byte, stop *atomic.Bool) {
		b := publishBytes(version, "flood/x", 0, 0)
		for !stop.Load() {
			if _, err := r.nc.Write(b); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond) // about 400/s: 20 times the rate, far under the inbound byte budget
		}
	}
	r := hostileConnect(t, f.addr, mqttcodec.Version5, "flooder5", 60)
	var stop atomic.Bool
	defer stop.Store(true)
	start := time.Now()
	go flood(r, 5, &stop)

	// Probe round trips while the flood runs.
	var worst time.Duration
	for time.Since(start) < 1500*time.Millisecond {
		t0 := time.Now()
		probe.pub(t, &paho.Publish{Topic: "probe/rt", QoS: 1, Payload: []byte("p")})
		probe.next(t)
		worst = max(worst, time.Since(t0))
		time.Sleep(50 * time.Millisecond)
	}
	s := f.srv.Metrics().Snapshot()
	if in := s.PublishesIn[0]; in > 3*rate+rate { // burst, plus one refill per tick
		t.Fatalf("%d QoS 0 publishes read in 1.5 s at a rate of %d/s with burst %d: not slowed", in, rate, rate)
	}
	if f.srv.Metrics().Limits().PublishThrottled == 0 {
		t.Fatal("no throttling counted")
	}
	r.expectDisconnect(mqttcodec.MessageRateTooHigh)
	took := time.Since(start)
	stop.Store(true)
	if took < grace-time.Second || took > grace+3*time.Second {
		t.Fatalf("DISCONNECT 0x96 after %v, want after the %v grace (ticks are 1 s)", took, grace)
	}
	if worst > 500*time.Millisecond {
		t.Fatalf("probe round trip took %v during the flood", worst)
	}
	t.Logf("flooder disconnected after %v; %d publishes read; worst probe round trip %v", took, f.srv.Metrics().Snapshot().PublishesIn[0], worst)
	if n := f.srv.Metrics().Snapshot().ProtocolErrorsByCode[mqttcodec.MessageRateTooHigh]; n != 1 {
		t.Fatalf("0x96 counted %d times, want 1", n)
	}

	// A v3 client cannot be told: it is closed.
	r3 := hostileConnect(t, f.addr, mqttcodec.Version311, "flooder3", 60)
	var stop3 atomic.Bool
	defer stop3.Store(true)
	go flood(r3, 4, &stop3)
	expectEnd(t, r3, grace+4*time.Second)
	stop3.Store(true)

	// A client under the rate is never slowed.
	calm := dialV5(t, f.addr, &paho.Connect{ClientID: "calm", CleanStart: true})
	before := f.srv.Metrics().Limits().PublishThrottled
	for range rate / 2 {
		calm.pub(t, &paho.Publish{Topic: "probe/calm", QoS: 1, Payload: []byte("c")})
		probe.next(t)
	}
	if f.srv.Metrics().Limits().PublishThrottled != before {
		t.Fatal("a client under its burst was throttled")
	}
}
