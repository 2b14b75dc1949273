package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// A loop that is busy for 2.5 s (so a tick waits at least 1.5 s, wherever it falls) shows it as tick lag: in the histogram and as the loop's recent maximum.
// Connections of two listeners are counted apart.
func TestLoopLagAndListeners(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), kafkamux.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	off, err := offload.New(mux, 1)
	if err != nil {
		t.Fatal(err)
	}
	var addrs [2]string
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	s, err := New(off, mux, Listen("tcp://"+addrs[0]), Listen("tcp://"+addrs[1]), EventLoops(1),
		Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())

	// One client on the second listener (it creates the loop), one socket on the first that never sends CONNECT
	// and is closed by the client.
	c, err := net.Dial("tcp", addrs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(mqttcodec.AppendConnect(nil, &mqttcodec.Connect{Version: mqttcodec.Version311,
		CleanStart: true, KeepAlive: 60, ClientID: []byte("lag")})); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil { // CONNACK
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	idle.Close()

	s.loopMu.Lock()
	l := s.order[0]
	s.loopMu.Unlock()
	_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		time.Sleep(2500 * time.Millisecond) // a loop stuck in work: exactly what must never happen, measured
		return nil
	}))
	deadline := time.Now().Add(5 * time.Second)
	for s.LoopLagMax()[0] < time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("lag max %v after the loop was blocked 2.5 s", s.LoopLagMax()[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
	h := s.Metrics().LoopLag()
	var long uint64
	for i, n := range h.Counts {
		if b := kafkamux.HistogramBound(i); b < 0 || b > time.Second {
			long += n
		}
	}
	if long == 0 {
		t.Fatalf("no tick lag over a second in the histogram: %v", h.Counts)
	}

	deadline = time.Now().Add(5 * time.Second)
	for {
		ls := s.Metrics().Listeners()
		ok := ls[0].Opened == 1 && ls[0].Current == 0 && ls[0].Closed[closeClientGone] == 1 &&
			ls[1].Opened == 1 && ls[1].Current == 1
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listeners: %+v", ls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
