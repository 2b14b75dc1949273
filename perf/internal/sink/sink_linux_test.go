package sink

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

// testClient reads whole frames from a connection to the sink.
type testClient struct {
	t   *testing.T
	nc  net.Conn
	buf []byte
}

func dialSink(t *testing.T, s *Server, id string) *testClient {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &testClient{t: t, nc: nc}
	c.write(wire.AppendConnect(nil, wire.Connect{ClientID: id, CleanSession: true}))
	if f := c.next(); f.Type != wire.CONNACK {
		t.Fatalf("%s: got packet type %d, want CONNACK", id, f.Type)
	}
	return c
}

func (c *testClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testClient) next() wire.Frame {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, n, err := wire.Split(c.buf)
		if err == nil {
			f.Body = append([]byte(nil), f.Body...)
			c.buf = c.buf[n:]
			return f
		}
		if !errors.Is(err, wire.ErrIncomplete) {
			c.t.Fatal(err)
		}
		b := make([]byte, 4096)
		m, err := c.nc.Read(b)
		if err != nil {
			c.t.Fatal(err)
		}
		c.buf = append(c.buf, b[:m]...)
	}
}

// The sink forwards every PUBLISH to every matching subscriber, whichever loop holds it, and acknowledges it
// to the publisher. The connections alternate between the loops, so the subscribers are on both and a
// forwarded PUBLISH has to wake the other loop.
func TestSinkForwardsAcrossLoops(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.loops) < 2 {
		t.Logf("%d loop(s) on this machine: the cross-loop wake-up is not exercised", len(s.loops))
	}
	var subs []*testClient
	for i := range 3 {
		c := dialSink(t, s, fmt.Sprintf("sub%d", i))
		c.write(wire.AppendSubscribe(nil, 1, 1, "a/+"))
		if f := c.next(); f.Type != wire.SUBACK {
			t.Fatalf("got packet type %d, want SUBACK", f.Type)
		}
		subs = append(subs, c)
	}
	pub := dialSink(t, s, "pub")
	const n = 200
	for i := range n {
		pub.write(wire.AppendPublish(nil, "a/b", 1, false, false, uint16(i+1), []byte(fmt.Sprint(i))))
	}
	for i := range n {
		f := pub.next()
		if pid, err := wire.AckPID(f); f.Type != wire.PUBACK || err != nil || pid != uint16(i+1) {
			t.Fatalf("publisher: frame %d is type %d id %d (%v), want PUBACK %d", i, f.Type, pid, err, i+1)
		}
	}
	for k, c := range subs {
		for i := range n {
			p, err := wire.ParsePublish(c.next())
			if err != nil {
				t.Fatalf("subscriber %d, message %d: %v", k, i, err)
			}
			if string(p.Payload) != fmt.Sprint(i) || string(p.Topic) != "a/b" || p.QoS != 1 {
				t.Fatalf("subscriber %d, message %d: got %q on %q at QoS %d", k, i, p.Payload, p.Topic, p.QoS)
			}
		}
	}
	if d := s.Dropped.Load(); d != 0 {
		t.Fatalf("%d forwarded PUBLISHes dropped", d)
	}
}
