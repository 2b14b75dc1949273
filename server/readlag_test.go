package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/server"
)

// While the shared reader trails Kafka past --read-lag-limit, the loops drop a growing share of QoS 0 publishes at
// ingest and count them; a QoS 1 publish is taken, acknowledged and delivered whatever the share. Once the reader
// keeps up again, the share falls back and QoS 0 flows again.
func TestReadLagShedsQoS0NotQoS1(t *testing.T) {
	f := startFerry(t, server.ReadLagLimit(50*time.Millisecond))
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "lag-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "lag/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "lag-pub", CleanStart: true})
	readLag := func() uint64 { return f.srv.Metrics().Snapshot().Drops[dropIndex("read_lag")] }
	maxShare := func() float64 {
		m := 0.0
		for _, s := range f.srv.ReadLagShed() {
			m = max(m, s)
		}
		return m
	}

	// The reader a second behind, as when ingest outruns it: the share climbs to all of QoS 0. Every publish is
	// a step's chance to move it; the loop is bounded by count, not by a clock.
	server.HoldReadLag(f.srv, time.Second)
	if got := f.srv.ReadLag(); got != time.Second {
		t.Fatalf("ReadLag %v while held at 1s", got)
	}
	for i := 0; maxShare() < 1; i++ {
		if i == 20_000 {
			t.Fatalf("share %v after 20,000 QoS 0 publishes with the reader a second behind, want 1", maxShare())
		}
		pub.pub(t, &paho.Publish{Topic: fmt.Sprintf("lag/q0-early-%d", i), QoS: 0, Payload: []byte("x")})
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // let steps fall due
		}
	}
	before := readLag()
	for i := range 100 {
		pub.pub(t, &paho.Publish{Topic: fmt.Sprintf("lag/q0-dropped-%d", i), QoS: 0, Payload: []byte("late")})
	}
	waitCounter(t, "read_lag drops at a share of 1", before+100, readLag)

	if r := pub.pub(t, &paho.Publish{Topic: "lag/q1", QoS: 1, Payload: []byte("kept")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish while the reader is behind: reason 0x%02x, want success", r.ReasonCode)
	}
	for {
		m := sub.next(t)
		if m.Topic == "lag/q1" {
			break
		}
		if !strings.HasPrefix(m.Topic, "lag/q0-early-") {
			t.Fatalf("got %q, want the QoS 1 message (QoS 0 ones published at a share of 1 are dropped)", m.Topic)
		}
	}

	// The reader keeps up: the share falls and a QoS 0 publish reaches the subscriber again.
	server.HoldReadLag(f.srv, 0)
	for i := 0; ; i++ {
		if i == 20_000 {
			t.Fatalf("no QoS 0 publish delivered in 20,000 after the reader caught up (share %v)", maxShare())
		}
		topic := fmt.Sprintf("lag/q0-kept-%d", i)
		pub.pub(t, &paho.Publish{Topic: topic, QoS: 0, Payload: []byte("on time")})
		if i%100 == 99 {
			time.Sleep(time.Millisecond)
		}
		if maxShare() == 0 {
			pub.pub(t, &paho.Publish{Topic: "lag/q0-after", QoS: 0, Payload: []byte("on time")})
			break
		}
	}
	for {
		m := sub.next(t)
		if m.Topic == "lag/q0-after" {
			break
		}
		if !strings.HasPrefix(m.Topic, "lag/q0-kept-") {
			t.Fatalf("got %q, want QoS 0 messages published after the reader caught up", m.Topic)
		}
	}
	server.HoldReadLag(f.srv, -1)
}
