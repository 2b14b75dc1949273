package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/server/auth"
)

// Rules without JWT: anonymous clients get a role that may do everything but touch ops/internal/#.
var denyRules = auth.Rules{
	AnonymousRole: "anyone",
	Roles: map[string]auth.RoleRules{
		"anyone": {Publish: []string{"#"}, Subscribe: []string{"#"},
			DenyPublish: []string{"ops/internal/#"}, DenySubscribe: []string{"ops/internal/#"}},
	},
}

// Deny rules refuse inside an allowed tree, deny wins, and they work without any token key: a plain rules
// file for anonymous clients. One SUBSCRIBE mixes granted and refused filters, in MQTT 5 and 3.1.1.
func TestAuthDenyRules(t *testing.T) {
	f, _ := authFerry(t, auth.Settings{Anonymous: true}, nil, &denyRules)
	watch := mustConnect(t, f.addr, &paho.Connect{ClientID: "watch", CleanStart: true}) // anonymous
	watch.sub(t, paho.SubscribeOptions{Topic: "ops/#", QoS: 1})                         // overlaps the denied tree: granted

	t.Run("MQTT-3.9.3-1/v5-suback-mixed", func(t *testing.T) {
		c := mustConnect(t, f.addr, &paho.Connect{ClientID: "deny-v5", CleanStart: true})
		sa, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "ops/public/#", QoS: 1}, {Topic: "ops/internal/#", QoS: 1}, {Topic: "ops/internal/+/log", QoS: 0},
			{Topic: "#", QoS: 0}, {Topic: "ops/internal", QoS: 1}}})
		if sa == nil {
			t.Fatalf("subscribe: %v", err)
		}
		// ops/internal is matched by ops/internal/# ('#' matches the parent level too): refused.
		want := []byte{1, 0x87, 0x87, 0, 0x87}
		if string(sa.Reasons) != string(want) {
			t.Fatalf("SUBACK % x, want % x", sa.Reasons, want)
		}
	})
	t.Run("MQTT-3.9.3-1/v311-suback-mixed", func(t *testing.T) {
		c := dialV3(t, f.addr, "deny-v3", true, func(mqtt.Client, mqtt.Message) {})
		tok := c.SubscribeMultiple(map[string]byte{"ops/public/#": 1, "ops/internal/#": 1, "ops/internal/x": 0, "#": 0}, nil)
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("no SUBACK")
		}
		got := tok.(*mqtt.SubscribeToken).Result()
		want := map[string]byte{"ops/public/#": 1, "ops/internal/#": 0x80, "ops/internal/x": 0x80, "#": 0}
		for f, w := range want {
			if got[f] != w {
				t.Fatalf("v3 SUBACK for %s: 0x%02x, want 0x%02x (all: %v)", f, got[f], w, got)
			}
		}
	})
	t.Run("MQTT-3.3.4-1/v5-publish-denied-0x87", func(t *testing.T) {
		c := mustConnect(t, f.addr, &paho.Connect{ClientID: "deny-pub-v5", CleanStart: true})
		r, _ := c.Publish(context.Background(), &paho.Publish{Topic: "ops/internal/secret", QoS: 1, Payload: []byte("no")})
		if r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("PUBACK %+v, want 0x87", r)
		}
		c.pub(t, &paho.Publish{Topic: "ops/internal/secret", QoS: 0, Payload: []byte("no")}) // dropped
		if r := c.pub(t, &paho.Publish{Topic: "ops/public/news", QoS: 1, Payload: []byte("yes")}); r.ReasonCode != 0 {
			t.Fatalf("PUBACK 0x%02x for an allowed topic", r.ReasonCode)
		}
		if m := watch.next(t); m.Topic != "ops/public/news" {
			t.Fatalf("watcher got %s: a denied publish reached Kafka", m.Topic)
		}
	})
	t.Run("MQTT-3.3.5-2/v311-publish-denied-acked-dropped", func(t *testing.T) {
		c := dialV3(t, f.addr, "deny-pub-v3", true, func(mqtt.Client, mqtt.Message) {})
		for q := byte(0); q <= 2; q++ {
			if tok := c.Publish("ops/internal/v3", q, false, "no"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("QoS %d publish: %v", q, tok.Error())
			}
		}
		if tok := c.Publish("ops/public/v3", 1, false, "yes"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		if m := watch.next(t); m.Topic != "ops/public/v3" {
			t.Fatalf("watcher got %s: a denied v3 publish reached Kafka", m.Topic)
		}
	})
	t.Run("deny-wins-on-delivery", func(t *testing.T) {
		// A Kafka application writes to a denied topic: the watcher's wide grant (ops/#) does not carry it.
		cl, err := kgo.NewClient(kgo.SeedBrokers(f.mux.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, k := range []string{"ops/internal/kafka", "ops/public/kafka"} {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: f.mux.MessagesTopic(), Key: []byte(k), Value: []byte("k")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if m := watch.next(t); m.Topic != "ops/public/kafka" {
			t.Fatalf("watcher got %s: a denied topic was delivered", m.Topic)
		}
		watch.none(t, 300*time.Millisecond)
	})
}
