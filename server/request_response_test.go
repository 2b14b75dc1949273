package server_test

import (
	"bytes"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// MQTT 5 request/response between two MQTT clients through Kafka: the requester's Response Topic and
// Correlation Data reach the responder [MQTT-3.3.2-15] [MQTT-3.3.2-16], and the answer the responder publishes to
// that topic with the same correlation data reaches the requester with it intact. (The Kafka-application
// responder is tested in examples/kafka-responder.)
func TestRequestResponseMQTTResponder(t *testing.T) {
	f := startFerry(t)
	responder := dialV5(t, f.addr, &paho.Connect{ClientID: "rr-responder", CleanStart: true})
	responder.sub(t, paho.SubscribeOptions{Topic: "svc/+/request", QoS: 1})
	requester := dialV5(t, f.addr, &paho.Connect{ClientID: "rr-requester", CleanStart: true})
	requester.sub(t, paho.SubscribeOptions{Topic: "replies/rr-requester/#", QoS: 1})

	for i, corr := range [][]byte{[]byte("id-1"), {0, 0xff, 0x80, '\n', 0}} { // text and arbitrary binary
		respTopic := "replies/rr-requester/" + string(rune('a'+i))
		requester.pub(t, &paho.Publish{Topic: "svc/clock/request", QoS: 1, Payload: []byte("what time?"),
			Properties: &paho.PublishProperties{ResponseTopic: respTopic, CorrelationData: corr}})

		req := responder.next(t)
		if req.Properties == nil || req.Properties.ResponseTopic != respTopic || !bytes.Equal(req.Properties.CorrelationData, corr) {
			t.Fatalf("request reached the responder with properties %+v, want response topic %q and correlation %q",
				req.Properties, respTopic, corr)
		}
		responder.pub(t, &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1, Payload: []byte("noon"),
			Properties: &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData}})

		resp := requester.next(t)
		if resp.Topic != respTopic || string(resp.Payload) != "noon" || resp.Properties == nil ||
			!bytes.Equal(resp.Properties.CorrelationData, corr) {
			t.Fatalf("response %s %q with properties %+v, want %s with correlation %q", resp.Topic, resp.Payload, resp.Properties, respTopic, corr)
		}
	}
}
