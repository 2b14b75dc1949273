package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
)

// An MQTT 5 requester and this Kafka responder, through a Ferry on its embedded Kafka: the answer reaches the
// requester on its response topic with the correlation data intact, text or binary.
func TestKafkaResponder(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), kafkamux.Partitions(3), kafkamux.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	off, err := offload.New(mux, 1)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	srv, err := server.New(off, mux, server.Listen("tcp://"+addr), server.EventLoops(1), server.Logger(log))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	}()

	// The responder, as main runs it, from the start of the (new) topic so no request can slip past it.
	cl, err := NewClient([]string{mux.Addr()}, mux.MessagesTopic(), "", true)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- Run(rctx, cl, "svc/echo/#", echo, log) }()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	got := make(chan *paho.Publish, 10)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil }}})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "device-7", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/7/replies/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	for i, corr := range [][]byte{[]byte("req-1"), {0, 0xff, 0xfe, '\n', 0}} {
		respTopic := "devices/7/replies/" + string(rune('a'+i))
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "svc/echo/time", QoS: 1, Payload: []byte("ping"),
			Properties: &paho.PublishProperties{ResponseTopic: respTopic, CorrelationData: corr}}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.Topic != respTopic || string(m.Payload) != "svc/echo/time: ping" {
				t.Fatalf("answer %s %q, want %s %q", m.Topic, m.Payload, respTopic, "svc/echo/time: ping")
			}
			if m.Properties == nil || !bytes.Equal(m.Properties.CorrelationData, corr) {
				t.Fatalf("answer properties %+v, want correlation data %q", m.Properties, corr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer within 10s")
		}
	}
	// A publish without a response topic, or outside the filter, is not answered.
	c.Publish(ctx, &paho.Publish{Topic: "svc/echo/time", QoS: 1, Payload: []byte("no reply wanted")})
	c.Publish(ctx, &paho.Publish{Topic: "svc/other", QoS: 1, Payload: []byte("x"),
		Properties: &paho.PublishProperties{ResponseTopic: "devices/7/replies/z"}})
	select {
	case m := <-got:
		t.Fatalf("unexpected answer %s %q", m.Topic, m.Payload)
	case <-time.After(time.Second):
	}
}

func TestReply(t *testing.T) {
	h := func(topic string, p []byte) []byte { return append([]byte(topic+"|"), p...) }
	req := &kgo.Record{Key: []byte("svc/echo/a"), Value: []byte("v"), Headers: []kgo.RecordHeader{
		{Key: "mqtt.qos", Value: []byte("1")}, {Key: headerResponseTopic, Value: []byte("r/1")},
		{Key: headerCorrelationData, Value: []byte{0, 1}}, {Key: "trace", Value: []byte("t")},
	}}
	r := Reply(req, "svc/+/a", h)
	if r == nil || string(r.Key) != "r/1" || string(r.Value) != "svc/echo/a|v" || len(r.Headers) != 1 ||
		r.Headers[0].Key != headerCorrelationData || !bytes.Equal(r.Headers[0].Value, []byte{0, 1}) {
		t.Fatalf("reply %+v", r)
	}
	req.Headers[2].Value[0] = 9 // the answer owns its bytes
	if r.Headers[0].Value[0] != 0 {
		t.Fatal("correlation data not copied")
	}
	if Reply(req, "svc/other/#", h) != nil {
		t.Fatal("answered a request outside the filter")
	}
	if Reply(&kgo.Record{Key: []byte("svc/echo/a"), Value: []byte("v")}, "#", h) != nil {
		t.Fatal("answered a record without a response topic")
	}
	noCorr := &kgo.Record{Key: []byte("svc/echo/a"), Headers: []kgo.RecordHeader{{Key: headerResponseTopic, Value: []byte("r/2")}}}
	if r := Reply(noCorr, "#", func(string, []byte) []byte { return nil }); r == nil || len(r.Headers) != 0 || r.Value == nil {
		t.Fatalf("reply without correlation data: %+v", r)
	}
}

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"svc/echo/#", "svc/echo/a/b", true}, {"svc/echo/#", "svc/echo", true}, {"svc/+/req", "svc/x/req", true},
		{"svc/+/req", "svc/x/y/req", false}, {"svc/+", "svc", false}, {"#", "$SYS/x", false}, {"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true}, {"a/b", "a/b", true}, {"a/b", "a/b/c", false},
	} {
		if got := matches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("matches(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a+/b", "a/b#"} {
		if validFilter(bad) == nil {
			t.Errorf("filter %q accepted", bad)
		}
	}
}
