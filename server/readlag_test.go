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
// keeps up again, the share falls back and QoS 0 flows again. Holding the publishers back first (--qos0-hold,
// readlag_hold_test.go) is off: this is what happens without it, or past its buffer bound.
//
// Every message goes to one topic, named by its payload: one Kafka partition, so the subscriber gets them in the
// order they were published (messages of different topics may come in another order, from different
// partitions). A QoS 1 publish before the last QoS 0 one empties the connection's lane, so that no other
// mechanism (a full lane drops QoS 0 as well) takes the message this test expects.
func TestReadLagShedsQoS0NotQoS1(t *testing.T) {
	f := startFerry(t, server.ReadLagLimit(50*time.Millisecond), server.QoS0Hold(false))
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "lag-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "lag/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "lag-pub", CleanStart: true})
	readLag := func() uint64 { return f.srv.Metrics().Snapshot().Drops[dropIndex("read_lag")] }
	t.Cleanup(func() {
		if t.Failed() { // which mechanism dropped what
			t.Logf("drops by reason %v: %v", server.DropReasonNames, f.srv.Metrics().Snapshot().Drops)
		}
	})
	maxShare := func() float64 {
		m := 0.0
		for _, s := range f.srv.ReadLagShed() {
			m = max(m, s)
		}
		return m
	}

	// publishUntil publishes QoS 0 messages prefix-N until done holds: every publish is a step's chance to move
	// the share. Bounded by count, not by a clock.
	publishUntil := func(prefix string, done func() bool, want string) {
		t.Helper()
		for i := 0; !done(); i++ {
			if i == 20_000 {
				t.Fatalf("%s: not so after 20,000 QoS 0 publishes (share %v)", want, maxShare())
			}
			pub.pub(t, &paho.Publish{Topic: "lag/t", QoS: 0, Payload: fmt.Appendf(nil, "%s%d", prefix, i)})
			if i%100 == 99 {
				time.Sleep(time.Millisecond) // let steps fall due
			}
		}
	}
	// receiveUntil reads the subscriber's messages up to the one named name; only ones under prefix may come
	// before it.
	receiveUntil := func(name, prefix, why string) {
		t.Helper()
		for {
			m := string(sub.next(t).Payload)
			if m == name {
				return
			}
			if !strings.HasPrefix(m, prefix) {
				t.Fatalf("got %q, want %q (%s)", m, name, why)
			}
		}
	}

	// The reader a second behind, as when ingest outruns it: the share climbs to all of QoS 0.
	server.HoldReadLag(f.srv, time.Second)
	if got := f.srv.ReadLag(); got != time.Second {
		t.Fatalf("ReadLag %v while held at 1s", got)
	}
	publishUntil("lag/q0-early-", func() bool { return maxShare() == 1 }, "share 1 with the reader a second behind")
	before := readLag()
	for i := range 100 {
		pub.pub(t, &paho.Publish{Topic: "lag/t", QoS: 0, Payload: fmt.Appendf(nil, "lag/q0-dropped-%d", i)})
	}
	waitCounter(t, "read_lag drops at a share of 1", before+100, readLag)

	if r := pub.pub(t, &paho.Publish{Topic: "lag/t", QoS: 1, Payload: []byte("lag/q1")}); r.ReasonCode != 0 {
		t.Fatalf("QoS 1 publish while the reader is behind: reason 0x%02x, want success", r.ReasonCode)
	}
	receiveUntil("lag/q1", "lag/q0-early-", "QoS 0 ones published at a share of 1 are dropped")

	// The reader keeps up: the share falls and a QoS 0 publish reaches the subscriber again.
	server.HoldReadLag(f.srv, 0)
	publishUntil("lag/q0-kept-", func() bool { return maxShare() == 0 }, "share 0 once the reader keeps up")
	pub.pub(t, &paho.Publish{Topic: "lag/t", QoS: 1, Payload: []byte("lag/q0-kept-sync")}) // its PUBACK: the lane is empty
	pub.pub(t, &paho.Publish{Topic: "lag/t", QoS: 0, Payload: []byte("lag/q0-after")})
	receiveUntil("lag/q0-after", "lag/q0-kept-", "a QoS 0 publish after the reader caught up is delivered")
	server.HoldReadLag(f.srv, -1)
}
