package server_test

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/server"
)

// While the shared reader trails Kafka past --read-lag-limit, a QoS 0 publish is dropped at ingest and counted;
// a QoS 1 one is taken, acknowledged and delivered. Once the reader receives a record on time, QoS 0 flows again.
func TestReadLagShedsQoS0NotQoS1(t *testing.T) {
	f := startFerry(t, server.ReadLagLimit(50*time.Millisecond))
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "lag-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "lag/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "lag-pub", CleanStart: true})
	readLag := func() uint64 { return f.srv.Metrics().Snapshot().Drops[dropIndex("read_lag")] }

	// A record that waited a second with 10,000 behind it, as the reader sees one when ingest outruns it.
	server.NoteReadLag(f.srv, time.Second, 10_000)
	before := readLag()
	pub.pub(t, &paho.Publish{Topic: "lag/q0-dropped", QoS: 0, Payload: []byte("late")})
	waitCounter(t, "read_lag drops", before+1, readLag)

	if r := pub.pub(t, &paho.Publish{Topic: "lag/q1", QoS: 1, Payload: []byte("kept")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish while the reader is behind: reason 0x%02x, want success", r.ReasonCode)
	}
	if m := sub.next(t); m.Topic != "lag/q1" {
		t.Fatalf("got %q, want the QoS 1 message (the QoS 0 one was dropped)", m.Topic)
	}

	// The reader received lag/q1 at once with nothing behind it: caught up.
	pub.pub(t, &paho.Publish{Topic: "lag/q0-kept", QoS: 0, Payload: []byte("on time")})
	if m := sub.next(t); m.Topic != "lag/q0-kept" {
		t.Fatalf("got %q, want the QoS 0 message published after the reader caught up", m.Topic)
	}
	if got := readLag(); got != before+1 {
		t.Fatalf("read_lag drops %d, want %d", got, before+1)
	}
}
