package server

import (
	"strings"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/server/share"
)

// Shared subscriptions, "$share/{ShareName}/{filter}" [MQTT 5.0 §4.8.2]: the MQTT side. The share groups,
// their Kafka consumer or share groups and their commits are package server/share's (its doc says how a
// record reaches exactly one member); here are SUBSCRIBE, the session as a share.Member, and the
// server as the share.Host the groups ask about topics, routing, read positions and payloads.

// Share sets the shared subscriptions' options (server/share: Enabled, MaxGroups, GroupPrefix, Timings,
// Mode, DeliveryLimit, Hold), checked by CheckOptions and New. Default: share's defaults (on, 100 groups,
// mode auto).
func Share(opts ...share.Opt) Opt { return opt(func(c *cfg) { c.share = append(c.share, opts...) }) }

// ShareStats describes this instance's shared subscriptions.
type ShareStats = share.Stats

// ShareStats returns the state of this instance's shared subscriptions.
func (srv *Server) ShareStats() ShareStats { return srv.shares.Stats() }

// resolveShareMode decides, once at Start, which mode serves shared subscriptions, and says so in one log
// line. Runs before the listeners open.
func (srv *Server) resolveShareMode() {
	mode, why := srv.shares.ResolveMode()
	if srv.shares.Enabled() {
		srv.cfg.log.Info("shared subscriptions", "mode", mode, "why", why)
	}
}

// subscribeShared handles one "$share/…" filter of a SUBSCRIBE. Runs on the loop. It returns the SUBACK
// reason.
func (c *conn) subscribeShared(s *mqttcodec.Subscription, subID uint32) mqttcodec.ReasonCode {
	srv, sess := c.l.srv, c.sess
	if !srv.shares.Enabled() {
		return mqttcodec.SharedSubscriptionsNotSupported
	}
	_, inner, _, err := mqttcodec.ParseShared(s.Filter)
	if err != nil {
		return mqttcodec.TopicFilterInvalid // the decoder already checks; kept for a direct caller
	}
	if c.auth != nil && !c.maySubscribe(inner) {
		return mqttcodec.NotAuthorized // the privilege is on the filter, not on the share name (authz.go)
	}
	granted := min(s.QoS, srv.cfg.maxQoS) // [MQTT-3.8.4-6]
	key := string(s.Filter)
	sess.mu.Lock()
	_, had := sess.subs[key]
	full := !had && len(sess.subs) >= srv.cfg.maxSubs
	sess.mu.Unlock()
	if full {
		srv.metrics.refusedSubs.Add(1)
		return mqttcodec.QuotaExceeded
	}
	o := subOpts{qos: granted, retainAsPub: s.RetainAsPublished, retainHandling: s.RetainHandling, subID: subID}
	if !srv.shares.Join(key, string(inner), sess, shareOpts(o)) {
		srv.metrics.refusedSubs.Add(1)
		srv.warn("refusing a shared subscription: too many share groups (--max-share-groups)", "filter", key)
		return mqttcodec.QuotaExceeded
	}
	sess.mu.Lock()
	if sess.subs == nil {
		sess.subs = make(map[string]subOpts)
	}
	sess.subs[key] = o
	sess.mu.Unlock()
	if !had {
		srv.metrics.subscriptions.Add(1)
	}
	// No retained messages for a shared subscription (§3.3.1.3: only a new non-shared one gets them).
	return mqttcodec.ReasonCode(granted)
}

// shareOpts are the options of a shared subscription that shape what its member receives.
func shareOpts(o subOpts) share.Opts {
	return share.Opts{QoS: o.qos, RetainAsPublished: o.retainAsPub, SubID: o.subID}
}

// isShared reports whether a stored subscription string is a shared subscription.
func isShared(filter string) bool { return strings.HasPrefix(filter, "$share/") }

// leaveShare removes s from the share group key (UNSUBSCRIBE). It reports whether s was a member.
func (srv *Server) leaveShare(key string, s *session) bool { return srv.shares.Leave(key, s) }

// leaveShares removes s from every share group it is a member of: its session ends on this instance or its
// connection closed. Runs before the session's queue and packet-id state are dropped.
func (srv *Server) leaveShares(s *session, subs map[string]subOpts) {
	for f := range subs {
		if isShared(f) {
			srv.shares.Leave(f, s)
		}
	}
}

// resumeShares makes a restored session a member of its stored shared subscriptions. Runs on the loop.
func (srv *Server) resumeShares(s *session) {
	s.mu.Lock()
	var shared []string
	var opts []subOpts
	for f, o := range s.subs {
		if isShared(f) {
			shared = append(shared, f)
			opts = append(opts, o)
		}
	}
	s.mu.Unlock()
	for i, f := range shared {
		_, inner, _, err := mqttcodec.ParseShared(bytesOf(f))
		if err != nil || !srv.shares.Enabled() || !srv.shares.Join(f, string(inner), s, shareOpts(opts[i])) {
			srv.warn("cannot resume a shared subscription", "client", s.id, "filter", f)
		}
	}
}

// shareDone is called when a delivery leaves a session without being sent (expired, too large, not
// authorized): for the group it is completed. s.mu is held.
func (d *delivery) shareDone() {
	if d.share != nil && d.qos > 0 {
		d.share.Completed(d.topic, d.part, d.off)
	}
}

// The session as a member of share groups (share.Member).

// Room reports whether s is online with fewer queued and unacknowledged messages than its window (the
// client's Receive Maximum, at most share.MaxInFlight) plus queued, and a queue below --session-queue.
func (s *session) Room(queued int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	return c != nil && !s.ended && s.queue.len() < c.l.srv.cfg.sessionQueue &&
		s.queue.len()+s.pendingOut() < min(int(c.clientRecvMax), share.MaxInFlight)+queued
}

// Push queues d, delivered for g, and wakes the connection. It reports false if s is offline.
func (s *session) Push(g *share.Group, d share.Delivery) bool {
	s.mu.Lock()
	c := s.c
	if c == nil || s.ended {
		s.mu.Unlock()
		return false
	}
	s.queue.push(delivery{msg: d.Msg, qos: d.QoS, retain: d.Retain, topic: d.Topic, part: d.Part, off: d.Off, subIDs: d.SubIDs, share: g})
	s.mu.Unlock()
	c.l.notify(c)
	return true
}

// Take removes the session's queued messages of group g and its unacknowledged ones (PUBLISH sent, no
// PUBACK/PUBREC yet), appending them to dst for another member. Messages past PUBREC stay: the client has
// them.
func (s *session) Take(g *share.Group, dst []share.Delivery) []share.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := func(d *delivery) share.Delivery {
		return share.Delivery{Msg: d.msg, QoS: d.qos, Retain: d.retain, Topic: d.topic, Part: d.part, Off: d.off, SubIDs: d.subIDs}
	}
	if s.fl != nil {
		f := s.fl
		for i := f.head; i < len(f.out); i++ {
			e := &f.out[i]
			if e.state == outPublished && e.d.share == g {
				dst = append(dst, out(&e.d))
				f.drop(e) // not acked: the group is not told it completed (flight.ack would)
			}
		}
		f.compact()
	}
	if n := s.queue.len(); n > 0 {
		var keep ring
		for i := 0; i < n; i++ {
			d := s.queue.at(i)
			if d.share == g {
				dst = append(dst, out(d))
			} else {
				keep.push(*d)
			}
		}
		s.queue.clear()
		s.queue = keep
	}
	return dst
}

// shareHost is the server as the share groups see it (share.Host).
type shareHost struct{ srv *Server }

// TopicIndex returns the index (routing.go) of a Kafka topic a share group reads: 0 for the messages topic.
func (h shareHost) TopicIndex(name string) (uint16, bool) {
	if h.srv.rt == nil || name == h.srv.kafka.MessagesTopic() {
		return 0, true
	}
	return h.srv.topicIndex(name)
}

// TopicName returns the Kafka topic of index t.
func (h shareHost) TopicName(t uint16) string {
	if t == 0 {
		return h.srv.kafka.MessagesTopic()
	}
	return h.srv.rt.topics.Name(t)
}

// RoutesTo reports whether a message of MQTT topic mqttTopic belongs in Kafka topic t: as the shared reader
// (deliverRecord), a record that does not is skipped (the shared reader counts it).
func (h shareHost) RoutesTo(mqttTopic string, t uint16) bool {
	return h.srv.rt == nil || h.srv.rt.tbl.RoutesTo(mqttTopic, h.srv.rt.topics.Name(t))
}

// Topics returns the routed Kafka topics this instance follows that a shared subscription to filter reads
// (route.Table.MayHold), for a new share group; none without route rules.
func (h shareHost) Topics(filter string) []string {
	if h.srv.rt == nil {
		return nil
	}
	return h.srv.rt.topics.ReadyFor(filter)
}

// MayHold reports whether the routed Kafka topic name may hold messages matching filter.
func (h shareHost) MayHold(filter, name string) bool { return h.srv.rt.tbl.MayHold(filter, name) }

// ReadFrom returns where the shared reader is now in the Kafka topics of the given indexes.
func (h shareHost) ReadFrom(topics map[uint16]bool) kafkamux.TopicOffsets {
	srv := h.srv
	srv.matchMu.Lock()
	defer srv.matchMu.Unlock()
	begin := make(kafkamux.TopicOffsets)
	for k, off := range srv.readPos {
		if topics[k.t] {
			name := h.TopicName(k.t)
			if begin[name] == nil {
				begin[name] = make(map[int32]int64)
			}
			begin[name][k.p] = off
		}
	}
	return begin
}

// Convert turns a record into what subscribers receive under --payload deliver=json (contract.go), as
// deliverRecord does for the other subscriptions.
func (h shareHost) Convert(m *kafkamux.Message) *kafkamux.Message {
	if h.srv.cfg.payload == nil {
		return m
	}
	return h.srv.held.JSONWait(m)
}

func (h shareHost) Stopping() bool                { return h.srv.metrics.stopping.Load() }
func (h shareHost) Warn(msg string, args ...any)  { h.srv.warn(msg, args...) }
func (h shareHost) Debug(msg string, args ...any) { h.srv.debug(msg, args...) }
