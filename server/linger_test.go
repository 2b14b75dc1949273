package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// pipeline writes chunk to nc n times from a goroutine without reading, as a client that pipelines does,
// ignoring write errors (the server may close its side). The returned wait blocks until it is done.
func pipeline(nc net.Conn, chunk []byte, n int) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		for range n {
			if _, err := nc.Write(chunk); err != nil {
				return
			}
		}
	}()
	return wg.Wait
}

// readAll reads until end of stream or an error (within 10 s), and returns the packets read and the error
// that ended it (io.EOF for an orderly close).
func readAll(t *testing.T, nc net.Conn) ([]mqttcodec.FixedHeader, [][]byte, error) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(nc)
	if err == nil {
		err = io.EOF
	}
	var fhs []mqttcodec.FixedHeader
	var bodies [][]byte
	for len(data) > 0 {
		fh, body, n, ferr := mqttcodec.Frame(data, 0)
		if ferr != nil {
			break
		}
		fhs = append(fhs, fh)
		bodies = append(bodies, body)
		data = data[n:]
	}
	return fhs, bodies, err
}

// A client that pipelines QoS 2 PUBLISHes past the server's Receive Maximum without reading gets DISCONNECT
// 0x93 and can read it: the server half-closes and drains instead of resetting the connection.
func TestLingerDisconnectReadable(t *testing.T) {
	f := startFerry(t, server.ReceiveMaximum(5))
	nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version5, CleanStart: true, KeepAlive: 30, ClientID: []byte("pipeliner")}
	if _, err := nc.Write(mqttcodec.AppendConnect(nil, &cp)); err != nil {
		t.Fatal(err)
	}
	// QoS 2 PUBLISHes never released (no PUBREL) stay in the Receive Maximum window [MQTT-3.3.4-7]: the 6th
	// is one too many.
	var chunk []byte
	payload := bytes.Repeat([]byte("p"), 1000)
	for i := range 100 {
		p := mqttcodec.Publish{Topic: []byte("pipeline/t"), QoS: 2, PacketID: uint16(i + 1), Payload: payload}
		chunk = mqttcodec.AppendPublish(chunk, &p, mqttcodec.Version5)
	}
	wait := pipeline(nc, chunk, 20) // 2 MB, far more than the server reads before it stops
	time.Sleep(300 * time.Millisecond)
	wait()
	fhs, bodies, err := readAll(t, nc)
	at := -1
	var d mqttcodec.Disconnect
	for i, fh := range fhs {
		if fh.Type == mqttcodec.DISCONNECT {
			at = i
			if derr := d.Decode(fh, bodies[i], mqttcodec.Version5); derr != nil {
				t.Fatal(derr)
			}
			break
		}
	}
	if at < 0 {
		t.Fatalf("no DISCONNECT among %d packets; the read ended with %v", len(fhs), err)
	}
	t.Run("MQTT-3.3.4-7/disconnect-0x93-readable", func(t *testing.T) {
		if d.Reason != mqttcodec.ReceiveMaximumExceeded {
			t.Fatalf("DISCONNECT reason %s, want 0x93", d.Reason)
		}
	})
	t.Run("MQTT-3.14.4-1/nothing-after-disconnect", func(t *testing.T) {
		if at != len(fhs)-1 {
			t.Fatalf("%d packets after the DISCONNECT", len(fhs)-1-at)
		}
	})
	t.Run("MQTT-3.14.4-2/closed-after-disconnect", func(t *testing.T) {
		if !errors.Is(err, io.EOF) {
			t.Fatalf("stream ended by %v after the DISCONNECT, want end of stream", err)
		}
	})
	t.Run("MQTT-3.14.2-2/no-session-expiry", func(t *testing.T) {
		if d.Props.Has(mqttcodec.PropSessionExpiry) {
			t.Fatal("the server's DISCONNECT carries a Session Expiry Interval")
		}
	})
	t.Run("MQTT-3.14.2-4/no-user-property", func(t *testing.T) {
		if len(d.Props.User) > 0 {
			t.Fatalf("DISCONNECT with %d user properties", len(d.Props.User))
		}
	})
}

// No DISCONNECT before a successful CONNACK: a connection whose first packet is not CONNECT is closed
// without one.
func TestNoDisconnectBeforeConnack(t *testing.T) {
	f := startFerry(t)
	t.Run("MQTT-3.14.0-1/first-packet-not-connect", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		p := mqttcodec.Publish{Topic: []byte("early"), Payload: []byte("x")}
		if _, err := nc.Write(mqttcodec.AppendPublish(nil, &p, mqttcodec.Version5)); err != nil {
			t.Fatal(err)
		}
		if fhs, _, err := readAll(t, nc); len(fhs) != 0 {
			t.Fatalf("got %s before any CONNACK (read ended by %v)", mqttcodec.TypeName(fhs[0].Type), err)
		}
	})
}

// A CONNECT refused with bytes pipelined behind it: the client reads the CONNACK's reason, not a reset.
func TestLingerConnackRefusalReadable(t *testing.T) {
	f := startFerry(t)
	for _, tc := range []struct {
		name    string
		version byte
		want    byte // reason code (v5) or return code (v3)
	}{
		{"MQTT-3.2.2-7/v5-bad-auth-method-0x8C", mqttcodec.Version5, byte(mqttcodec.BadAuthenticationMethod)},
		{"MQTT-3.2.2-5/v311-empty-id-persistent-rc2", mqttcodec.Version311, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: tc.version, KeepAlive: 30, ClientID: []byte("refused")}
			if tc.version == mqttcodec.Version5 {
				cp.CleanStart = true
				cp.Props.AuthMethod = []byte("SCRAM-SHA-1")
				cp.Props.Set(mqttcodec.PropAuthMethod)
			} else {
				cp.ClientID = nil // [MQTT-3.1.3-8] empty id with CleanSession 0: refused
			}
			var chunk []byte
			for i := range 100 {
				p := mqttcodec.Publish{Topic: []byte("pipeline/t"), QoS: 1, PacketID: uint16(i + 1), Payload: bytes.Repeat([]byte("p"), 1000)}
				chunk = mqttcodec.AppendPublish(chunk, &p, tc.version)
			}
			first := append(mqttcodec.AppendConnect(nil, &cp), chunk...)
			if _, err := nc.Write(first); err != nil {
				t.Fatal(err)
			}
			wait := pipeline(nc, chunk, 10)
			time.Sleep(300 * time.Millisecond)
			wait()
			fhs, bodies, err := readAll(t, nc)
			if len(fhs) != 1 || fhs[0].Type != mqttcodec.CONNACK {
				t.Fatalf("read %d packets (ended by %v), want one CONNACK", len(fhs), err)
			}
			var ack mqttcodec.Connack
			if derr := ack.Decode(fhs[0], bodies[0], tc.version); derr != nil {
				t.Fatal(derr)
			}
			if byte(ack.Reason) != tc.want {
				t.Fatalf("CONNACK reason %#x, want %#x", byte(ack.Reason), tc.want)
			}
			t.Logf("read ended: %v", err)
			if errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("connection reset after the CONNACK, want end of stream")
			}
		})
	}
}

// The lingering sockets are bounded: with room for none, a refused connection closes at once as before, and
// a lingering socket is closed after the timeout even if its client goes on sending.
func TestLingerBounded(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		f := startFerry(t, server.Linger(time.Second, 1<<30, 10), server.EventLoops(1))
		nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version5, CleanStart: true, ClientID: []byte("x")}
		cp.Props.AuthMethod = []byte("x")
		cp.Props.Set(mqttcodec.PropAuthMethod)
		start := time.Now()
		if _, err := nc.Write(mqttcodec.AppendConnect(nil, &cp)); err != nil {
			t.Fatal(err)
		}
		// Keep sending: the socket must still close within the timeout (rounded up to the loop's tick).
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if _, err := nc.Write([]byte{0xC0, 0}); err != nil { // PINGREQ
						return
					}
				}
			}
		}()
		for f.srv.Metrics().Snapshot().Lingering != 0 || time.Since(start) < 100*time.Millisecond {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("a socket still lingers after %v with a 1 s timeout", time.Since(start))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("cap", func(t *testing.T) {
		f := startFerry(t, server.Linger(10*time.Second, 1<<30, 1), server.EventLoops(1))
		open := func() net.Conn {
			nc, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version5, CleanStart: true, ClientID: []byte("x")}
			cp.Props.AuthMethod = []byte("x")
			cp.Props.Set(mqttcodec.PropAuthMethod)
			if _, err := nc.Write(mqttcodec.AppendConnect(nil, &cp)); err != nil {
				t.Fatal(err)
			}
			return nc
		}
		open()
		deadline := time.Now().Add(5 * time.Second)
		for f.srv.Metrics().Snapshot().Lingering != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the first refused connection does not linger")
			}
			time.Sleep(10 * time.Millisecond)
		}
		second := open()
		if _, _, err := readAll(t, second); err == nil {
			t.Fatal("no end of stream")
		}
		s := f.srv.Metrics().Snapshot()
		if s.Lingering != 1 || s.LingerSkipped != 1 {
			t.Fatalf("lingering %d, skipped %d: want 1 and 1 (the cap is 1)", s.Lingering, s.LingerSkipped)
		}
	})
}

// paho.golang, publishing past the server's Maximum Packet Size without waiting, is told why: its
// OnServerDisconnect sees 0x95 rather than a connection error.
func TestLingerPahoPacketTooLarge(t *testing.T) {
	f := startFerry(t, server.MaxPacketSize(1024))
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "too-large", CleanStart: true})
	big := bytes.Repeat([]byte("b"), 4096)
	go func() {
		for range 200 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := c.Publish(ctx, &paho.Publish{Topic: "big/t", QoS: 0, Payload: big})
			cancel()
			if err != nil {
				return
			}
		}
	}()
	t.Run("MQTT-3.2.2-15/v5-disconnect-0x95-readable", func(t *testing.T) {
		select {
		case d := <-c.discons:
			if d.ReasonCode != byte(mqttcodec.PacketTooLarge) {
				t.Fatalf("DISCONNECT reason %#x, want 0x95", d.ReasonCode)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("paho saw no DISCONNECT from the server")
		}
	})
}

// Over TLS too: the client pipelining past Receive Maximum reads DISCONNECT 0x93, then close_notify (EOF),
// not a reset.
func TestLingerTLS(t *testing.T) {
	ca := newTestCA(t, "test CA")
	_, addr := startTLSFerry(t, writeTLSFiles(t, ca, "localhost", 1, nil), server.ReceiveMaximum(5))
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cp := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: mqttcodec.Version5, CleanStart: true, KeepAlive: 30, ClientID: []byte("tls-pipeliner")}
	if _, err := nc.Write(mqttcodec.AppendConnect(nil, &cp)); err != nil {
		t.Fatal(err)
	}
	// The CONNACK first: a client may not flood a TLS listener before its handshake is done on the server
	// (Ferry closes one that sends more than a bound before it), which is not what this test is about.
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := nc.Read(b)
	if fh, _, _, ferr := mqttcodec.Frame(b[:n], 0); err != nil || ferr != nil || fh.Type != mqttcodec.CONNACK {
		t.Fatalf("no CONNACK: %v %v", err, ferr)
	}
	var chunk []byte
	for i := range 100 {
		p := mqttcodec.Publish{Topic: []byte("pipeline/t"), QoS: 2, PacketID: uint16(i + 1), Payload: bytes.Repeat([]byte("p"), 1000)}
		chunk = mqttcodec.AppendPublish(chunk, &p, mqttcodec.Version5)
	}
	wait := pipeline(nc, chunk, 20)
	time.Sleep(300 * time.Millisecond)
	wait()
	fhs, bodies, err := readAll(t, nc)
	t.Run("MQTT-3.3.4-7/tls-disconnect-0x93-readable", func(t *testing.T) {
		for i, fh := range fhs {
			if fh.Type != mqttcodec.DISCONNECT {
				continue
			}
			var d mqttcodec.Disconnect
			if derr := d.Decode(fh, bodies[i], mqttcodec.Version5); derr != nil || d.Reason != mqttcodec.ReceiveMaximumExceeded {
				t.Fatalf("DISCONNECT %v, reason %s, want 0x93", derr, d.Reason)
			}
			if !errors.Is(err, io.EOF) {
				t.Fatalf("stream ended by %v after the DISCONNECT, want close_notify / end of stream", err)
			}
			return
		}
		t.Fatalf("no DISCONNECT among %d packets; the read ended with %v", len(fhs), err)
	})
}
