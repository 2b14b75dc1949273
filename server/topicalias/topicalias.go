// Package topicalias is a connection's table of outbound topic aliases (MQTT 5 §3.3.2.3.4): a v5 client that
// announces Topic Alias Maximum > 0 in CONNECT gets repeated topic names replaced by a two-byte alias in the
// PUBLISHes Ferry sends it. The first PUBLISH on a topic carries the topic and a new alias; later ones carry
// an empty topic and the alias only.
//
// The table is per connection (the server's conn.outAlias), owned by the connection's event loop, never
// shared: aliases are a property of one network connection and are gone with it [MQTT-3.3.2-7] (a
// reconnecting client starts with an empty table). It is allocated on the first PUBLISH that uses it, so an idle connection pays one nil
// pointer. It is bounded twice:
//
//   - entries: min(client's Topic Alias Maximum, OutboundTopicAliases) — never an alias above the client's
//     maximum [MQTT-3.3.2-11] [MQTT-3.1.2-26], none at all for a client that announced 0 or none, or for a
//     v3 client [MQTT-3.1.2-27];
//   - bytes: every entry costs EntryCost plus its topic's length (the string is shared with the record it
//     came from, but the table may keep it alive), at most OutboundTopicAliasBytes per connection.
//
// Replacement policy: least recently used. A topic not in the table takes a free alias, or, when the table
// is full (entries or bytes), the alias of the entry used longest ago, which the PUBLISH redefines by carrying
// the topic again [MQTT-3.3.2-12 as seen by the client]. Topics shorter than MinTopic are never aliased: the
// alias property (3 bytes) would save nothing.
//
// Lookups scan the table (it is small: 16 entries by default), comparing the topics' lengths and last bytes
// first; nothing allocates once the table exists (the server's TestOutAliasAllocs).
package topicalias

// EntryCost is what an entry costs beyond its topic's bytes: the entry itself (string header, tail,
// clock).
const EntryCost = 32

// MinTopic is the shortest topic worth an alias.
const MinTopic = 4

type entry struct {
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

// Out is one connection's outbound alias table. The alias of ents[i] is i+1. Not safe for concurrent use:
// the connection's event loop owns it.
type Out struct {
	ents   []entry // len = the number of aliases handed out so far, cap = the bound in entries
	bytes  int     // EntryCost × len(ents) + the bytes of their topics
	budget int     // bytes the table may hold (the server's OutboundTopicAliasBytes)
	clock  uint32
}

// NewOut returns a table of at most max aliases and budget bytes.
func NewOut(max, budget int) *Out {
	return &Out{ents: make([]entry, 0, max), budget: budget}
}

// Lookup returns the alias to send topic with and whether the client already knows it (send an empty
// topic). alias 0: send the topic without an alias. The choice is not recorded until Commit, so a PUBLISH
// that is finally not sent (too large) leaves the table as it was.
func (a *Out) Lookup(topic string) (alias uint16, known bool) {
	tail := topicTail(topic)
	for i := range a.ents {
		e := &a.ents[i]
		if e.tail == tail && e.topic == topic {
			return uint16(i + 1), true
		}
	}
	cost := EntryCost + len(topic)
	if len(topic) < MinTopic || cost > a.budget {
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

// Commit records that a PUBLISH with topic and alias (from Lookup) was written.
func (a *Out) Commit(topic string, alias uint16, known bool) {
	a.clock++
	i := int(alias) - 1
	if known {
		a.ents[i].used = a.clock
		return
	}
	if i == len(a.ents) {
		a.ents = a.ents[:i+1]
		a.bytes += EntryCost
	} else {
		a.bytes -= len(a.ents[i].topic)
	}
	a.ents[i] = entry{topic: topic, tail: topicTail(topic), used: a.clock}
	a.bytes += len(topic)
}

// Len returns the number of aliases handed out.
func (a *Out) Len() int { return len(a.ents) }

// Bytes returns what the table holds, by the measure of its budget, and that budget.
func (a *Out) Bytes() (held, budget int) { return a.bytes, a.budget }
