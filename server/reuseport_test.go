package server_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/kafkamux"
)

// The loops listen with SO_REUSEPORT (server/transport/listen.go), which would let a second process share
// the port: a second Ferry on a port the first serves must still fail with "address already in use", and the
// first must keep serving every new connection (none lands on a socket of the second).
func TestListenPortExclusive(t *testing.T) {
	f := startFerry(t)
	second := newFerry(t, 2, f.addr, []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir("")}, nil)
	defer second.mux.Close()
	err := second.srv.Start()
	if err == nil {
		_ = second.srv.Stop(context.Background())
		t.Fatal("a second server started on the port the first listens on")
	}
	if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), f.addr) {
		t.Fatalf("second server: %v, want one naming %s and 'address already in use'", err, f.addr)
	}
	for i := range 20 {
		dialV5(t, f.addr, &paho.Connect{ClientID: "excl-" + strconv.Itoa(i), CleanStart: true})
	}
}
