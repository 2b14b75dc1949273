package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server"
)

// aliasReader resolves the topic aliases of the PUBLISHes a paho.golang client receives (paho hands them over
// raw), failing the test on an alias it was never told.
type aliasReader struct {
	known   map[uint16]string
	aliased int // PUBLISHes that carried an alias
	empty   int // of them, with an empty topic
	maxSeen uint16
}

func (r *aliasReader) resolve(t *testing.T, p *paho.Publish) string {
	t.Helper()
	if p.Properties == nil || p.Properties.TopicAlias == nil {
		return p.Topic
	}
	a := *p.Properties.TopicAlias
	r.aliased++
	r.maxSeen = max(r.maxSeen, a)
	if p.Topic != "" {
		r.known[a] = p.Topic // [MQTT-3.3.2-12 at the client] a topic with an alias (re)defines it
		return p.Topic
	}
	r.empty++
	topic, ok := r.known[a]
	if !ok {
		t.Fatalf("PUBLISH with empty topic and alias %d never defined on this connection", a)
	}
	return topic
}

// A v5 client that announces Topic Alias Maximum receives aliases, never above its maximum, and resolves every
// topic correctly; a client that announced none never gets one; a new connection starts with no aliases.
func TestOutboundTopicAliases(t *testing.T) {
	f := startFerry(t)
	u16 := func(v uint16) *uint16 { return &v }
	topics := []string{
		"fleet/region-eu-west/site-0042/device-000000000017/telemetry/temperature",
		"fleet/region-eu-west/site-0042/device-000000000017/telemetry/humidity",
		"fleet/region-eu-west/site-0042/device-000000000017/telemetry/pressure",
	}
	connect := func(id string, max *uint16) *v5 {
		cp := &paho.Connect{ClientID: id, CleanStart: true}
		if max != nil {
			cp.Properties = &paho.ConnectProperties{TopicAliasMaximum: max}
		}
		c := dialV5(t, f.addr, cp)
		c.sub(t, paho.SubscribeOptions{Topic: "fleet/#", QoS: 1})
		return c
	}
	wide := connect("alias-wide", u16(10))
	narrow := connect("alias-narrow", u16(2)) // fewer aliases than topics: least recently used ones are replaced
	none := connect("alias-none", nil)
	zero := connect("alias-zero", u16(0))
	pub := dialV5(t, f.addr, &paho.Connect{ClientID: "alias-pub", CleanStart: true})

	const rounds = 5
	publish := func() {
		for i := range rounds {
			for _, tp := range topics {
				pub.pub(t, &paho.Publish{Topic: tp, QoS: 1, Payload: fmt.Appendf(nil, "%s#%d", tp, i)})
			}
		}
	}
	publish()
	check := func(name string, c *v5, max uint16) *aliasReader {
		t.Helper()
		r := &aliasReader{known: map[uint16]string{}}
		for range rounds * len(topics) {
			m := c.next(t)
			topic := r.resolve(t, m)
			if want := string(m.Payload[:len(topic)]); topic != want || m.Payload[len(topic)] != '#' {
				t.Fatalf("%s: message %q resolved to topic %q", name, m.Payload, topic)
			}
		}
		if r.maxSeen > max {
			t.Fatalf("%s: alias %d above the client's Topic Alias Maximum %d", name, r.maxSeen, max)
		}
		return r
	}
	t.Run("MQTT-3.3.2-11/aliases-within-client-maximum", func(t *testing.T) {
		r := check("wide", wide, 10)
		if r.aliased != rounds*len(topics) || r.empty != (rounds-1)*len(topics) {
			t.Fatalf("%d of %d PUBLISHes carried an alias, %d with an empty topic; want all, %d empty",
				r.aliased, rounds*len(topics), r.empty, (rounds-1)*len(topics))
		}
		if int(r.maxSeen) != len(topics) {
			t.Fatalf("highest alias %d, want %d (one per topic)", r.maxSeen, len(topics))
		}
	})
	t.Run("MQTT-3.1.2-26/narrow-client-replaced-when-full", func(t *testing.T) {
		r := check("narrow", narrow, 2)
		if r.aliased != rounds*len(topics) {
			t.Fatalf("%d of %d PUBLISHes carried an alias", r.aliased, rounds*len(topics))
		}
	})
	t.Run("MQTT-3.1.2-27/no-maximum-no-alias", func(t *testing.T) {
		if r := check("none", none, 0); r.aliased != 0 {
			t.Fatalf("client without Topic Alias Maximum got %d aliased PUBLISHes", r.aliased)
		}
		if r := check("zero", zero, 0); r.aliased != 0 {
			t.Fatalf("client with Topic Alias Maximum 0 got %d aliased PUBLISHes", r.aliased)
		}
	})
	t.Run("MQTT-3.3.2-7/new-connection-new-table", func(t *testing.T) {
		ctxDisconnect(wide)
		again := connect("alias-wide", u16(10))
		pub.pub(t, &paho.Publish{Topic: topics[0], QoS: 1, Payload: []byte(topics[0] + "#again")})
		m := again.next(t)
		if m.Topic != topics[0] {
			t.Fatalf("first PUBLISH on a new connection has topic %q (alias %v): the old connection's alias leaked", m.Topic, m.Properties.TopicAlias)
		}
	})
}

// Inbound aliases: the server takes aliases up to its own maximum and refuses the others with 0x94, takes
// none when it announced 0, and an alias defined on one connection means nothing on another.
func TestInboundTopicAliasLimits(t *testing.T) {
	connect := func(t *testing.T, addr, id string) *raw {
		r := dialRaw(t, addr)
		r.connect(mqttcodec.Version5, id)
		return r
	}
	aliased := func(topic string, alias uint16) []byte {
		p := mqttcodec.Publish{Topic: []byte(topic), QoS: 1, PacketID: 1, Payload: []byte("x")}
		p.Props.TopicAlias = alias
		p.Props.Set(mqttcodec.PropTopicAlias)
		return mqttcodec.AppendPublish(nil, &p, mqttcodec.Version5)
	}
	f := startFerry(t, server.TopicAliasMaximum(4))
	t.Run("MQTT-3.3.2-12/accepts-up-to-own-maximum", func(t *testing.T) {
		r := connect(t, f.addr, "in-max")
		r.send(aliased("in/a", 4))
		if fh, _ := r.packet(); fh.Type != mqttcodec.PUBACK {
			t.Fatalf("alias 4 of 4: got %s, want PUBACK", mqttcodec.TypeName(fh.Type))
		}
		r.send(aliased("in/a", 5))
		r.expectDisconnect(mqttcodec.TopicAliasInvalid)
	})
	t.Run("MQTT-3.3.2-7/inbound-alias-not-shared-between-connections", func(t *testing.T) {
		a := connect(t, f.addr, "in-a")
		a.send(aliased("in/defined", 1))
		if fh, _ := a.packet(); fh.Type != mqttcodec.PUBACK {
			t.Fatal("no PUBACK")
		}
		b := connect(t, f.addr, "in-b")
		b.send(aliased("", 1)) // alias 1 is a's, not b's
		b.expectDisconnect(mqttcodec.ProtocolError)
	})
	t.Run("MQTT-3.2.2-18/server-announced-zero", func(t *testing.T) {
		g := startFerry(t, server.TopicAliasMaximum(0))
		r := connect(t, g.addr, "in-zero")
		r.send(aliased("in/a", 1))
		r.expectDisconnect(mqttcodec.TopicAliasInvalid)
	})
}

// ctxDisconnect ends a v5 client normally and waits a moment for the server to see it.
func ctxDisconnect(c *v5) {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	time.Sleep(100 * time.Millisecond)
}
