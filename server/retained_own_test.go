package server_test

import (
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferrymq/ferry/server"
)

// A client that has its PUBACK for a retained message and then subscribes on the same instance gets that
// message [MQTT-3.3.1-6], even while the instance's reader has not read it back from Kafka: here every fetch
// is held from before the PUBLISH until after the SUBACK. Without the wait for own writes the subscription
// gets the message only live, with RETAIN 0.
func TestRetainedReadYourWrites(t *testing.T) {
	f := startFerry(t, server.SessionsReadWait(time.Minute)) // the wait's bound is not what releases it here
	waitUntil(t, f.srv.RetainedReady)
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "ryw-pub", CleanStart: true})
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "ryw-sub", CleanStart: true})

	gate := make(chan struct{})
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	defer release()
	c := f.mux.Cluster()
	held := make(chan struct{}, 1)
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		select {
		case held <- struct{}{}:
		default:
		}
		c.SleepControl(func() { <-gate })
		return nil, nil, false
	})
	<-held                             // a fetch is held at the broker
	time.Sleep(100 * time.Millisecond) // and one already answered has been handled

	pub.pub(t, &paho.Publish{Topic: "ryw/state", QoS: 1, Retain: true, Payload: []byte("on")})
	sub.sub(t, paho.SubscribeOptions{Topic: "ryw/#", QoS: 1})
	if n := f.srv.RetainedCount(); n != 0 {
		t.Fatalf("the index holds %d retained messages while fetches are held; the test holds nothing back", n)
	}
	release()
	// The live copy may come first (the known window in retained.go); the retained one must come.
	for {
		m := sub.next(t)
		if string(m.Payload) != "on" {
			t.Fatalf("got %q on %s", m.Payload, m.Topic)
		}
		if m.Retain {
			return
		}
	}
}
