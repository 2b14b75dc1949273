package server_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Every combination of publish QoS and subscription QoS delivers once, at min(published, granted).
func TestQoSCombinations(t *testing.T) {
	f := startFerry(t)
	for subQoS := byte(0); subQoS <= 2; subQoS++ {
		sub := dialV5(t, f.addr, &paho.Connect{ClientID: fmt.Sprintf("sub-q%d", subQoS), CleanStart: true})
		sa := sub.sub(t, paho.SubscribeOptions{Topic: fmt.Sprintf("qos/%d/+", subQoS), QoS: subQoS})
		if sa.Reasons[0] != subQoS {
			t.Fatalf("granted %d, want %d", sa.Reasons[0], subQoS)
		}
		pub := dialV5(t, f.addr, &paho.Connect{ClientID: fmt.Sprintf("pub-q%d", subQoS), CleanStart: true})
		for pubQoS := byte(0); pubQoS <= 2; pubQoS++ {
			t.Run(fmt.Sprintf("MQTT-3.8.4-6/pub%d-sub%d", pubQoS, subQoS), func(t *testing.T) {
				topic := fmt.Sprintf("qos/%d/%d", subQoS, pubQoS)
				pub.pub(t, &paho.Publish{Topic: topic, QoS: pubQoS, Payload: []byte(topic)})
				m := sub.next(t)
				if m.Topic != topic || string(m.Payload) != topic {
					t.Fatalf("got %s %q", m.Topic, m.Payload)
				}
				if want := min(pubQoS, subQoS); m.QoS != want {
					t.Fatalf("delivered at QoS %d, want %d", m.QoS, want)
				}
				sub.none(t, 100*time.Millisecond)
			})
		}
	}
}

// Wildcards match per the topic rules, and overlapping subscriptions deliver one copy at the highest QoS
// carrying every subscription identifier.
func TestWildcardsAndOverlap(t *testing.T) {
	f := startFerry(t)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "wild", CleanStart: true})
	sub.subProps(t, &paho.SubscribeProperties{SubscriptionIdentifier: ptr(7)}, paho.SubscribeOptions{Topic: "site/+/temp", QoS: 0})
	sub.subProps(t, &paho.SubscribeProperties{SubscriptionIdentifier: ptr(9)}, paho.SubscribeOptions{Topic: "site/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "wild-pub", CleanStart: true})

	t.Run("MQTT-3.3.4-2/overlap-one-copy-max-qos", func(t *testing.T) {
		pub.pub(t, &paho.Publish{Topic: "site/a/temp", QoS: 1, Payload: []byte("21")})
		m := sub.next(t)
		if m.QoS != 1 {
			t.Fatalf("QoS %d, want the maximum 1", m.QoS)
		}
		ids := m.Properties.SubscriptionIdentifier
		if ids == nil {
			t.Fatal("no subscription identifier")
		}
		sub.none(t, 200*time.Millisecond)
	})
	t.Run("MQTT-4.7.1-2/hash-matches-parent", func(t *testing.T) {
		pub.pub(t, &paho.Publish{Topic: "site", QoS: 1, Payload: []byte("p")})
		if m := sub.next(t); m.Topic != "site" {
			t.Fatalf("got %s", m.Topic)
		}
	})
	t.Run("MQTT-4.7.1-3/plus-one-level", func(t *testing.T) {
		pub.pub(t, &paho.Publish{Topic: "site/a/b/temp", QoS: 0, Payload: []byte("x")})
		m := sub.next(t) // only site/# matches
		if m.Topic != "site/a/b/temp" {
			t.Fatalf("got %s", m.Topic)
		}
		sub.none(t, 200*time.Millisecond)
	})
	t.Run("MQTT-4.7.2-1/dollar-topics-not-matched-by-wildcards", func(t *testing.T) {
		s2 := dialV5(t, f.addr, &paho.Connect{ClientID: "dollar", CleanStart: true})
		s2.sub(t, paho.SubscribeOptions{Topic: "#", QoS: 0})
		s2.sub(t, paho.SubscribeOptions{Topic: "$SYS/x", QoS: 0})
		pub.pub(t, &paho.Publish{Topic: "$SYS/x", QoS: 1, Payload: []byte("d")})
		if m := s2.next(t); m.Topic != "$SYS/x" {
			t.Fatalf("got %s", m.Topic)
		}
		s2.none(t, 200*time.Millisecond) // "#" must not have matched too
	})
}

func ptr(i int) *int { return &i }

// No Local keeps a client's own messages from coming back on that subscription.
func TestNoLocal(t *testing.T) {
	f := startFerry(t)
	c := dialV5(t, f.addr, &paho.Connect{ClientID: "self", CleanStart: true})
	c.sub(t, paho.SubscribeOptions{Topic: "chat/#", QoS: 1, NoLocal: true})
	other := dialV5(t, f.addr, &paho.Connect{ClientID: "other", CleanStart: true})
	t.Run("MQTT-3.8.3-3/no-local", func(t *testing.T) {
		c.pub(t, &paho.Publish{Topic: "chat/1", QoS: 1, Payload: []byte("mine")})
		other.pub(t, &paho.Publish{Topic: "chat/1", QoS: 1, Payload: []byte("theirs")})
		m := c.next(t)
		if string(m.Payload) != "theirs" {
			t.Fatalf("got %q, want only the other client's message", m.Payload)
		}
		c.none(t, 200*time.Millisecond)
	})
}

// v5 message properties pass through Kafka unchanged, user properties in order with repeats.
func TestMessagePropertiesPassThrough(t *testing.T) {
	f := startFerry(t)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "props-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "req/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "props-pub", CleanStart: true})
	pf := byte(1)
	exp := uint32(3600)
	pub.pub(t, &paho.Publish{Topic: "req/1", QoS: 1, Payload: []byte("{}"), Properties: &paho.PublishProperties{
		PayloadFormat: &pf, MessageExpiry: &exp, ContentType: "application/json", ResponseTopic: "resp/1",
		CorrelationData: []byte{0, 1, 2}, User: paho.UserProperties{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}, {Key: "mqtt.qos", Value: "x"}},
	}})
	m := sub.next(t)
	p := m.Properties
	if p.PayloadFormat == nil || *p.PayloadFormat != 1 || p.ContentType != "application/json" || p.ResponseTopic != "resp/1" ||
		!bytes.Equal(p.CorrelationData, []byte{0, 1, 2}) {
		t.Fatalf("properties changed: %+v", p)
	}
	if p.MessageExpiry == nil || *p.MessageExpiry > 3600 || *p.MessageExpiry < 3590 {
		t.Fatalf("MQTT-3.3.2-6: message expiry %v, want the remaining time ≤ 3600", p.MessageExpiry)
	}
	var got []string
	for _, u := range p.User {
		got = append(got, u.Key+"="+u.Value)
	}
	if want := "a=1 b=2 a=3 mqtt.qos=x"; strings.Join(got, " ") != want {
		t.Fatalf("MQTT-3.3.2-18: user properties %q, want %q", strings.Join(got, " "), want)
	}
}

// Inbound topic aliases: the first PUBLISH sets the alias, later ones send an empty topic.
func TestTopicAliasInbound(t *testing.T) {
	f := startFerry(t)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "alias-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "alias/#", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "alias-pub", CleanStart: true})
	if pub.connack.Properties.TopicAliasMaximum == nil || *pub.connack.Properties.TopicAliasMaximum == 0 {
		t.Fatal("CONNACK does not offer topic aliases")
	}
	a := uint16(3)
	pub.pub(t, &paho.Publish{Topic: "alias/long/topic", QoS: 1, Payload: []byte("1"), Properties: &paho.PublishProperties{TopicAlias: &a}})
	pub.pub(t, &paho.Publish{Topic: "", QoS: 1, Payload: []byte("2"), Properties: &paho.PublishProperties{TopicAlias: &a}})
	for _, want := range []string{"1", "2"} {
		m := sub.next(t)
		if m.Topic != "alias/long/topic" || string(m.Payload) != want {
			t.Fatalf("got %s %q", m.Topic, m.Payload)
		}
	}
}

// A payload just under the maximum packet size goes through; CONNACK states the maximum.
func TestLargePayload(t *testing.T) {
	const max = 256 << 10
	f := startFerryMax(t, max)
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "big-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "big", QoS: 1})
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "big-pub", CleanStart: true})
	if got := pub.connack.Properties.MaximumPacketSize; got == nil || *got != max {
		t.Fatalf("CONNACK Maximum Packet Size %v, want %d", got, max)
	}
	payload := bytes.Repeat([]byte{0xAB}, max-64)
	pub.pub(t, &paho.Publish{Topic: "big", QoS: 1, Payload: payload})
	if m := sub.next(t); !bytes.Equal(m.Payload, payload) {
		t.Fatalf("payload of %d bytes changed (got %d)", len(payload), len(m.Payload))
	}
}

// Retained messages reach later subscribers with RETAIN set; an empty retained payload clears them.
func TestRetainedBasic(t *testing.T) {
	f := startFerry(t)
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "ret-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "ret/1", QoS: 1, Retain: true, Payload: []byte("kept")})
	time.Sleep(300 * time.Millisecond) // the instance learns retained messages from the records it reads
	sub := dialV5(t, f.addr, &paho.Connect{ClientID: "ret-sub", CleanStart: true})
	sub.sub(t, paho.SubscribeOptions{Topic: "ret/#", QoS: 1})
	m := sub.next(t)
	if !m.Retain || string(m.Payload) != "kept" {
		t.Fatalf("MQTT-3.3.1-9: got retain=%v %q", m.Retain, m.Payload)
	}
	pub.pub(t, &paho.Publish{Topic: "ret/1", QoS: 1, Retain: true, Payload: nil})
	if m := sub.next(t); len(m.Payload) != 0 || m.Retain {
		t.Fatalf("MQTT-3.3.1-12: live delivery of the clearing message: retain=%v %q", m.Retain, m.Payload)
	}
	time.Sleep(300 * time.Millisecond)
	late := dialV5(t, f.addr, &paho.Connect{ClientID: "ret-late", CleanStart: true})
	late.sub(t, paho.SubscribeOptions{Topic: "ret/#", QoS: 1})
	late.none(t, 300*time.Millisecond)
}
