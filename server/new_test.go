package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
)

// New refuses more event loops than the offload has lanes, with an error that says so, instead of an index
// out of range when a loop boots.
func TestNewMoreLoopsThanLanes(t *testing.T) {
	mux, off := embeddedOne(t)
	_, err := New(off, mux, Listen("tcp://127.0.0.1:0"), EventLoops(2), Logger(slog.New(slog.DiscardHandler)))
	if err == nil || !strings.Contains(err.Error(), "2 event loops but the offload has 1 lanes") {
		t.Fatalf("New with 2 loops over 1 lane: %v, want an error naming both counts", err)
	}
	if _, err := New(nil, nil, Listen("tcp://127.0.0.1:0"), EventLoops(1)); err == nil {
		t.Fatal("New with a nil offload: no error")
	}
}

// embeddedOne starts an embedded Kafka of one partition (no data dir) and an offload of one lane on it, both
// closed when the test ends.
func embeddedOne(t *testing.T) (*kafkamux.Mux, *offload.Offload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), kafkamux.Partitions(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mux.Close)
	off, err := offload.New(mux, 1)
	if err != nil {
		t.Fatal(err)
	}
	return mux, off
}
