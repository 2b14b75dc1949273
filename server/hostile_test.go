package server_test

// Issue 8, "Hostile bytes": a corpus of malformed, truncated, oversized and out-of-order packets, generated from
// valid encodings and fed over real sockets to ONE Ferry instance while a healthy paho.golang client keeps
// publishing and receiving on it. Every case names the normative statement it exercises (or, for rules without a
// tag, the section: "v5-3.8.3.1/..."), and its expected outcome comes from the specifications:
//
//   - MQTT 5.0, connected: DISCONNECT with the reason code, then close (4.13: "SHOULD send a DISCONNECT with
//     the reason code before closing"). 0x81 for what cannot be parsed (1.2 "Malformed Packet"; 2.2.2.2 a
//     property not valid for the packet; 1.5.4 bad UTF-8), 0x82 for what parses but breaks a rule (1.2
//     "Protocol Error"; "It is a Protocol Error to include X more than once"), 0x90/0x8F/0x94/0x95/0x99 where the
//     spec names those codes.
//   - MQTT 5.0, CONNECT: CONNACK with the reason code, then close (3.1.4: "MAY send a CONNACK with a Reason Code
//     of 0x80 or greater"; Ferry does, so the test pins it).
//   - MQTT 3.1/3.1.1: close, with no packet at all [MQTT-4.8.0-1] — except the CONNACK return codes 3.1.1
//     prescribes: 1 for an unacceptable protocol level [MQTT-3.1.2-2], 2 for a rejected identifier
//     [MQTT-3.1.3-8] [MQTT-3.1.3-9]; a malformed CONNECT gets no CONNACK [MQTT-3.1.4-1].
//   - Before CONNECT: close, no packet [MQTT-3.1.0-1].
//   - A packet whose Remaining Length promises more than is sent, then silence: nothing, until the CONNECT
//     timeout or the keep-alive (1.5 x) closes the connection (v5: DISCONNECT 0x8D then), never sooner.
//
// After the corpus come the tests of the bugs it found , each fixed since: timers, slowloris,
// keep-alive held by partial packets, the v3 QoS 2 window, Reason Strings beyond the client's packet size.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// --- running a case ----------------------------------------------------------------------------------------------

// The CONNECT timeout the instance runs with, and the keep-alive (seconds) of connections whose case expects
// silence. The server's timing wheel has one-second steps and closes late rather than early, so a silent case
// waits at most silenceAtMost.
const (
	hostileConnectTimeout = 2 * time.Second
	hostileKeepAlive      = 1
	silenceAtMost         = 5 * time.Second
)

// silenceFloor is the earliest a timeout may close a silent case: ConnectTimeout after the socket opened, or one
// and a half keep-alive periods after the last whole packet [MQTT-3.1.2-22] (5.0) [MQTT-3.1.2-24] (3.1.1); the
// bytes of an unfinished packet do not count. 100 ms are left for the gap between the server's and the test's
// reference points (accept vs. send).
func silenceFloor(c hcase) time.Duration {
	if c.phase == beforeConnect {
		return hostileConnectTimeout - 100*time.Millisecond
	}
	return hostileKeepAlive*1500*time.Millisecond - 100*time.Millisecond
}

// readUntil reads the next whole packet from r before the deadline.
func (r *raw) readUntil(deadline time.Time) (mqttcodec.FixedHeader, []byte, error) {
	_ = r.nc.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	for {
		fh, body, n, err := mqttcodec.Frame(r.rd, 0)
		if err == nil {
			body = append([]byte(nil), body...)
			r.rd = r.rd[n:]
			return fh, body, nil
		}
		if !errors.Is(err, mqttcodec.ErrIncomplete) {
			return fh, nil, fmt.Errorf("server sent an unframeable packet % x: %w", r.rd, err)
		}
		m, rerr := r.nc.Read(buf)
		r.rd = append(r.rd, buf[:m]...)
		if rerr != nil && m == 0 {
			return fh, nil, rerr
		}
	}
}

func closedErr(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func describe(fh mqttcodec.FixedHeader, body []byte) string {
	return fmt.Sprintf("%s % x", mqttcodec.TypeName(fh.Type), body)
}

// hostileConnect opens a connection of version v with a successful CONNECT.
func hostileConnect(t testing.TB, addr string, v byte, id string, ka uint16) *raw {
	t.Helper()
	r := dialRaw(t, addr)
	p := mqttcodec.Connect{Version: v, CleanStart: true, KeepAlive: ka, ClientID: []byte(id)}
	r.send(mqttcodec.AppendConnect(nil, &p))
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if err != nil || fh.Type != mqttcodec.CONNACK {
		t.Fatalf("CONNECT v%d: got %s, %v", v, describe(fh, body), err)
	}
	var ack mqttcodec.Connack
	if err := ack.Decode(fh, body, v); err != nil || ack.Reason != 0 {
		t.Fatalf("CONNACK: %v, reason %s", err, ack.Reason)
	}
	return r
}

// expectEnd asserts that nothing but the close follows.
func expectEnd(t testing.TB, r *raw, within time.Duration) {
	t.Helper()
	fh, body, err := r.readUntil(time.Now().Add(within))
	if err == nil {
		t.Fatalf("got %s, want the connection closed", describe(fh, body))
	}
	if !closedErr(err) {
		t.Fatalf("connection still open after %v: %v", within, err)
	}
}

// expectUsable asserts that the connection still answers PINGREQ.
func expectUsable(t testing.TB, r *raw) {
	t.Helper()
	r.send(mqttcodec.AppendPingreq(nil))
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if err != nil || fh.Type != mqttcodec.PINGRESP {
		t.Fatalf("connection not usable: got %s, %v (want PINGRESP)", describe(fh, body), err)
	}
}

func runHostile(t *testing.T, addr string, c hcase, idx int) {
	var r *raw
	if c.phase == afterConnect {
		ka := uint16(30)
		if c.want.kind == wantSilence {
			ka = hostileKeepAlive
		}
		r = hostileConnect(t, addr, c.version, fmt.Sprintf("h%d", idx), ka)
	} else {
		r = dialRaw(t, addr)
	}
	start := time.Now()
	r.send(c.bytes)
	switch c.want.kind {
	case wantClose:
		expectEnd(t, r, 5*time.Second)
	case wantDisconnect:
		expectDisconnectCode(t, r, c.want.code)
	case wantConnack, wantRefusal:
		expectConnack(t, r, c)
	case wantSilence:
		expectSilence(t, r, c, start)
	case wantReply:
		expectReply(t, r, c)
	case wantIgnored:
		expectUsable(t, r)
	}
}

// expectDisconnectCode asserts a v5 DISCONNECT with the reason code, then the close.
func expectDisconnectCode(t *testing.T, r *raw, code mqttcodec.ReasonCode) {
	t.Helper()
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	var d mqttcodec.Disconnect
	if err != nil || fh.Type != mqttcodec.DISCONNECT || d.Decode(fh, body, mqttcodec.Version5) != nil {
		t.Fatalf("got %s, %v; want DISCONNECT 0x%02X", describe(fh, body), err, byte(code))
	}
	if d.Reason != code {
		t.Fatalf("DISCONNECT %s (%q); want 0x%02X %s", d.Reason, d.Props.ReasonString, byte(code), code)
	}
	expectEnd(t, r, 5*time.Second)
}

// expectConnack asserts the refusal of a CONNECT: the CONNACK code (or, for wantRefusal, any failure code or
// none at all), then the close.
func expectConnack(t *testing.T, r *raw, c hcase) {
	t.Helper()
	w := c.want
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if w.kind == wantRefusal && closedErr(err) {
		return
	}
	form := w.connackForm
	if w.kind == wantRefusal {
		form = c.version
	}
	var a mqttcodec.Connack
	if err != nil || fh.Type != mqttcodec.CONNACK || a.Decode(fh, body, form) != nil {
		t.Fatalf("got %s, %v; want %s", describe(fh, body), err, w)
	}
	if w.kind == wantConnack && a.Reason != w.code || w.kind == wantRefusal && a.Reason == 0 || a.SessionPresent {
		t.Fatalf("CONNACK reason 0x%02X present=%v; want %s", byte(a.Reason), a.SessionPresent, w)
	}
	expectEnd(t, r, 5*time.Second)
}

// expectSilence asserts that nothing comes until a timeout closes the connection, no sooner than silenceFloor;
// a connected v5 client is told 0x8D Keep Alive timeout first.
func expectSilence(t *testing.T, r *raw, c hcase, sent time.Time) {
	t.Helper()
	fh, body, err := r.readUntil(sent.Add(silenceAtMost))
	if err == nil && c.phase == afterConnect && c.version == mqttcodec.Version5 && fh.Type == mqttcodec.DISCONNECT {
		var d mqttcodec.Disconnect
		if d.Decode(fh, body, mqttcodec.Version5) != nil || d.Reason != mqttcodec.KeepAliveTimeout {
			t.Fatalf("got %s; want silence, then DISCONNECT 0x8D at the keep-alive timeout", describe(fh, body))
		}
		fh, body, err = r.readUntil(time.Now().Add(2 * time.Second))
	}
	took := time.Since(sent)
	if err == nil {
		t.Fatalf("got %s after %v; want silence until the timeout", describe(fh, body), took)
	}
	if !closedErr(err) {
		t.Fatalf("not closed after %v: %v", took, err)
	}
	if took < silenceFloor(c) {
		t.Fatalf("closed after %v, before the timeout (%v)", took, silenceFloor(c)+100*time.Millisecond)
	}
}

// expectReply asserts an ack of the expected type and reason code, and that the connection stays usable.
func expectReply(t *testing.T, r *raw, c hcase) {
	t.Helper()
	w := c.want
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	if err != nil || fh.Type != w.replyType {
		t.Fatalf("got %s, %v; want %s", describe(fh, body), err, w)
	}
	var a mqttcodec.Ack
	if err := a.Decode(fh, body, c.version); err != nil || a.Reason != w.code {
		t.Fatalf("%s reason 0x%02X (%v); want %s", mqttcodec.TypeName(fh.Type), byte(a.Reason), err, w)
	}
	expectUsable(t, r)
}

// --- the test ----------------------------------------------------------------------------------------------------

// healthyTraffic publishes QoS 1 messages on its own topic and checks each comes back, until stop closes.
func healthyTraffic(c *v5, stop <-chan struct{}) (ok, failed int, firstErr error) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		payload := fmt.Sprintf("tick-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Publish(ctx, &paho.Publish{Topic: "healthy/tick", QoS: 1, Payload: []byte(payload)})
		cancel()
		if err == nil {
			select {
			case m := <-c.msgs:
				if string(m.Payload) != payload {
					err = fmt.Errorf("got %q, want %q", m.Payload, payload)
				}
			case <-time.After(5 * time.Second):
				err = fmt.Errorf("%s not received", payload)
			}
		}
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		ok++
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// waitGoroutines waits until at most n goroutines run, or d passes; it returns the last count.
func waitGoroutines(n int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		g := runtime.NumGoroutine()
		if g <= n || time.Now().After(deadline) {
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestHostileCorpus(t *testing.T) {
	corpus := hostileCorpus()
	if len(corpus) < 200 {
		t.Fatalf("corpus has %d cases, want at least 200", len(corpus))
	}
	seen := map[string]bool{}
	types := map[byte]bool{}
	for _, c := range corpus {
		if seen[c.name] {
			t.Fatalf("duplicate case name %s", c.name)
		}
		seen[c.name] = true
		if len(c.bytes) > 0 {
			types[c.bytes[0]>>4] = true
		}
	}
	if len(types) != 16 { // the 15 packet types and the reserved type 0
		t.Fatalf("corpus covers %d packet types, want 16", len(types))
	}

	f := startFerry(t, server.ConnectTimeout(hostileConnectTimeout))
	healthy := dialV5(t, f.addr, &paho.Connect{ClientID: "hostile-healthy", CleanStart: true})
	healthy.sub(t, paho.SubscribeOptions{Topic: "healthy/#", QoS: 1})

	// Warm up both event loops, the Kafka path and the pools, so the baseline holds what stays allocated.
	for i := 0; i < 8; i++ {
		r := hostileConnect(t, f.addr, mqttcodec.Version5, fmt.Sprintf("warm%d", i), 30)
		r.send(publishPkt(5, 0x02, "hostile/warm", 1, nil, "w"))
		if fh, _, err := r.readUntil(time.Now().Add(5 * time.Second)); err != nil || fh.Type != mqttcodec.PUBACK {
			t.Fatalf("warm-up publish: %s %v", mqttcodec.TypeName(fh.Type), err)
		}
		r.send([]byte{0xE0, 0})
		expectEnd(t, r, 5*time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	baseG := runtime.NumGoroutine()
	baseHeap := heapAfterGC()

	stop := make(chan struct{})
	var hOK, hFailed int
	var hErr error
	var hDone sync.WaitGroup
	hDone.Add(1)
	go func() { defer hDone.Done(); hOK, hFailed, hErr = healthyTraffic(healthy, stop) }()

	start := time.Now()
	var passed atomic.Int64
	sem := make(chan struct{}, 48)
	var wg sync.WaitGroup
	t.Run("cases", func(t *testing.T) {
		for i, c := range corpus {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				// Subtests may run from several goroutines at once; each waits here for its own case.
				if t.Run(c.name, func(t *testing.T) { runHostile(t, f.addr, c, i) }) {
					passed.Add(1)
				}
			}()
		}
		wg.Wait()
	})
	close(stop)
	hDone.Wait()
	t.Logf("corpus: %d cases, %d passed, in %v; healthy client: %d round trips, %d failed",
		len(corpus), passed.Load(), time.Since(start).Round(time.Millisecond), hOK, hFailed)
	if hFailed > 0 || hOK == 0 {
		t.Errorf("healthy client during the corpus: %d ok, %d failed, first error %v", hOK, hFailed, hErr)
	}

	// The healthy client still works afterwards.
	healthy.pub(t, &paho.Publish{Topic: "healthy/after", QoS: 1, Payload: []byte("alive")})
	if m := healthy.next(t); string(m.Payload) != "alive" {
		t.Fatalf("healthy client got %q after the corpus", m.Payload)
	}

	// Every hostile connection is gone: no goroutine or heap is left behind by them.
	const gMargin, heapMargin = 8, 4 << 20
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m := f.srv.Metrics().Snapshot()
		if m.ConnsCurrent == 1 && m.SessionsConnected == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after the corpus: %d connections, %d sessions connected; want only the healthy client's",
				m.ConnsCurrent, m.SessionsConnected)
			break
		}
	}
	g := waitGoroutines(baseG+gMargin, 10*time.Second)
	heap := heapAfterGC()
	t.Logf("goroutines: baseline %d, after %d; heap after GC: baseline %.1f MiB, after %.1f MiB",
		baseG, g, float64(baseHeap)/(1<<20), float64(heap)/(1<<20))
	if g > baseG+gMargin {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutine leak: %d goroutines, baseline %d\n%s", g, baseG, buf[:runtime.Stack(buf, true)])
	}
	if heap > baseHeap+heapMargin {
		t.Errorf("heap grew from %d to %d bytes (margin %d)", baseHeap, heap, heapMargin)
	}
}

// --- the bugs the corpus found (FOUND_BUGS.md), fixed since ---------------------------------------------------

// [MQTT-3.6.4-1] (3.1.1): QoS 2 messages that got PUBREC must not stop the server from reading their PUBREL.
func TestHostileV3QoS2WindowReleases(t *testing.T) {
	f := startFerry(t, server.ReceiveMaximum(4))
	for _, v := range []byte{mqttcodec.Version31, mqttcodec.Version311} {
		r := hostileConnect(t, f.addr, v, fmt.Sprintf("q2win%d", v), 30)
		for id := uint16(1); id <= 4; id++ {
			r.send(publishPkt(v, 0x04, "hostile/q2", id, nil, "x"))
		}
		for id := uint16(1); id <= 4; id++ {
			if fh, body, err := r.readUntil(time.Now().Add(5 * time.Second)); err != nil || fh.Type != mqttcodec.PUBREC {
				t.Fatalf("got %s, %v; want PUBREC %d", describe(fh, body), err, id)
			}
		}
		r.send(pkt(0x62, u16(1))) // PUBREL 1
		fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
		if err != nil || fh.Type != mqttcodec.PUBCOMP {
			t.Fatalf("MQTT-3.6.4-1 v%d: PUBREL not answered: got %s, %v; want PUBCOMP 1", v, describe(fh, body), err)
		}
		expectUsable(t, r)
	}
}

// [MQTT-3.1.2-22]: never disconnect before 1.5 × Keep Alive; ConnectTimeout never closes early either.
func TestHostileTimeoutsNotEarly(t *testing.T) {
	t.Parallel() // slow and timing-bound: runs after the corpus and its leak check
	f := startFerry(t, server.ConnectTimeout(2*time.Second))
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ { // staggered, so some start late in a second of the loop's stale clock
		wg.Add(2)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 170 * time.Millisecond)
			t.Run(fmt.Sprintf("MQTT-3.1.2-22/keep-alive-1s/%d", i), func(t *testing.T) {
				// Timed from before the CONNECT is sent: the server cannot have read it earlier, and a CONNACK
				// slowed by a loaded machine does not eat into the 1.5 s.
				start := time.Now()
				r := hostileConnect(t, f.addr, mqttcodec.Version5, fmt.Sprintf("early%d", i), 1)
				fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
				if took := time.Since(start); took < 1500*time.Millisecond {
					t.Errorf("disconnected %v after the CONNECT was sent (got %s, %v); keep-alive 1 s allows 1.5 s", took, describe(fh, body), err)
				}
			})
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 170 * time.Millisecond)
			t.Run(fmt.Sprintf("connect-timeout-2s/%d", i), func(t *testing.T) {
				r := dialRaw(t, f.addr)
				start := time.Now()
				expectEnd(t, r, 5*time.Second)
				if took := time.Since(start); took < 2*time.Second {
					t.Errorf("closed %v after the connection opened; ConnectTimeout is 2 s", took)
				}
			})
		}()
	}
	wg.Wait()
}

// A CONNECT that never completes is closed ConnectTimeout after the socket opened, however slowly it trickles in.
func TestHostileSlowlorisConnect(t *testing.T) {
	t.Parallel() // slow and timing-bound: runs after the corpus and its leak check
	f := startFerry(t, server.ConnectTimeout(2*time.Second))
	r := dialRaw(t, f.addr)
	start := time.Now()
	b := connectPkt(mqttcodec.Version311, 0x02, 30, nil, str("slowloris-with-a-long-client-identifier"))
	for i := 0; i < len(b)-1; i++ {
		if _, err := r.nc.Write(b[i : i+1]); err != nil {
			break // closed: good
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("a CONNECT dribbled one byte per 300 ms is still open %v after the socket opened (ConnectTimeout 2 s)", time.Since(start))
		}
		time.Sleep(300 * time.Millisecond)
	}
	expectEnd(t, r, 3*time.Second)
}

// [MQTT-3.1.2-22]: only whole packets count for keep-alive; a packet that never completes does not hold it open.
func TestHostileKeepAliveNotHeldByPartialPacket(t *testing.T) {
	t.Parallel() // slow and timing-bound: runs after the corpus and its leak check
	f := startFerry(t)
	r := hostileConnect(t, f.addr, mqttcodec.Version5, "dribble", 1)
	start := time.Now()
	r.send([]byte{0x30, 100}) // a PUBLISH of 100 bytes, never finished
	for i := 0; i < 98; i++ {
		if _, err := r.nc.Write([]byte{'x'}); err != nil {
			break // closed: good
		}
		if time.Since(start) > 6*time.Second {
			t.Fatalf("MQTT-3.1.2-22: no whole packet for %v with keep-alive 1 s, connection still open", time.Since(start))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// [MQTT-3.1.2-24] [MQTT-3.14.2-3] [MQTT-3.4.2-2]: a Reason String is dropped rather than exceed the client's Maximum Packet Size.
func TestHostileReasonStringWithinClientMaximumPacketSize(t *testing.T) {
	f := startFerry(t)
	connect := func(id string) *raw {
		r := dialRaw(t, f.addr)
		p := mqttcodec.Connect{Version: 5, CleanStart: true, KeepAlive: 30, ClientID: []byte(id)}
		p.Props.MaximumPacketSize = 20
		p.Props.Set(mqttcodec.PropMaximumPacketSize)
		r.send(mqttcodec.AppendConnect(nil, &p))
		if fh, _, err := r.readUntil(time.Now().Add(5 * time.Second)); err != nil || fh.Type != mqttcodec.CONNACK {
			t.Fatal(err)
		}
		return r
	}
	r := connect("small1")
	r.send([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
	fh, body, err := r.readUntil(time.Now().Add(5 * time.Second))
	var d mqttcodec.Disconnect
	if size := fh.HeaderLen + len(body); err != nil || fh.Type != mqttcodec.DISCONNECT || size > 20 ||
		d.Decode(fh, body, 5) != nil || d.Reason != mqttcodec.MalformedPacket {
		t.Errorf("MQTT-3.14.2-3: DISCONNECT of %d bytes, reason 0x%02X (%v) to a client whose Maximum Packet Size is 20", size, byte(d.Reason), err)
	}
	r = connect("small2")
	r.send(publishPkt(5, 0x02, "a", 3, props(pByte(mqttcodec.PropPayloadFormat, 1)), "\xff"))
	fh, body, err = r.readUntil(time.Now().Add(5 * time.Second))
	if size := fh.HeaderLen + len(body); err != nil || fh.Type != mqttcodec.PUBACK || size > 20 {
		t.Errorf("MQTT-3.4.2-2: PUBACK of %d bytes (%v) to a client whose Maximum Packet Size is 20", size, err)
	}
}
