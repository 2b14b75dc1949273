package server

import "github.com/ferrymq/ferry/mqttcodec"

// Outbound topic aliases (MQTT 5 §3.3.2.3.4): a v5 client that announces Topic Alias Maximum > 0 in CONNECT
// gets repeated topic names replaced by a two-byte alias in the PUBLISHes Ferry sends it. The first PUBLISH
// on a topic carries the topic and a new alias; later ones carry an empty topic and the alias only.
//
// The table is per connection (conn.outAlias), owned by the connection's event loop, never shared: aliases
// are a property of one network connection and are gone with it [MQTT-3.3.2-7] (a reconnecting client starts
// with an empty table). It is allocated on the first PUBLISH that uses it, so an idle connection pays one nil
// pointer. It is bounded twice:
//
//   - entries: min(client's Topic Alias Maximum, OutboundTopicAliases) — never an alias above the client's
//     maximum [MQTT-3.3.2-11] [MQTT-3.1.2-26], none at all for a client that announced 0 or none, or for a
//     v3 client [MQTT-3.1.2-27];
//   - bytes: every entry costs outAliasEntryCost plus its topic's length (the string is shared with the record
//     it came from, but the table may keep it alive), at most OutboundTopicAliasBytes per connection.
//
// Replacement policy: least recently used. A topic not in the table takes a free alias, or, when the table
// is full (entries or bytes), the alias of the entry used longest ago, which the PUBLISH redefines by carrying
// the topic again [MQTT-3.3.2-12 as seen by the client]. Topics shorter than outAliasMinTopic are never
// aliased: the alias property (3 bytes) would save nothing.
//
// Lookups scan the table (it is small: 16 entries by default), comparing the topics' lengths and last bytes
// first; nothing allocates
// once the table exists (TestOutAliasAllocs).

// outAliasEntryCost is what an entry costs beyond its topic's bytes: the entry itself (string header, tail,
// clock).
const outAliasEntryCost = 32

// outAliasMinTopic is the shortest topic worth an alias.
const outAliasMinTopic = 4

type outAlias struct {
	topic string // "" = free
	tail  uint64 // topicTail(topic): most topics that differ, differ in their last bytes
	used  uint32 // the table's clock at the last use
}

// topicTail packs the last (up to) 8 bytes of t with its length: a cheap first comparison.
func topicTail(t string) uint64 {
	var v uint64
	for i := max(0, len(t)-7); i < len(t); i++ {
		v = v<<8 | uint64(t[i])
	}
	return v<<8 ^ uint64(len(t))
}

// outAliases is one connection's outbound alias table. The alias of ents[i] is i+1.
type outAliases struct {
	ents   []outAlias // len = the number of aliases handed out so far, cap = the bound in entries
	bytes  int        // outAliasEntryCost × len(ents) + the bytes of their topics
	budget int        // OutboundTopicAliasBytes
	clock  uint32
}

func newOutAliases(max, budget int) *outAliases {
	return &outAliases{ents: make([]outAlias, 0, max), budget: budget}
}

// lookup returns the alias to send topic with and whether the client already knows it (send an empty
// topic). alias 0: send the topic without an alias. The choice is not recorded until commit, so a PUBLISH
// that is finally not sent (too large) leaves the table as it was.
func (a *outAliases) lookup(topic string) (alias uint16, known bool) {
	tail := topicTail(topic)
	for i := range a.ents {
		e := &a.ents[i]
		if e.tail == tail && e.topic == topic {
			return uint16(i + 1), true
		}
	}
	cost := outAliasEntryCost + len(topic)
	if len(topic) < outAliasMinTopic || cost > a.budget {
		return 0, false
	}
	if len(a.ents) < cap(a.ents) && a.bytes+cost <= a.budget {
		return uint16(len(a.ents) + 1), false // a free alias
	}
	// Full: the least recently used entry whose replacement keeps the table within its budget.
	victim := -1
	for i := range a.ents {
		e := &a.ents[i]
		if a.bytes-len(e.topic)+len(topic) > a.budget {
			continue
		}
		if victim < 0 || a.clock-e.used > a.clock-a.ents[victim].used {
			victim = i
		}
	}
	if victim < 0 {
		return 0, false
	}
	return uint16(victim + 1), false
}

// commit records that a PUBLISH with topic and alias (from lookup) was written.
func (a *outAliases) commit(topic string, alias uint16, known bool) {
	a.clock++
	i := int(alias) - 1
	if known {
		a.ents[i].used = a.clock
		return
	}
	if i == len(a.ents) {
		a.ents = a.ents[:i+1]
		a.bytes += outAliasEntryCost
	} else {
		a.bytes -= len(a.ents[i].topic)
	}
	a.ents[i] = outAlias{topic: topic, tail: topicTail(topic), used: a.clock}
	a.bytes += len(topic)
}

// setOutAlias puts an outbound topic alias on p (whose Topic is m's topic) if the client takes aliases, and
// returns what commitOutAlias needs once the PUBLISH is written. Runs on the loop.
func (c *conn) setOutAlias(p *mqttcodec.Publish, topic string) (alias uint16, known bool) {
	if c.clientAliasMax == 0 || c.version < mqttcodec.Version5 { // [MQTT-3.1.2-27]
		return 0, false
	}
	cfg := &c.l.srv.cfg
	if c.outAlias == nil {
		n := min(int(c.clientAliasMax), cfg.outAliasMax) // [MQTT-3.3.2-11]
		if n == 0 || cfg.outAliasBytes < outAliasEntryCost+outAliasMinTopic {
			return 0, false
		}
		c.outAlias = newOutAliases(n, cfg.outAliasBytes)
	}
	alias, known = c.outAlias.lookup(topic)
	if alias == 0 {
		return 0, false
	}
	if known {
		p.Topic = p.Topic[:0] // the client maps the alias back to the topic
	}
	p.Props.TopicAlias = alias
	p.Props.Set(mqttcodec.PropTopicAlias)
	return alias, known
}
