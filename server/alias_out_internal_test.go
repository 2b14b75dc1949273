package server

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/topicalias"
)

// aliasTestConn is a connection with no socket: writePublish appends to its loop's out buffer.
func aliasTestConn(version byte, clientMax uint16, opts ...Opt) *conn {
	srv := &Server{}
	srv.cfg.defaults()
	for _, o := range opts {
		o.apply(&srv.cfg)
	}
	l := &loop{srv: srv}
	return &conn{l: l, version: version, clientAliasMax: clientMax}
}

// decodeOut decodes the PUBLISHes c wrote and empties its out buffer.
func decodeOut(t testing.TB, c *conn) []mqttcodec.Publish {
	t.Helper()
	var out []mqttcodec.Publish
	buf := c.l.out
	for len(buf) > 0 {
		fh, body, n, err := mqttcodec.Frame(buf, 0)
		if err != nil {
			t.Fatalf("frame: %v", err)
		}
		var p mqttcodec.Publish
		if err := p.Decode(fh, body, c.version); err != nil {
			t.Fatalf("decode: %v", err)
		}
		p.Topic = append([]byte(nil), p.Topic...)
		out = append(out, p)
		buf = buf[n:]
	}
	c.l.out = c.l.out[:0]
	return out
}

func TestOutAlias(t *testing.T) {
	now := time.Now()
	send := func(c *conn, topic string) {
		d := delivery{msg: &kafkamux.Message{Topic: topic, Payload: []byte("x")}}
		if !c.writePublish(&d, 0, false, now) {
			t.Fatalf("PUBLISH on %s not written", topic)
		}
	}
	long := "place/4242/device/0000000017/telemetry/temperature"

	t.Run("MQTT-3.3.2-11/first-use-topic-then-empty", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 10)
		send(c, long)
		send(c, long)
		got := decodeOut(t, c)
		if string(got[0].Topic) != long || got[0].Props.TopicAlias != 1 {
			t.Fatalf("first PUBLISH: topic %q alias %d, want the topic and alias 1", got[0].Topic, got[0].Props.TopicAlias)
		}
		if len(got[1].Topic) != 0 || got[1].Props.TopicAlias != 1 {
			t.Fatalf("second PUBLISH: topic %q alias %d, want an empty topic and alias 1", got[1].Topic, got[1].Props.TopicAlias)
		}
	})
	t.Run("MQTT-3.3.2-11/never-above-client-maximum-lru", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 2)
		seen := map[uint16]string{}
		topics := []string{"a/long/topic/1", "a/long/topic/2", "a/long/topic/1", "a/long/topic/3", "a/long/topic/2"}
		for _, tp := range topics {
			send(c, tp)
		}
		for i, p := range decodeOut(t, c) {
			a := p.Props.TopicAlias
			if a == 0 || a > 2 {
				t.Fatalf("PUBLISH %d: alias %d, want 1..2", i, a)
			}
			if len(p.Topic) > 0 {
				seen[a] = string(p.Topic)
			}
			if seen[a] != topics[i] {
				t.Fatalf("PUBLISH %d: alias %d maps to %q at the client, want %q", i, a, seen[a], topics[i])
			}
		}
		// LRU: topic 3 replaced topic 2 (used before topic 1's second use), so topic 2 came back with its name.
	})
	t.Run("MQTT-3.1.2-27/client-announced-zero", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 0)
		send(c, long)
		send(c, long)
		for _, p := range decodeOut(t, c) {
			if p.Props.Has(mqttcodec.PropTopicAlias) || string(p.Topic) != long {
				t.Fatalf("client without Topic Alias Maximum got alias %d, topic %q", p.Props.TopicAlias, p.Topic)
			}
		}
		if c.outAlias != nil {
			t.Fatal("alias table allocated for a client that takes none")
		}
	})
	t.Run("MQTT-3.1.2-27/v311-never", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version311, 10)
		send(c, long)
		send(c, long)
		if c.outAlias != nil {
			t.Fatal("alias table allocated for a v3.1.1 client")
		}
		for _, p := range decodeOut(t, c) {
			if string(p.Topic) != long {
				t.Fatalf("v3.1.1 PUBLISH topic %q", p.Topic)
			}
		}
	})
	t.Run("server-option-zero", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 10, OutboundTopicAliases(0))
		send(c, long)
		send(c, long)
		for _, p := range decodeOut(t, c) {
			if p.Props.Has(mqttcodec.PropTopicAlias) {
				t.Fatal("alias sent with OutboundTopicAliases(0)")
			}
		}
	})
	t.Run("byte-budget", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 100, OutboundTopicAliasBytes(3*(topicalias.EntryCost+len(long))))
		for i := range 10 {
			send(c, long[:len(long)-1]+strconv.Itoa(i))
		}
		if n := c.outAlias.Len(); n != 3 {
			t.Fatalf("%d aliases within a budget of 3 entries", n)
		}
		if held, budget := c.outAlias.Bytes(); held > budget {
			t.Fatalf("table holds %d bytes, budget %d", held, budget)
		}
		for i, p := range decodeOut(t, c) {
			if p.Props.TopicAlias == 0 || p.Props.TopicAlias > 3 || len(p.Topic) == 0 {
				t.Fatalf("PUBLISH %d: alias %d topic %q", i, p.Props.TopicAlias, p.Topic)
			}
		}
		_, budget := c.outAlias.Bytes()
		huge := strings.Repeat("x", budget)
		send(c, huge)
		if p := decodeOut(t, c)[0]; p.Props.Has(mqttcodec.PropTopicAlias) {
			t.Fatal("a topic larger than the budget got an alias")
		}
	})
	t.Run("short-topic-not-aliased", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 10)
		send(c, "a/b")
		send(c, "a/b")
		for _, p := range decodeOut(t, c) {
			if p.Props.Has(mqttcodec.PropTopicAlias) {
				t.Fatal("3-byte topic aliased")
			}
		}
	})
	t.Run("MQTT-3.1.2-25/too-large-leaves-table", func(t *testing.T) {
		c := aliasTestConn(mqttcodec.Version5, 10)
		c.clientMaxPacket = 40
		d := delivery{msg: &kafkamux.Message{Topic: long, Payload: []byte("x")}}
		if c.writePublish(&d, 0, false, now) {
			t.Fatal("PUBLISH above the client's Maximum Packet Size written")
		}
		if c.outAlias.Len() != 0 {
			t.Fatal("a PUBLISH that was not sent defined an alias")
		}
	})
}

// Steady state: once the table exists, a delivery with an alias allocates nothing, hit or replacement.
func TestOutAliasAllocs(t *testing.T) {
	c := aliasTestConn(mqttcodec.Version5, 4)
	now := time.Now()
	var ds []delivery
	for i := range 8 {
		ds = append(ds, delivery{msg: &kafkamux.Message{Topic: "place/1/device/" + strconv.Itoa(i) + "/telemetry", Payload: []byte("x")}})
	}
	c.l.out = make([]byte, 0, 4096)
	i := 0
	step := func() {
		c.writePublish(&ds[i%len(ds)], 0, false, now)
		i++
		c.l.out = c.l.out[:0]
	}
	for range 16 {
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("%v allocations per aliased delivery", n)
	}
}
