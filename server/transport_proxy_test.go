package server_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/pires/go-proxyproto"

	"github.com/ferrymq/ferry/server"
)

// syncBuffer collects log lines from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLog waits for a log line containing every one of the strings.
func waitLog(t *testing.T, logs *syncBuffer, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs.String(), "\n") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			if ok {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line with %q in:\n%s", want, logs.String())
}

// A ?proxy=true listener takes the client's address from the load balancer's PROXY header (v1 text or v2
// binary, LOCAL kept as the socket's address), serves MQTT after it on the same connection, and refuses
// connections without a header or from peers it does not trust.
func TestProxyProtocolListener(t *testing.T) {
	logs := &syncBuffer{}
	port := freePort(t)
	proxied := "127.0.0.1:" + strconv.Itoa(port)
	f := startFerry(t, server.Listen("tcp://"+proxied+"?proxy=true"),
		server.Logger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))

	header := func(version byte, src string) []byte {
		h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
			net.TCPAddrFromAddrPort(netip.MustParseAddrPort(proxied)))
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("v1 header with the CONNECT in the same segment", func(t *testing.T) {
		r := dialRaw(t, proxied)
		r.send(header(1, "203.0.113.7:40001"))
		r.connect(5, "proxy-v1")
		waitLog(t, logs, "client connected", "client=proxy-v1", "remote=203.0.113.7:40001")
	})
	t.Run("v2 header byte by byte, then a paho client", func(t *testing.T) {
		nc, err := net.Dial("tcp", proxied)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range header(2, "[2001:db8::5]:50002") {
			if _, err := nc.Write([]byte{b}); err != nil {
				t.Fatal(err)
			}
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: "proxy-v2", CleanStart: true, KeepAlive: 30})
		if err != nil || ack.ReasonCode != 0 {
			t.Fatalf("connect through a v2 header: %v %v", ack, err)
		}
		defer c.Disconnect(&paho.Disconnect{})
		waitLog(t, logs, "client connected", "client=proxy-v2", "remote=[2001:db8::5]:50002")
	})
	t.Run("v2 LOCAL keeps the socket's address", func(t *testing.T) {
		h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		r := dialRaw(t, proxied)
		r.send(b)
		r.connect(4, "proxy-local")
		waitLog(t, logs, "client connected", "client=proxy-local", "remote=127.0.0.1:")
	})
	t.Run("no header", func(t *testing.T) {
		r := dialRaw(t, proxied)
		r.send([]byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 0})
		r.expectClosed()
	})
	t.Run("a broken v1 line", func(t *testing.T) {
		r := dialRaw(t, proxied)
		r.send([]byte("PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n"))
		r.expectClosed()
	})
	t.Run("a v1 line that never ends", func(t *testing.T) {
		r := dialRaw(t, proxied)
		r.send([]byte("PROXY TCP4 " + strings.Repeat("1", 120)))
		r.expectClosed()
	})
	t.Run("the plain listener is unaffected", func(t *testing.T) {
		r := dialRaw(t, f.addr)
		r.connect(5, "plain")
	})
	if n := f.srv.Metrics().Snapshot().TransportErrors; n != 3 {
		t.Errorf("transport errors counted: %d, want 3 (no header, broken line, endless line)", n)
	}
}

// Only trusted peers may speak PROXY protocol: anyone else is refused at once, so a device cannot pose as
// another address.
func TestProxyProtocolUntrustedPeer(t *testing.T) {
	proxied := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startFerry(t, server.Listen("tcp://"+proxied+"?proxy=true"),
		server.ProxyTrusted([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}))
	r := dialRaw(t, proxied)
	r.send([]byte(fmt.Sprintf("PROXY TCP4 198.51.100.1 127.0.0.1 1234 %d\r\n", 1883)))
	r.expectClosed()
}

// Two listeners on one port, told apart by address: a host name listener is matched by the addresses it
// resolves to, so each connection gets its own listener's transport whatever the order of the listeners.
func TestListenersToldApartByAddress(t *testing.T) {
	port := strconv.Itoa(freePort(t))
	startFerry(t, server.Listen("tcp://localhost:"+port+"?proxy=true"), server.Listen("tcp://127.0.0.2:"+port))
	plain := dialRaw(t, "127.0.0.2:"+port)
	plain.connect(5, "plain-on-127.0.0.2") // no PROXY header: this listener has none
	proxied := dialRaw(t, "127.0.0.1:"+port)
	proxied.send([]byte("PROXY TCP4 192.0.2.9 127.0.0.1 4000 " + port + "\r\n"))
	proxied.connect(5, "proxied-on-localhost")
}

// With several listeners, port 0 cannot be matched to a listener and is refused.
func TestListenerPortZeroNeedsSingleListener(t *testing.T) {
	if err := server.CheckOptions(server.Listen("tcp://127.0.0.1:0"), server.Listen("tcp://127.0.0.1:1884")); err == nil ||
		!strings.Contains(err.Error(), "port 0") {
		t.Fatalf("got %v, want an error about port 0", err)
	}
}
