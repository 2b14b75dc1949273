package server_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// The loops listen with SO_REUSEPORT (reuseport.go), which would let a second process share the port: a
// second Ferry on a port the first serves must still fail with "address already in use", and the first must
// keep serving every new connection (none lands on a socket of the second).
func TestListenPortExclusive(t *testing.T) {
	f := startFerry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), kafkamux.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	off, err := offload.New(mux, 2)
	if err != nil {
		t.Fatal(err)
	}
	second, err := server.New(off, mux, server.Listen("tcp://"+f.addr), server.EventLoops(2), server.Logger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start()
	if err == nil {
		_ = second.Stop(ctx)
		t.Fatal("a second server started on the port the first listens on")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), f.addr) {
		t.Fatalf("second server: %v, want one naming %s and 'address already in use'", err, f.addr)
	}
	for i := range 20 {
		dialV5(t, f.addr, &paho.Connect{ClientID: "excl-" + strconv.Itoa(i), CleanStart: true})
	}
}
