package server_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/share"
)

// ferry is a Ferry instance for one test: in-process kfake as Kafka, gnet loops on a loopback port.
type ferry struct {
	addr string
	mux  *kafkamux.Mux
	off  *offload.Offload
	srv  *server.Server
}

// quietLog keeps test output to warnings and errors.
var quietLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startFerry(t testing.TB, opts ...server.Opt) *ferry {
	t.Helper()
	return startFerryLanes(t, nil, opts...)
}

// startFerryLanes is startFerry with offload options for its lanes.
func startFerryLanes(t testing.TB, offOpts []offload.Opt, opts ...server.Opt) *ferry {
	t.Helper()
	f := buildFerry(t, []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir("")}, offOpts, opts...)
	t.Cleanup(f.stop)
	return f
}

// stop stops the server (10 s at most) and closes its Kafka client.
func (f *ferry) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = f.srv.Stop(ctx)
	f.mux.Close()
}

// buildFerry starts a Ferry on the Kafka the options name (3 partitions per created topic, 2 event loops).
// The caller arranges its stop.
func buildFerry(t testing.TB, kopts []kafkamux.Opt, offOpts []offload.Opt, opts ...server.Opt) *ferry {
	t.Helper()
	return buildFerryLoops(t, 2, kopts, offOpts, opts...)
}

// buildFerryLoops is buildFerry with loops event loops (and as many offload lanes).
func buildFerryLoops(t testing.TB, loops int, kopts []kafkamux.Opt, offOpts []offload.Opt, opts ...server.Opt) *ferry {
	t.Helper()
	f := newFerry(t, loops, "127.0.0.1:"+strconv.Itoa(freePort(t)), kopts, offOpts, opts...)
	if err := f.srv.Start(); err != nil {
		f.mux.Close()
		t.Fatalf("start: %v", err)
	}
	return f
}

// newFerry builds a Ferry listening on addr without starting it; the caller starts it, and closes f.mux if
// it does not stop it.
func newFerry(t testing.TB, loops int, addr string, kopts []kafkamux.Opt, offOpts []offload.Opt, opts ...server.Opt) *ferry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Transactions on, as in the binary; a test may turn them off with kafkamux.Transactions("").
	txnID := "ferry-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	mux, err := kafkamux.New(ctx, append(append([]kafkamux.Opt{kafkamux.Transactions(txnID)}, kopts...), kafkamux.Partitions(3))...)
	if err != nil {
		t.Fatalf("kafkamux: %v", err)
	}
	off, err := offload.New(mux, loops, offOpts...)
	if err != nil {
		mux.Close()
		t.Fatalf("offload: %v", err)
	}
	// Shared subscriptions in the consumer-group mode the tests were written for, unless a test asks for
	// another (share_group_test.go).
	all := append([]server.Opt{server.Listen("tcp://" + addr), server.EventLoops(loops), server.Logger(quietLog),
		server.Share(share.Mode(share.ModeConsumerGroup))}, opts...)
	srv, err := server.New(off, mux, all...)
	if err != nil {
		mux.Close()
		t.Fatalf("server: %v", err)
	}
	return &ferry{addr: addr, mux: mux, off: off, srv: srv}
}

// v5 is a paho.golang client with a channel of the messages it receives.
type v5 struct {
	*paho.Client
	msgs    chan *paho.Publish
	discons chan *paho.Disconnect
	connack *paho.Connack
	nc      net.Conn // its socket, for a test that drops the connection without DISCONNECT
}

func dialV5(t testing.TB, addr string, cp *paho.Connect) *v5 {
	t.Helper()
	c, err := connectV5(addr, cp)
	if err != nil {
		t.Fatalf("connect %s: %v", cp.ClientID, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c
}

func connectV5(addr string, cp *paho.Connect) (*v5, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &v5{msgs: make(chan *paho.Publish, 100000), discons: make(chan *paho.Disconnect, 4), nc: conn}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.discons <- d },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c.connack = ca
	return c, nil
}

func (c *v5) sub(t testing.TB, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	return c.subProps(t, nil, opts...)
}

func (c *v5) subProps(t testing.TB, props *paho.SubscribeProperties, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts, Properties: props})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return sa
}

func (c *v5) pub(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// next waits for a message.
func (c *v5) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

// none asserts that no message arrives for a while.
func (c *v5) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("unexpected message on %s: %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

func startFerryMax(t testing.TB, max int) *ferry {
	return startFerry(t, server.MaxPacketSize(max))
}
