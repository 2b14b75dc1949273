package server_test

import (
	"testing"
	"time"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// A socket that never sends CONNECT is closed after the CONNECT timeout. A socket that sends nothing at all
// reaches Ferry only when the kernel gives up deferring its accept, at its first SYN-ACK retransmission about
// a second after the handshake (server/transport/deferaccept_linux.go); the timeout runs from then.
func TestConnectTimeout(t *testing.T) {
	f := startFerry(t, server.ConnectTimeout(time.Second))
	r := dialRaw(t, f.addr)
	start := time.Now()
	r.expectClosed()
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("closed after %v, want about 1s of deferred accept and 1s of timeout", d)
	}
	// A slowloris CONNECT, one byte at a time, does not extend the deadline.
	r = dialRaw(t, f.addr)
	start = time.Now()
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 4, CleanStart: true, ClientID: []byte("slow")}
	b := mqttcodec.AppendConnect(nil, &p)
	for i := 0; i < len(b)-1 && time.Since(start) < 4*time.Second; i++ {
		if _, err := r.nc.Write(b[i : i+1]); err != nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	r.expectClosed()
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("slowloris connection lived %v", d)
	}
}

// [MQTT-3.1.2-22] a client silent for 1.5 × keep-alive is disconnected; v5 clients are told 0x8D.
func TestKeepAliveTimeout(t *testing.T) {
	f := startFerry(t)
	r := dialRaw(t, f.addr)
	p := mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, CleanStart: true, KeepAlive: 1, ClientID: []byte("sleepy")}
	r.send(mqttcodec.AppendConnect(nil, &p))
	if fh, _ := r.packet(); fh.Type != mqttcodec.CONNACK {
		t.Fatalf("got %s", mqttcodec.TypeName(fh.Type))
	}
	start := time.Now()
	r.expectDisconnect(mqttcodec.KeepAliveTimeout)
	if d := time.Since(start); d < 1500*time.Millisecond || d > 4500*time.Millisecond {
		t.Fatalf("disconnected after %v, want no sooner than 1.5 × keep-alive and within the timer's 2 s slack", d)
	}
	// PINGREQs keep a connection alive past its keep-alive.
	r = dialRaw(t, f.addr)
	p.ClientID = []byte("awake")
	r.send(mqttcodec.AppendConnect(nil, &p))
	r.packet()
	for i := 0; i < 6; i++ {
		time.Sleep(500 * time.Millisecond)
		r.send(mqttcodec.AppendPingreq(nil))
		if fh, _ := r.packet(); fh.Type != mqttcodec.PINGRESP { // [MQTT-3.12.4-1]
			t.Fatalf("got %s, want PINGRESP", mqttcodec.TypeName(fh.Type))
		}
	}
}
