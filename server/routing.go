package server

import (
	"log/slog"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server/route"
)

// Topic routing (--route): ordered rules send an MQTT topic's messages to a Kafka topic of their own instead of
// the messages topic (server/route compiles and matches them). Without rules srv.rt is nil and every path below
// costs one nil check.
//
// Publish (onPublish, sendWillWith; on the loop): the first matching rule picks the Kafka topic and, optionally,
// a partition key (a capture, carried in the kafkamux.HeaderPartitionKey header); the record key stays the
// MQTT topic (data model v1). A retained copy still goes to the retained topic. Refusals answer v5 QoS 1/2
// with PUBACK/PUBREC 0x90 Topic Name Invalid ("the Topic Name is not malformed, but is not accepted by this
// Server"), with a reason string saying why: no rule matches and --route-unrouted=refuse; the rule builds an
// illegal Kafka name from the topic (or one of Ferry's own compacted topics); or the Kafka topic does not
// exist and cannot be created. 0x87 Not Authorized was the other candidate, but the refusal is about the
// topic, whoever publishes it. QoS 0 and v3 publishes are dropped and counted, the v3 ones acknowledged
// positively as for an authorization denial (authz.go explains why not closing).
//
// Topics: which Kafka topics the rules write to, their creation on first use and the discovery of templated
// ones that appear later are route.Topics' (server/route/topics.go); the server follows what it finds.
//
// Reading: every instance follows every routed topic with the shared reader: fixed ones and templated ones
// that exist at Start from their end (as the messages topic), templated ones found later (listed every
// route.DiscoverEvery and right after this instance created one) from their start. A record is delivered only if
// its MQTT topic routes to the Kafka topic it was read from (route.Table.RoutesTo; unrouted topics belong in
// the messages topic); others are skipped and counted (ferry_route_misrouted_total). So a subscription
// receives from every Kafka topic whose rules can match its filter, and nothing twice.
//
// Persistent sessions: delivery positions are per (Kafka topic, partition): tp below; see persist.go and
// docs/sessions.md. Shared subscriptions read, through their Kafka consumer groups, the same Kafka topics a
// subscription to their filter receives from, and skip misrouted records the same way (share.go).

// tp is a position key: a Kafka topic (its route.Topics index; 0 = the messages topic) and partition.
type tp struct {
	t uint16
	p int32
}

// RouteRefusedNames are the label values of routing refusals, by index.
var RouteRefusedNames = route.RefusalNames

// Routes sets the route rules, in order (FILTER>KAFKA_TOPIC[@{capture}], see server/route), and whether
// publishes no rule matches are refused (true) or go to the messages topic (false, the default). Default: no
// rules.
func Routes(rules []string, refuseUnrouted bool) Opt {
	return opt(func(c *cfg) { c.routes, c.refuseUnrouted = rules, refuseUnrouted })
}

// routing is the server's side of the route rules: their table, and the Kafka topics they write to.
type routing struct {
	tbl    *route.Table
	topics *route.Topics
}

func newRouting(srv *Server, c *cfg, kafka Kafka) (*routing, error) {
	tbl, err := route.NewTable(c.routes, c.messagesTopic, c.refuseUnrouted)
	if err != nil {
		return nil, err
	}
	topics, err := route.NewTopics(tbl, kafka.RetainedTopic(), kafka.SessionsTopic(), kafka.CreatesTopics(), kafka,
		routeHost{srv})
	if err != nil {
		return nil, err
	}
	return &routing{tbl: tbl, topics: topics}, nil
}

// routedName returns the Kafka topic of index t ("" for the messages topic, as the sessions topic stores it).
func (srv *Server) routedName(t uint16) string {
	if t == 0 || srv.rt == nil {
		return ""
	}
	return srv.rt.topics.Name(t)
}

// topicIndex returns the index of a routed topic this instance follows.
func (srv *Server) topicIndex(name string) (uint16, bool) {
	if name == "" {
		return 0, true
	}
	if srv.rt == nil {
		return 0, false
	}
	return srv.rt.topics.Index(name)
}

// routeFor decides where a message to topic goes. It runs on a loop (or, for a will, any goroutine) and never
// blocks. reason (route.Unrouted, Illegal or Missing) is valid when ok is false.
func (srv *Server) routeFor(topic string) (r offload.Route, reason int, ok bool) {
	res, reason, ok := srv.rt.topics.Route(topic)
	if !ok {
		return r, reason, false
	}
	return offload.Route{Topic: res.Topic, KeyFrom: res.KeyFrom, KeyTo: res.KeyTo, HasKey: res.HasKey}, 0, true
}

// routedFollow returns how the shared reader follows routed topics: from start, each record handed on with
// its topic's index.
func (srv *Server) routedFollow(topics []route.Topic, start kafkamux.Start) []kafkamux.FollowSpec {
	specs := make([]kafkamux.FollowSpec, len(topics))
	for i, rt := range topics {
		t := rt.Index
		specs[i] = kafkamux.FollowSpec{Topic: rt.Name, Start: start,
			Handler: func(p int32, off int64, m *kafkamux.Message) { srv.deliverRecord(t, p, off, m) },
			Started: func(begin map[int32]int64) { srv.initTopicPos(t, begin) }}
	}
	return specs
}

// routeHost is the server as route.Topics sees it.
type routeHost struct{ srv *Server }

func (h routeHost) Follow(found []route.Topic) error {
	return h.srv.kafka.FollowAll(h.srv.routedFollow(found, kafkamux.FromStart)...)
}

// Followed lets the share groups whose filters need the topics found read them too (server/share).
func (h routeHost) Followed(found []route.Topic) {
	names := make([]string, len(found))
	for i, t := range found {
		names[i] = t.Name
	}
	h.srv.shares.AddTopics(names)
}

func (h routeHost) Warn(msg string, args ...any) { h.srv.warn(msg, args...) }
func (h routeHost) Logger() *slog.Logger         { return h.srv.cfg.log }

// initTopicPos records where the shared reader starts in each partition of topic t, before any record of it
// is handed on. For a routed topic it is also where a resuming session whose stored offsets do not name the
// topic starts replaying it (persist.go): the topic appeared after that session's last save, as far as this
// instance knows.
func (srv *Server) initTopicPos(t uint16, begin map[int32]int64) {
	srv.matchMu.Lock()
	defer srv.matchMu.Unlock()
	for p, o := range begin {
		k := tp{t, p}
		if _, ok := srv.readPos[k]; !ok {
			srv.readPos[k] = o
		}
		if t != 0 {
			if srv.topicBegin == nil {
				srv.topicBegin = make(map[tp]int64)
			}
			srv.topicBegin[k] = o
		}
	}
}

// refusePublish answers a PUBLISH that is not taken (authorization or routing): QoS 0 is dropped; QoS 1/2 get
// reason (v5) or a positive ack (v3, [MQTT-3.3.5-2]), in the order of the PUBLISHes [MQTT-4.6.0-2].
func (c *conn) refusePublish(p *mqttcodec.Publish, reason mqttcodec.ReasonCode, why string) error {
	m := &c.l.srv.metrics
	if p.QoS == 0 || c.version < mqttcodec.Version5 {
		m.dropped(dropDenied) // the client is not told
	}
	if p.QoS == 0 {
		return nil
	}
	if c.toKafka() == 0 {
		c.writeDeniedAck(p.QoS, p.PacketID, reason, why)
		return nil
	}
	r := acquirePub()
	r.c, r.id, r.qos = c, p.PacketID, p.QoS
	r.deny, r.denyWhy = reason, why
	r.state.Store(reqDenied)
	c.pushPub(r)
	c.pauseIfFull()
	return nil
}

// refuseRoute refuses a PUBLISH routing does not take. Runs on the loop.
func (c *conn) refuseRoute(p *mqttcodec.Publish, reason int) error {
	c.l.srv.metrics.routeRefused[reason].Add(1)
	return c.refusePublish(p, mqttcodec.TopicNameInvalid, route.RefusalWhy[reason])
}
