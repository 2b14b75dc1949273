package server_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// startWSFerry starts a Ferry with a WebSocket listener at /mqtt beside the plain one; it returns the
// WebSocket host:port.
func startWSFerry(t *testing.T, opts ...server.Opt) (*ferry, string) {
	t.Helper()
	hp := "127.0.0.1:" + strconv.Itoa(freePort(t))
	f := startFerry(t, append([]server.Opt{server.Listen("ws://" + hp + "/mqtt")}, opts...)...)
	return f, hp
}

// wsRaw is a hand-driven WebSocket client: frames are built and read one by one with gobwas/ws.
type wsRaw struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	rd []byte // MQTT bytes received and not read yet
}

func dialWSRaw(t *testing.T, hp string) *wsRaw {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, br, hs, err := ws.Dialer{Protocols: []string{"mqtt"}}.Dial(ctx, "ws://"+hp+"/mqtt")
	if err != nil {
		t.Fatalf("websocket dial: %v", err)
	}
	if hs.Protocol != "mqtt" {
		t.Fatalf("subprotocol %q, want mqtt [MQTT-6.0.0-4]", hs.Protocol)
	}
	t.Cleanup(func() { nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return &wsRaw{t: t, nc: nc, br: br}
}

// frame builds one client frame; masked as RFC 6455 requires unless told otherwise.
func frame(op ws.OpCode, fin, masked bool, p []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Length: int64(len(p)), Masked: masked}
	var b bytes.Buffer
	payload := append([]byte(nil), p...)
	if masked {
		h.Mask = ws.NewMask()
		ws.Cipher(payload, h.Mask, 0)
	}
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	b.Write(payload)
	return b.Bytes()
}

func (r *wsRaw) send(b ...[]byte) {
	r.t.Helper()
	if _, err := r.nc.Write(bytes.Join(b, nil)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// readFrame reads one server frame, which must be unmasked.
func (r *wsRaw) readFrame() (ws.Header, []byte, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(r.br)
	if err != nil {
		return h, nil, err
	}
	if h.Masked {
		r.t.Fatalf("server frame masked [RFC 6455 §5.1]")
	}
	p := make([]byte, h.Length)
	_, err = io.ReadFull(r.br, p)
	return h, p, err
}

// packet reads the next MQTT packet, from as many binary frames as it takes.
func (r *wsRaw) packet() (mqttcodec.FixedHeader, []byte) {
	r.t.Helper()
	for {
		if fh, body, n, err := mqttcodec.Frame(r.rd, 0); err == nil {
			body = append([]byte(nil), body...)
			r.rd = r.rd[n:]
			return fh, body
		}
		h, p, err := r.readFrame()
		if err != nil {
			r.t.Fatalf("reading a frame: %v", err)
		}
		if h.OpCode != ws.OpBinary {
			r.t.Fatalf("got a %v frame (%x), want binary", h.OpCode, p)
		}
		r.rd = append(r.rd, p...)
	}
}

func (r *wsRaw) expectPacket(typ byte) []byte {
	r.t.Helper()
	fh, body := r.packet()
	if fh.Type != typ {
		r.t.Fatalf("got %s, want %s", mqttcodec.TypeName(fh.Type), mqttcodec.TypeName(typ))
	}
	return body
}

// expectClose reads frames up to a close frame with the code, then the end of the TCP connection.
func (r *wsRaw) expectClose(code ws.StatusCode) {
	r.t.Helper()
	for {
		h, p, err := r.readFrame()
		if err != nil {
			r.t.Fatalf("no close frame %d: %v", code, err)
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		got, _ := ws.ParseCloseFrameData(p)
		if got != code {
			r.t.Fatalf("close frame %d, want %d", got, code)
		}
		break
	}
	if _, _, err := r.readFrame(); err != io.EOF && !isReset(err) {
		r.t.Fatalf("the connection is still open after the close frame: %v", err)
	}
}

func connectPacket(id string) []byte {
	return mqttcodec.AppendConnect(nil, &mqttcodec.Connect{ProtocolName: []byte("MQTT"), Version: 5, CleanStart: true,
		KeepAlive: 30, ClientID: []byte(id)})
}

func subscribePacket(id uint16, filter string) []byte {
	return mqttcodec.AppendSubscribe(nil, &mqttcodec.Subscribe{PacketID: id,
		Subs: []mqttcodec.Subscription{{Filter: []byte(filter), QoS: 1}}}, 5)
}

func publishPacket(topic string, payload []byte) []byte {
	return mqttcodec.AppendPublish(nil, &mqttcodec.Publish{Topic: []byte(topic), Payload: payload}, 5)
}

// dialV5WS connects paho.golang over WebSocket. paho.golang has no WebSocket dialer, and a net.Conn adapter
// passed as its Conn does not work: it writes a packet as net.Buffers (several Writes unless the Conn is a TCP
// socket, where writev keeps them together) from several goroutines (caller, pinger, acks), so a PINGREQ
// lands inside a SUBSCRIBE. The client therefore talks TCP to a loopback bridge that forwards every read as
// one masked binary frame (frames not aligned with packets) to Ferry's ws:// listener, and frames back.
func dialV5WS(t *testing.T, hp, id string) *v5 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		tc, err := ln.Accept()
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		wc, br, _, err := ws.Dialer{Protocols: []string{"mqtt"}}.Dial(ctx, "ws://"+hp+"/mqtt")
		if err != nil {
			tc.Close()
			return
		}
		var r io.Reader = wc
		if br != nil {
			r = io.MultiReader(br, wc)
		}
		var wmu sync.Mutex
		w := writerFunc(func(p []byte) (int, error) { wmu.Lock(); defer wmu.Unlock(); return wc.Write(p) })
		go func() { // client → Ferry
			defer wc.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := tc.Read(buf)
				if err != nil {
					_ = wsutil.WriteClientMessage(w, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
					return
				}
				if wsutil.WriteClientMessage(w, ws.OpBinary, buf[:n]) != nil {
					return
				}
			}
		}()
		defer tc.Close() // Ferry → client
		rw := struct {
			io.Reader
			io.Writer
		}{r, w}
		for {
			p, op, err := wsutil.ReadServerData(rw)
			if err != nil || op != ws.OpBinary {
				return
			}
			if _, err := tc.Write(p); err != nil {
				return
			}
		}
	}()
	return dialV5(t, ln.Addr().String(), &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Real clients over ws://: paho.golang (v5) and paho.mqtt.golang (v3.1.1, its own ws:// support) publish to
// each other and to a plain TCP client through the WebSocket listener.
func TestWebSocketClients(t *testing.T) {
	f, hp := startWSFerry(t)
	v5ws := dialV5WS(t, hp, "ws-v5")
	v5ws.sub(t, paho.SubscribeOptions{Topic: "ws/#", QoS: 1})

	msgs := make(chan mqtt.Message, 10)
	o := mqtt.NewClientOptions().AddBroker("ws://" + hp + "/mqtt").SetClientID("ws-v3").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	v3 := mqtt.NewClient(o)
	if tok := v3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho.mqtt.golang over ws://: %v", tok.Error())
	}
	defer v3.Disconnect(100)
	if tok := v3.Subscribe("ws/#", 1, func(_ mqtt.Client, m mqtt.Message) { msgs <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	tcp := dialV5(t, f.addr, &paho.Connect{ClientID: "tcp", CleanStart: true})
	tcp.sub(t, paho.SubscribeOptions{Topic: "ws/#", QoS: 1})

	// A payload larger than one TCP segment and than gnet's read chunk, in one frame.
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	v5ws.pub(t, &paho.Publish{Topic: "ws/from-v5", QoS: 1, Payload: big})
	for _, c := range []*v5{v5ws, tcp} {
		if m := c.next(t); m.Topic != "ws/from-v5" || !bytes.Equal(m.Payload, big) {
			t.Fatalf("got %s with %d bytes, want ws/from-v5 with %d", m.Topic, len(m.Payload), len(big))
		}
	}
	select {
	case m := <-msgs:
		if m.Topic() != "ws/from-v5" || !bytes.Equal(m.Payload(), big) {
			t.Fatalf("v3 client got %s (%d bytes)", m.Topic(), len(m.Payload()))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the v3 WebSocket client got nothing")
	}

	if tok := v3.Publish("ws/from-v3", 1, false, "hello from v3"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 publish: %v", tok.Error())
	}
	for _, c := range []*v5{v5ws, tcp} {
		if m := c.next(t); m.Topic != "ws/from-v3" || string(m.Payload) != "hello from v3" {
			t.Fatalf("got %s %q", m.Topic, m.Payload)
		}
	}
	if n := f.srv.Metrics().Snapshot().TransportErrors; n != 0 {
		t.Errorf("transport errors: %d, want 0", n)
	}
}

// The frame layer: MQTT packets split across frames, several in one frame, fragmented messages, control
// frames between fragments, the close handshake both ways, and the protocol failures.
func TestWebSocketFrames(t *testing.T) {
	f, hp := startWSFerry(t, server.MaxPacketSize(64<<10))
	wantErrors := uint64(0)

	t.Run("MQTT-6.0.0-2/a packet split across frames, byte by byte", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		for _, b := range connectPacket("split") {
			r.send(frame(ws.OpBinary, true, true, []byte{b}))
		}
		r.expectPacket(mqttcodec.CONNACK)
	})
	t.Run("MQTT-6.0.0-2/several packets in one frame", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, bytes.Join([][]byte{connectPacket("several"),
			subscribePacket(1, "several/#"), publishPacket("several/x", []byte("one frame")),
			mqttcodec.AppendPingreq(nil)}, nil)))
		r.expectPacket(mqttcodec.CONNACK)
		r.expectPacket(mqttcodec.SUBACK)
		var got [2]bool
		for range 2 {
			fh, body := r.packet()
			switch fh.Type {
			case mqttcodec.PUBLISH:
				var p mqttcodec.Publish
				if err := p.Decode(fh, body, 5); err != nil || string(p.Payload) != "one frame" {
					t.Fatalf("publish %v %q", err, p.Payload)
				}
				got[0] = true
			case mqttcodec.PINGRESP:
				got[1] = true
			default:
				t.Fatalf("unexpected %s", mqttcodec.TypeName(fh.Type))
			}
		}
		if !got[0] || !got[1] {
			t.Fatalf("got publish, pingresp = %v", got)
		}
	})
	t.Run("a fragmented message with pings between its fragments", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		p := append(connectPacket("fragments"), mqttcodec.AppendPingreq(nil)...)
		r.send(frame(ws.OpBinary, false, true, p[:3]),
			frame(ws.OpPing, true, true, []byte("ping-1")),
			frame(ws.OpContinuation, false, true, p[3:9]),
			frame(ws.OpContinuation, false, true, nil),
			frame(ws.OpContinuation, true, true, p[9:]))
		h, payload, err := r.readFrame()
		if err != nil || h.OpCode != ws.OpPong || string(payload) != "ping-1" {
			t.Fatalf("want pong with the ping's payload, got %v %q %v", h.OpCode, payload, err)
		}
		r.expectPacket(mqttcodec.CONNACK)
		r.expectPacket(mqttcodec.PINGRESP)
	})
	t.Run("a large publish streamed in odd chunks keeps the mask offset", func(t *testing.T) {
		sub := dialV5(t, f.addr, &paho.Connect{ClientID: "stream-sub", CleanStart: true})
		sub.sub(t, paho.SubscribeOptions{Topic: "stream", QoS: 0})
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, connectPacket("stream")))
		r.expectPacket(mqttcodec.CONNACK)
		payload := make([]byte, 60000)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		b := frame(ws.OpBinary, true, true, publishPacket("stream", payload))
		for len(b) > 0 {
			n := min(len(b), 1021)
			r.send(b[:n])
			b = b[n:]
		}
		if m := sub.next(t); !bytes.Equal(m.Payload, payload) {
			t.Fatalf("payload of %d bytes arrived changed", len(m.Payload))
		}
	})
	t.Run("ping gets pong", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, connectPacket("ping")))
		r.expectPacket(mqttcodec.CONNACK)
		r.send(frame(ws.OpPing, true, true, nil), frame(ws.OpPong, true, true, []byte("unsolicited")),
			frame(ws.OpPing, true, true, bytes.Repeat([]byte{'p'}, 125)))
		for _, want := range []string{"", strings.Repeat("p", 125)} {
			h, p, err := r.readFrame()
			if err != nil || h.OpCode != ws.OpPong || string(p) != want {
				t.Fatalf("got %v %q %v, want pong %q", h.OpCode, p, err, want)
			}
		}
	})
	t.Run("the client's close is echoed, then the connection ends", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, connectPacket("close")))
		r.expectPacket(mqttcodec.CONNACK)
		r.send(frame(ws.OpClose, true, true, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
		r.expectClose(ws.StatusGoingAway)
	})
	t.Run("MQTT DISCONNECT: the server closes with 1000", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, connectPacket("disconnect")))
		r.expectPacket(mqttcodec.CONNACK)
		r.send(frame(ws.OpBinary, true, true, mqttcodec.AppendDisconnect(nil, &mqttcodec.Disconnect{}, 5)))
		r.expectClose(ws.StatusNormalClosure)
	})
	t.Run("DISCONNECT and close in one segment: the will is not sent", func(t *testing.T) {
		watcher := dialV5(t, f.addr, &paho.Connect{ClientID: "will-watcher", CleanStart: true})
		watcher.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 0})
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, mqttcodec.AppendConnect(nil, &mqttcodec.Connect{ProtocolName: []byte("MQTT"),
			Version: 5, CleanStart: true, KeepAlive: 30, ClientID: []byte("willing"),
			WillFlag: true, WillTopic: []byte("wills/willing"), WillPayload: []byte("gone")})))
		r.expectPacket(mqttcodec.CONNACK)
		r.send(frame(ws.OpBinary, true, true, mqttcodec.AppendDisconnect(nil, &mqttcodec.Disconnect{}, 5)),
			frame(ws.OpClose, true, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
		r.expectClose(ws.StatusNormalClosure)
		watcher.none(t, 500*time.Millisecond)
	})
	t.Run("MQTT-6.0.0-1/a text frame closes with 1003", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpText, true, true, connectPacket("text")))
		r.expectClose(ws.StatusUnsupportedData)
		wantErrors++
	})
	t.Run("an unmasked client frame closes with 1002", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, false, connectPacket("unmasked")))
		r.expectClose(ws.StatusProtocolError)
		wantErrors++
	})
	t.Run("a continuation without a message closes with 1002", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpContinuation, true, true, connectPacket("continuation")))
		r.expectClose(ws.StatusProtocolError)
		wantErrors++
	})
	t.Run("a frame announcing more than a packet plus slack closes with 1009", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, connectPacket("big")))
		r.expectPacket(mqttcodec.CONNACK)
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 1 << 30}
		var b bytes.Buffer
		_ = ws.WriteHeader(&b, h)
		r.send(b.Bytes(), make([]byte, 100))
		r.expectClose(ws.StatusMessageTooBig)
		wantErrors++
	})
	t.Run("MQTT errors still close the WebSocket properly", func(t *testing.T) {
		r := dialWSRaw(t, hp)
		r.send(frame(ws.OpBinary, true, true, mqttcodec.AppendPingreq(nil))) // [MQTT-3.1.0-1] not CONNECT first
		r.expectClose(ws.StatusNormalClosure)
	})
	if got := f.srv.Metrics().Snapshot().TransportErrors; got != wantErrors {
		t.Errorf("transport errors counted: %d, want %d", got, wantErrors)
	}
}

// httpExchange sends a raw request to the WebSocket listener and returns the response; the server must then
// close the connection unless it upgraded.
func httpExchange(t *testing.T, hp, req string) *http.Response {
	t.Helper()
	nc, err := net.DialTimeout("tcp", hp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no HTTP response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, resp.Body)
		if _, err := br.ReadByte(); err != io.EOF && !isReset(err) {
			t.Fatalf("the connection stays open after HTTP %d: %v", resp.StatusCode, err)
		}
	}
	return resp
}

func upgradeRequest(path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: ferry\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

// The HTTP upgrade: path, required headers, request size, subprotocol selection.
func TestWebSocketHandshake(t *testing.T) {
	f, hp := startWSFerry(t)
	for _, c := range []struct {
		name, req string
		status    int
		protocol  string
	}{
		{"MQTT-6.0.0-4/mqtt selected", upgradeRequest("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n"), 101, "mqtt"},
		{"mqttv3.1 when it is the only one offered", upgradeRequest("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1\r\n"), 101, "mqttv3.1"},
		{"no subprotocol offered: accepted without one", upgradeRequest("/mqtt"), 101, ""},
		{"other subprotocols only: accepted without one", upgradeRequest("/mqtt", "Sec-WebSocket-Protocol: chat\r\n"), 101, ""},
		{"query string ignored", upgradeRequest("/mqtt?token=x", "Sec-WebSocket-Protocol: mqtt\r\n"), 101, "mqtt"},
		{"wrong path", upgradeRequest("/other", "Sec-WebSocket-Protocol: mqtt\r\n"), 404, ""},
		{"missing Upgrade and Connection", "GET /mqtt HTTP/1.1\r\nHost: ferry\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, ""},
		{"missing key", "GET /mqtt HTTP/1.1\r\nHost: ferry\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, ""},
		{"old WebSocket version", strings.Replace(upgradeRequest("/mqtt"), "Version: 13", "Version: 8", 1), 426, ""},
		{"POST", strings.Replace(upgradeRequest("/mqtt"), "GET", "POST", 1), 405, ""},
		{"a request header over 8 KiB", upgradeRequest("/mqtt", "X-Padding: "+strings.Repeat("x", 9000)+"\r\n"), 431, ""},
		{"a request that never ends", "GET /mqtt HTTP/1.1\r\nX: " + strings.Repeat("y", 9000), 431, ""},
		{"MQTT on the WebSocket port", string(connectPacket("lost")), 400, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := httpExchange(t, hp, c.req)
			if resp.StatusCode != c.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, c.status)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != c.protocol {
				t.Fatalf("Sec-WebSocket-Protocol %q, want %q", got, c.protocol)
			}
		})
	}
	if got := f.srv.Metrics().Snapshot().TransportErrors; got != 8 {
		t.Errorf("transport errors counted: %d, want 8 (every refused request)", got)
	}
}

// A ws:// listener behind a load balancer: the PROXY header comes before the HTTP request, and its address is
// the client's.
func TestWebSocketBehindProxyProtocol(t *testing.T) {
	logs := &syncBuffer{}
	hp := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startFerry(t, server.Listen("ws://"+hp+"/mqtt?proxy=true"),
		server.Logger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	nc, err := net.DialTimeout("tcp", hp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "PROXY TCP4 198.51.100.20 127.0.0.1 40123 1883\r\n" + upgradeRequest("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n")
	// The CONNECT follows in the same segment as the request: nothing may be lost between the layers.
	if _, err := nc.Write(append([]byte(req), frame(ws.OpBinary, true, true, connectPacket("proxied-ws"))...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	r := &wsRaw{t: t, nc: nc, br: br}
	r.expectPacket(mqttcodec.CONNACK)
	waitLog(t, logs, "client connected", "client=proxied-ws", "remote=198.51.100.20:40123")
}
