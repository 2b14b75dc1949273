package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
// Topics: fixed rule topics must exist (or are created) when Start runs. Templated ones are created on first
// use when topic creation is on, by a goroutine (the loop never waits for Kafka admin): the first records
// are produced at once and wait in franz-go for the topic's metadata (bounded by its unknown-topic retries and
// the record delivery timeout). With creation off, a publish to a templated topic that does not exist yet is
// refused until discovery finds it. At most maxRoutedTopics routed topics are known per instance: clients
// choose the captures, so a fleet cannot create topics without bound through one instance.
//
// Reading: every instance follows every routed topic with the shared reader: fixed ones and templated ones
// that exist at Start from their end (as the messages topic), templated ones found later (listed every
// discoverEvery and right after this instance created one) from their start. A record is delivered only if
// its MQTT topic routes to the Kafka topic it was read from (route.Table.RoutesTo; unrouted topics belong in
// the messages topic); others are skipped and counted (ferry_route_misrouted_total). So a subscription
// receives from every Kafka topic whose rules can match its filter, and nothing twice.
//
// Persistent sessions: delivery positions are per (Kafka topic, partition): tp below; see persist.go and
// docs/sessions.md. Shared subscriptions read, through their Kafka consumer groups, the same Kafka topics a
// subscription to their filter receives from, and skip misrouted records the same way (share.go).

// tp is a position key: a Kafka topic (index into routing names; 0 = the messages topic) and partition.
type tp struct {
	t uint16
	p int32
}

const (
	discoverEvery   = 10 * time.Second
	maxRoutedTopics = 10000
)

// Reasons a publish is refused by routing, for ferry_route_refused_total{reason}.
const (
	routeUnrouted = iota // no rule matches, --route-unrouted=refuse
	routeIllegal         // the rule builds an illegal Kafka topic name
	routeMissing         // the Kafka topic does not exist and cannot be created (or the limit is reached)
	routeReasons
)

// RouteRefusedNames are the label values of routing refusals, by index.
var RouteRefusedNames = [routeReasons]string{"unrouted", "illegal_topic", "topic_missing"}

var routeWhy = [routeReasons]string{"no route for topic", "routed Kafka topic name is not legal", "routed Kafka topic does not exist"}

// Routes sets the route rules, in order (FILTER>KAFKA_TOPIC[@{capture}], see server/route), and whether
// publishes no rule matches are refused (true) or go to the messages topic (false, the default). Default: no
// rules.
func Routes(rules []string, refuseUnrouted bool) Opt {
	return opt(func(c *cfg) { c.routes, c.refuseUnrouted = rules, refuseUnrouted })
}

// topic states in routing.state
const (
	topicReady uint32 = iota
	topicCreating
	topicMissing
	topicCreated // created by this instance, not followed yet
)

type routing struct {
	tbl            *route.Table
	retained, sess string // Ferry's own topics: never a route's destination
	mu             sync.Mutex
	names          atomic.Pointer[[]string] // index → Kafka topic; [0] is the messages topic; copy on write under mu
	index          map[string]uint16        // under mu
	state          sync.Map                 // Kafka topic name → topic state (uint32)
	known          atomic.Int32             // entries in state
	discoverMu     sync.Mutex               // one discovery at a time
	discoverNow    chan struct{}
	ctx            context.Context // canceled by Stop
	cancel         context.CancelFunc
	creatable      bool
}

func newRouting(c *cfg, retained, sessions string, creatable bool) (*routing, error) {
	tbl, err := route.NewTable(c.routes, c.messagesTopic, c.refuseUnrouted)
	if err != nil {
		return nil, err
	}
	rt := &routing{tbl: tbl, retained: retained, sess: sessions, index: map[string]uint16{c.messagesTopic: 0},
		discoverNow: make(chan struct{}, 1), creatable: creatable}
	for _, r := range tbl.Rules() {
		if f, ok := r.Fixed(); ok && (f == retained || f == sessions) {
			return nil, fmt.Errorf("route %q: %q is Ferry's retained or sessions topic", r.Spec, f)
		}
	}
	names := []string{c.messagesTopic}
	rt.names.Store(&names)
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	return rt, nil
}

// name returns the Kafka topic of index t.
func (rt *routing) name(t uint16) string { return (*rt.names.Load())[t] }

// topicName returns the Kafka topic of index t ("" for the messages topic, as the sessions topic stores it).
func (srv *Server) routedName(t uint16) string {
	if t == 0 || srv.rt == nil {
		return ""
	}
	return srv.rt.name(t)
}

// topicIndex returns the index of a routed topic this instance follows.
func (srv *Server) topicIndex(name string) (uint16, bool) {
	if name == "" {
		return 0, true
	}
	if srv.rt == nil {
		return 0, false
	}
	srv.rt.mu.Lock()
	defer srv.rt.mu.Unlock()
	t, ok := srv.rt.index[name]
	return t, ok
}

// register gives a Kafka topic an index. It reports false when the index space is full.
func (rt *routing) register(name string) (uint16, bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if t, ok := rt.index[name]; ok {
		return t, true
	}
	names := *rt.names.Load()
	if len(names) > maxRoutedTopics {
		return 0, false
	}
	next := append(slices.Clip(names), name)
	t := uint16(len(names))
	rt.index[name] = t
	rt.names.Store(&next)
	return t, true
}

// ownTopic reports whether name is one of Ferry's compacted topics, which no route may write to.
func (rt *routing) ownTopic(name string) bool { return name == rt.retained || name == rt.sess }

// routeFor decides where a message to topic goes. It runs on a loop (or, for a will, any goroutine) and never
// blocks; it may start a goroutine that creates the Kafka topic. reason is valid when ok is false.
func (srv *Server) routeFor(topic string) (r offload.Route, reason int, ok bool) {
	rt := srv.rt
	res, err := rt.tbl.Route(topic)
	switch {
	case errors.Is(err, route.ErrUnrouted):
		return r, routeUnrouted, false
	case err != nil:
		return r, routeIllegal, false
	}
	r = offload.Route{KeyFrom: res.KeyFrom, KeyTo: res.KeyTo, HasKey: res.HasKey}
	if res.Rule < 0 || res.Topic == srv.cfg.messagesTopic {
		return r, 0, true // Topic "" = the messages topic
	}
	if rt.ownTopic(res.Topic) {
		return r, routeIllegal, false
	}
	r.Topic = res.Topic
	v, found := rt.state.Load(res.Topic)
	if !found {
		if !rt.creatable || rt.known.Load() >= maxRoutedTopics {
			return r, routeMissing, false // discovery marks it ready once it exists
		}
		if v, found = rt.state.LoadOrStore(res.Topic, topicCreating); !found {
			rt.known.Add(1)
			go srv.createRouted(res.Topic)
			return r, 0, true
		}
	}
	if v.(uint32) == topicMissing {
		return r, routeMissing, false
	}
	return r, 0, true // ready, or being created: franz-go holds the records until the topic's metadata shows
}

// createRouted creates a routed topic on first use and has discovery follow it. Runs on its own goroutine.
func (srv *Server) createRouted(name string) {
	rt := srv.rt
	ctx, cancel := context.WithTimeout(rt.ctx, 30*time.Second)
	err := srv.kafka.CreateTopic(ctx, name)
	cancel()
	if err != nil {
		rt.state.Store(name, topicMissing) // discovery forgets it, so a later publish tries again
		srv.warn("cannot create routed Kafka topic; its publishes are refused", "topic", name, "err", err)
		return
	}
	rt.state.CompareAndSwap(name, topicCreating, topicCreated)
	select {
	case rt.discoverNow <- struct{}{}:
	default:
	}
}

// routedFollowSpecs ensures the fixed routed topics exist and lists the templated ones, and returns the
// follow specs of all of them, read from their end, for Start's FollowAll.
func (srv *Server) routedFollowSpecs() ([]kafkamux.FollowSpec, error) {
	rt := srv.rt
	ctx, cancel := context.WithTimeout(rt.ctx, 60*time.Second)
	defer cancel()
	have, err := srv.kafka.ListTopicNames(ctx)
	if err != nil {
		return nil, err
	}
	var follow []string
	for _, f := range rt.tbl.FixedTopics() {
		if f == srv.cfg.messagesTopic {
			continue
		}
		if !slices.Contains(have, f) {
			if err := srv.kafka.CreateTopic(ctx, f); err != nil {
				return nil, fmt.Errorf("routed Kafka topic %q does not exist: %w", f, err)
			}
		}
		follow = append(follow, f)
	}
	for _, n := range have {
		if srv.routedTemplate(n) && !slices.Contains(follow, n) {
			follow = append(follow, n)
		}
	}
	specs := make([]kafkamux.FollowSpec, 0, len(follow))
	for _, n := range follow {
		spec, ok := srv.routedSpec(n, kafkamux.FromEnd)
		if !ok {
			srv.cfg.log.Warn("too many routed Kafka topics; not following", "topic", n, "limit", maxRoutedTopics)
			continue
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// routedTemplate reports whether a listed Kafka topic is one a templated rule could write.
func (srv *Server) routedTemplate(name string) bool {
	if name == srv.cfg.messagesTopic || srv.rt.ownTopic(name) {
		return false
	}
	for _, r := range srv.rt.tbl.Templated() {
		if r.MatchesTemplate(name) {
			return true
		}
	}
	return false
}

// routedSpec registers a routed topic and returns its follow spec. The topic is ready for publishes once it is
// followed (state is set by the caller after FollowAll).
func (srv *Server) routedSpec(name string, start kafkamux.Start) (kafkamux.FollowSpec, bool) {
	t, ok := srv.rt.register(name)
	if !ok {
		return kafkamux.FollowSpec{}, false
	}
	return kafkamux.FollowSpec{Topic: name, Start: start,
		Handler: func(p int32, off int64, m *kafkamux.Message) { srv.deliverRecord(t, p, off, m) },
		Started: func(begin map[int32]int64) { srv.initTopicPos(t, begin) }}, true
}

// markReady records that the routed topics are followed and take publishes.
func (rt *routing) markReady(specs []kafkamux.FollowSpec) {
	for _, sp := range specs {
		if _, loaded := rt.state.Swap(sp.Topic, topicReady); !loaded {
			rt.known.Add(1)
		}
	}
}

// discoverLoop follows templated routed topics as they appear. Runs on its own goroutine until Stop.
func (srv *Server) discoverLoop() {
	rt := srv.rt
	t := time.NewTimer(discoverEvery)
	defer t.Stop()
	for {
		select {
		case <-rt.ctx.Done():
			return
		case <-t.C:
		case <-rt.discoverNow:
		}
		// The topic list comes from metadata, which the client may serve from a cache younger than its
		// metadata min age (500 ms): a topic just created may be missing, so look again soon.
		next := discoverEvery
		if srv.discover() {
			next = 300 * time.Millisecond
		}
		t.Stop()
		t.Reset(next)
	}
}

// discover lists the cluster's topics and follows, from their start, templated routed topics not followed yet.
// Topics whose creation failed are forgotten, so the next publish tries again. It reports whether a topic this
// instance created is still not followed.
func (srv *Server) discover() (pending bool) {
	rt := srv.rt
	rt.discoverMu.Lock()
	defer rt.discoverMu.Unlock()
	ctx, cancel := context.WithTimeout(rt.ctx, discoverEvery)
	have, err := srv.kafka.ListTopicNames(ctx)
	cancel()
	if err != nil {
		if rt.ctx.Err() == nil {
			srv.warn("cannot list Kafka topics to find routed ones", "err", err)
		}
		return true
	}
	var specs []kafkamux.FollowSpec
	for _, n := range have {
		if v, ok := rt.state.Load(n); ok && v.(uint32) == topicReady {
			continue
		}
		if !srv.routedTemplate(n) {
			continue
		}
		if spec, ok := srv.routedSpec(n, kafkamux.FromStart); ok {
			specs = append(specs, spec)
		}
	}
	if len(specs) > 0 {
		if err := srv.kafka.FollowAll(specs...); err != nil {
			srv.warn("cannot follow routed Kafka topics; retrying", "err", err)
			return true
		}
		rt.markReady(specs)
		names := make([]string, len(specs))
		for i, sp := range specs {
			srv.cfg.log.Info("following routed Kafka topic", "topic", sp.Topic)
			names[i] = sp.Topic
		}
		srv.shareAddTopics(names) // share.go: the share groups whose filters need them read them too
	}
	rt.state.Range(func(k, v any) bool {
		switch v.(uint32) {
		case topicMissing:
			if rt.state.CompareAndDelete(k, v) {
				rt.known.Add(-1)
			}
		case topicCreated:
			pending = true
		}
		return true
	})
	return pending
}

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
	return c.refusePublish(p, mqttcodec.TopicNameInvalid, routeWhy[reason])
}
