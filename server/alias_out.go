package server

import (
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/topicalias"
)

// Outbound topic aliases: a v5 client that announces Topic Alias Maximum > 0 in CONNECT gets repeated topic
// names replaced by a two-byte alias in the PUBLISHes Ferry sends it. The table, its bounds and its
// replacement policy are server/topicalias's; here it is created for a connection and put on a PUBLISH.

// setOutAlias puts an outbound topic alias on p (whose Topic is m's topic) if the client takes aliases, and
// returns what the table's Commit needs once the PUBLISH is written (deliver.go). Runs on the loop.
func (c *conn) setOutAlias(p *mqttcodec.Publish, topic string) (alias uint16, known bool) {
	if c.clientAliasMax == 0 || c.version < mqttcodec.Version5 { // [MQTT-3.1.2-27]
		return 0, false
	}
	cfg := &c.l.srv.cfg
	if c.outAlias == nil {
		n := min(int(c.clientAliasMax), cfg.outAliasMax) // [MQTT-3.3.2-11]
		if n == 0 || cfg.outAliasBytes < topicalias.EntryCost+topicalias.MinTopic {
			return 0, false
		}
		c.outAlias = topicalias.NewOut(n, cfg.outAliasBytes)
	}
	alias, known = c.outAlias.Lookup(topic)
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
