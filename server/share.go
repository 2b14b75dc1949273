package server

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// Shared subscriptions, "$share/{ShareName}/{filter}" [MQTT 5.0 §4.8.2], also accepted from v3.1.1 clients.
//
// A shared subscription is identified by its share name AND its filter, so a share group here is one
// (name, filter) pair, keyed by the subscribed string. Each record that matches the filter goes to exactly one
// member of the group, across all instances:
//
//   - Across instances, a Kafka consumer group per share group ("<prefix><name>/<filter>") splits the
//     partitions of the Kafka topics it reads between the instances that have online members. Each such
//     instance reads its partitions through the group's own franz-go client (kafkamux/group.go) — not through
//     the shared reader, so the trie and onRecord know nothing of shared subscriptions and the non-shared hot
//     path costs exactly what it did. Partitions are split in proportion to each instance's number of local
//     members (kafkamux's weighted balancer, topic by topic), so members, not instances, get equal shares — at
//     the granularity of partitions: the split is fair when the group's traffic is spread over the
//     partitions, and an instance gets nothing when there are fewer partitions than instances with members.
//   - The Kafka topics read are those a non-shared subscription to the filter receives from (routing.go): the
//     messages topic and every routed topic this instance follows that a rule able to match the filter can
//     produce (route.Table.MayHold) — fixed ones and templated ones found at start, and templated ones found
//     later, which discovery adds to every group concerned (addTopics) and which the group reads from their
//     start unless it committed offsets in them (a routed topic read since the group started on this
//     instance and without commits starts where the shared reader was then: GroupSpec.Begin). A record whose
//     MQTT topic does not route to the Kafka topic it is in is skipped, as the shared reader skips it
//     (counted there only). Without route rules the group reads the messages topic alone, as it always did.
//   - On one instance, each matching record goes to the next online member in round-robin order that has
//     room (queued + unacknowledged messages below its window, min(Receive Maximum, shareMaxInFlight), plus
//     shareMaxQueued): members that keep up get strictly equal shares, and one that falls behind is skipped
//     until it catches up. When all are full the group's reader waits: the group's backpressure, which slows
//     only the group's own Kafka consumer, never the shared reader. QoS is min(published, member's granted)
//     [MQTT-3.8.4-6].
//   - Offsets are committed only up to the first record not completed by a member (acknowledged: PUBACK for
//     QoS 1, PUBREC for QoS 2; QoS 0 on hand-off). A member that leaves (unsubscribes, disconnects, is taken
//     over) hands its queued and unacknowledged messages of the group to another local member, as new
//     messages (new packet id, DUP=0), which §4.8.2 allows once the member's session has ended; without a
//     local member left, the instance leaves the Kafka group and the next owner of the partitions starts at
//     the committed offset. A rebalance or a crash therefore re-delivers rather than loses: QoS 1 and 2
//     shared messages are delivered at least once overall. The balancer is eager (every rebalance revokes
//     every partition and the group re-reads from the committed offsets), rebalances wait for the batch in
//     hand (BlockRebalanceOnPoll), and a revocation waits up to revokeWait for the members to acknowledge
//     what they hold before committing: the duplicates of a rebalance are the messages not acknowledged in
//     time, plus — when an instance leaves or dies — those after the first one it had not completed.
//   - Retained messages are not sent when a shared subscription is made (§3.3.1.3 sends them for a new
//     non-shared subscription only); a message published with RETAIN reaches a member like any other.
//   - A persistent session keeps its shared subscriptions in its session record (the "$share/…" string);
//     it is a member only while connected: messages published while it is offline go to the online members,
//     and none are replayed to it on resume.
//
// Locks: shareRegistry.mu, then shareGroup.mu, then session.mu, then shareGroup.pmu (a leaf). The Kafka
// group's callbacks take shareGroup.mu and pmu, never the registry lock while holding them.

// shareCfg configures shared subscriptions.
type shareCfg struct {
	enabled     bool          // shared subscriptions are offered; default true
	maxGroups   int           // share groups this instance takes part in at once; default 100
	prefix      string        // Kafka consumer group id prefix; default "ferry-share-"
	heartbeat   time.Duration // Kafka group heartbeat; bounds how fast partitions move; default 1s
	commitEvery time.Duration // how often offsets are committed; default 1s
	revokeWait  time.Duration // how long a rebalance waits for acknowledgements before committing; default 2s

	mode          string        // ShareModeAuto, ShareModeShareGroup or ShareModeConsumerGroup (share_group.go); default auto
	deliveryLimit int           // share-group mode: deliveries before a record is rejected as poison; default 4
	hold          time.Duration // share-group mode: how long a record may wait for an acknowledgement; default 20s
}

func (c *shareCfg) defaults() {
	c.enabled = true
	c.maxGroups = 100
	c.prefix = "ferry-share-"
	c.heartbeat = time.Second
	c.commitEvery = time.Second
	c.revokeWait = 2 * time.Second
	c.mode = ShareModeAuto
	c.deliveryLimit = 4
	c.hold = 20 * time.Second
}

func (c *shareCfg) validate() error {
	switch {
	case c.maxGroups < 0:
		return fmt.Errorf("max share groups must not be negative, not %d", c.maxGroups)
	case c.prefix == "":
		return errors.New("the share group prefix must not be empty")
	case c.heartbeat <= 0 || c.commitEvery <= 0 || c.revokeWait < 0:
		return fmt.Errorf("share group timings %v, %v, %v: want positive heartbeat and commit intervals", c.heartbeat, c.commitEvery, c.revokeWait)
	}
	return c.validateMode() // share_group.go
}

// SharedSubscriptions turns shared subscriptions on or off. Default on; off, they are refused with 0x9E and
// CONNACK says Shared Subscription Available = 0.
func SharedSubscriptions(on bool) Opt { return opt(func(c *cfg) { c.share.enabled = on }) }

// MaxShareGroups caps the share groups (share name + filter) this instance takes part in at once; each costs
// a Kafka consumer group or share group member with its own franz-go client (up to 3 connections per broker
// in consumer-group mode; in share-group mode one per broker leading a partition it reads plus one to the
// coordinator, docs/operations.md). A SUBSCRIBE
// that would start one more is refused with 0x97 Quota Exceeded. Default 100.
func MaxShareGroups(n int) Opt { return opt(func(c *cfg) { c.share.maxGroups = n }) }

// ShareGroupPrefix is the prefix of the Kafka consumer group ids of share groups. Default "ferry-share-".
func ShareGroupPrefix(p string) Opt { return opt(func(c *cfg) { c.share.prefix = p }) }

// ShareTimings sets the Kafka group heartbeat of share groups (a rebalance starts within about one, the
// session timeout is ten), how often their offsets are committed, and how long a rebalance waits for
// acknowledgements. Defaults 1s, 1s, 2s.
func ShareTimings(heartbeat, commitEvery, revokeWait time.Duration) Opt {
	return opt(func(c *cfg) {
		c.share.heartbeat, c.share.commitEvery, c.share.revokeWait = heartbeat, commitEvery, revokeWait
	})
}

const (
	shareMaxInFlight = 256 // unacknowledged messages of one member counted against its window (≤ its Receive Maximum)
	shareMaxQueued   = 64  // messages queued for a member beyond its window before it counts as full
)

// shareRegistry holds this instance's share groups by subscribed string.
type shareRegistry struct {
	mu       sync.Mutex
	m        map[string]*shareGroup
	handoffs atomic.Uint64 // messages handed from a member that left to another one

	mode        string                    // the mode in use, decided at Start (share_group.go)
	closedStats kafkamux.ShareReaderStats // counters of share readers closed since start (share_group.go)
}

// ShareStats describes this instance's shared subscriptions.
type ShareStats struct {
	Groups           int    // share groups with local members
	Members          int    // local members, over all groups
	Partitions       int    // partitions (messages topic and routed topics) assigned to this instance, over all groups
	Handoffs         uint64 // messages handed from a member that left to another member, since start
	KafkaConnections int    // connections held by the share groups' Kafka clients

	Mode           string // ShareModeShareGroup or ShareModeConsumerGroup (share_group.go)
	PoisonRejected uint64 // share-group mode: records rejected after --share-delivery-limit deliveries, since start
	Released       uint64 // share-group mode: records released for another consumer (member left, or held too long)
	HeldTooLong    uint64 // share-group mode: of Released, those held past --share-hold
	AckErrors      uint64 // share-group mode: acknowledgements Kafka refused (those records are delivered again)
}

// ShareStats returns the state of this instance's shared subscriptions.
func (srv *Server) ShareStats() ShareStats {
	srv.shares.mu.Lock()
	st := ShareStats{Groups: len(srv.shares.m), Handoffs: srv.shares.handoffs.Load()}
	gs := make([]*shareGroup, 0, len(srv.shares.m))
	for _, g := range srv.shares.m {
		gs = append(gs, g)
	}
	srv.shares.mu.Unlock()
	for _, g := range gs {
		g.mu.Lock()
		st.Members += len(g.members)
		g.mu.Unlock()
		g.pmu.Lock()
		st.Partitions += len(g.parts)
		g.pmu.Unlock()
	}
	st.KafkaConnections = srv.kafka.GroupConnections()
	srv.shareGroupStats(&st, gs)
	return st
}

// shareGroup is one share group's local state.
type shareGroup struct {
	srv    *Server
	key    string // "$share/{name}/{filter}"
	filter string

	mu      sync.Mutex
	members []shareMember
	next    int                   // round-robin start
	orphans []delivery            // messages of members that left, waiting for a member with room
	reader  *kafkamux.GroupReader // nil until joined
	closed  bool                  // no local member any more: leaving the Kafka group
	routed  map[string]bool       // routed Kafka topics the group reads besides the messages topic
	sq      *shareQ               // share-group mode state (share_group.go); nil in consumer-group mode

	wake chan struct{} // capacity 1: a member acknowledged something or joined

	pmu      sync.Mutex
	parts    map[tp]*sharePart // partitions assigned to this instance, by Kafka topic index (routing.go)
	revoking map[tp]*sharePart // partitions being revoked, still counting acknowledgements
}

type shareMember struct {
	s *session
	o subOpts
}

// sharePart is the progress in one assigned partition (of the messages topic or a routed topic).
type sharePart struct {
	next int64              // first offset not yet read; -1 before the first record
	pend map[int64]struct{} // offsets handed to a member at QoS>0 and not yet acknowledged
}

// subscribeShared handles one "$share/…" filter of a SUBSCRIBE. Runs on the loop. It returns the SUBACK
// reason.
func (c *conn) subscribeShared(s *mqttcodec.Subscription, subID uint32) mqttcodec.ReasonCode {
	srv, sess := c.l.srv, c.sess
	if !srv.cfg.share.enabled {
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
	if !srv.joinShare(key, string(inner), sess, o) {
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

// isShared reports whether a stored subscription string is a shared subscription.
func isShared(filter string) bool { return strings.HasPrefix(filter, "$share/") }

// joinShare makes s a member of the share group key (filter is the part after the share name), creating
// the group and joining its Kafka consumer group if it is the first local member. It reports false when the
// group would exceed --max-share-groups. Runs on a loop.
func (srv *Server) joinShare(key, filter string, s *session, o subOpts) bool {
	r := &srv.shares
	r.mu.Lock()
	g := r.m[key]
	create := g == nil
	if create {
		if len(r.m) >= srv.cfg.share.maxGroups {
			r.mu.Unlock()
			return false
		}
		g = &shareGroup{srv: srv, key: key, filter: filter, wake: make(chan struct{}, 1), parts: make(map[tp]*sharePart)}
		if r.mode == ShareModeShareGroup {
			g.sq = &shareQ{held: make(map[shareKey]*kafkamux.ShareRecord)}
		}
		if r.m == nil {
			r.m = make(map[string]*shareGroup)
		}
		r.m[key] = g
	}
	g.mu.Lock()
	r.mu.Unlock()
	added := true
	for i := range g.members {
		if g.members[i].s == s {
			g.members[i].o = o // [MQTT-3.8.4-3] replaces the subscription
			added = false
		}
	}
	if added {
		g.members = append(g.members, shareMember{s: s, o: o})
	}
	reader := g.reader
	g.placeOrphansLocked()
	g.mu.Unlock()
	g.signal()
	switch {
	case create:
		// The routed topics are listed after the group is in the registry: a topic discovery makes ready
		// meanwhile is either listed here or added by discovery (shareAddTopics).
		routed := srv.shareTopics(filter)
		g.addTopics(routed)
		read := map[uint16]bool{0: true}
		for _, name := range routed {
			if t, ok := srv.kafkaTopicIndex(name); ok {
				read[t] = true
			}
		}
		srv.matchMu.Lock()
		begin := make(kafkamux.TopicOffsets)
		for k, off := range srv.readPos {
			if read[k.t] {
				name := srv.kafkaTopicName(k.t)
				if begin[name] == nil {
					begin[name] = make(map[int32]int64)
				}
				begin[name][k.p] = off // records from where the shared reader is now: as for a non-shared subscription
			}
		}
		srv.matchMu.Unlock()
		if g.sq != nil {
			go g.runShare(begin) // share_group.go
		} else {
			go g.run(begin)
		}
	case added && reader != nil:
		go reader.Rebalance() // this instance's weight changed
	}
	return true
}

// deliver hands the record to the least loaded member with room. It reports whether it did, and gone when
// the record is no longer this instance's to deliver (partition revoked, group closed).
func (g *shareGroup) deliver(part tp, off int64, m *kafkamux.Message) (delivered, gone bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || !g.owns(part) {
		return false, true
	}
	g.placeOrphansLocked()
	i := g.pickLocked()
	if i < 0 {
		return false, false
	}
	mem := &g.members[i]
	d := delivery{msg: m, qos: min(m.QoS, mem.o.qos), retain: m.Retain && mem.o.retainAsPub, topic: part.t, part: part.p, off: off, share: g}
	if mem.o.subID != 0 {
		d.subIDs = []uint32{mem.o.subID}
	}
	if !g.advance(part, off, d.qos > 0) {
		return false, true
	}
	if !g.pushLocked(mem.s, d) {
		// The member went offline after it was picked: the message waits for another.
		g.orphans = append(g.orphans, d)
	}
	return true, false
}

// pickLocked returns the index of the next online member, round robin, that has room: fewer queued and
// unacknowledged messages than its window (Receive Maximum, at most shareMaxInFlight) plus shareMaxQueued (none
// in share-group mode).
// Members that keep up take strict turns, so they get equal shares; one that falls behind is skipped until
// it catches up, so the others take its share. -1 if every member is full. g.mu is held; it takes each
// member's session lock in turn.
func (g *shareGroup) pickLocked() int {
	n := len(g.members)
	queued := shareMaxQueued
	if g.sq != nil {
		queued = 0 // share-group mode: a record queued for a member is locked from all others (share_group.go)
	}
	for k := 0; k < n; k++ {
		i := (g.next + k) % n
		s := g.members[i].s
		s.mu.Lock()
		c := s.c
		ok := c != nil && !s.ended && s.queue.len() < g.srv.cfg.sessionQueue &&
			s.queue.len()+s.pendingOut() < min(int(c.clientRecvMax), shareMaxInFlight)+queued
		s.mu.Unlock()
		if ok {
			g.next = i + 1
			return i
		}
	}
	return -1
}

// pushLocked queues d for s and wakes its connection. It reports false if s is offline. g.mu is held.
func (g *shareGroup) pushLocked(s *session, d delivery) bool {
	s.mu.Lock()
	c := s.c
	if c == nil || s.ended {
		s.mu.Unlock()
		return false
	}
	s.queue.push(d)
	s.mu.Unlock()
	c.l.notify(c)
	return true
}

// placeOrphansLocked hands the messages of members that left to members with room. g.mu is held.
func (g *shareGroup) placeOrphansLocked() {
	if g.sq != nil {
		g.releaseOrphansLocked() // share-group mode: the broker hands them to another consumer (share_group.go)
		return
	}
	for len(g.orphans) > 0 {
		d := g.orphans[0]
		if !g.owns(tp{d.topic, d.part}) {
			g.orphans[0] = delivery{}
			g.orphans = g.orphans[1:] // revoked: its next owner delivers it from the committed offset
			continue
		}
		i := g.pickLocked()
		if i < 0 {
			return
		}
		mem := &g.members[i]
		d.qos = min(d.msg.QoS, mem.o.qos)
		d.retain = d.msg.Retain && mem.o.retainAsPub
		d.subIDs = nil
		if mem.o.subID != 0 {
			d.subIDs = []uint32{mem.o.subID}
		}
		if d.qos == 0 {
			g.completed(tp{d.topic, d.part}, d.off) // at most once from here on
		}
		if !g.pushLocked(mem.s, d) {
			return
		}
		g.orphans[0] = delivery{}
		g.orphans = g.orphans[1:]
		g.srv.shares.handoffs.Add(1)
	}
	g.orphans = nil
}

// placeLater retries placing orphans until none is left or the group closes. Runs on its own goroutine.
func (g *shareGroup) placeLater() {
	for {
		time.Sleep(20 * time.Millisecond)
		g.mu.Lock()
		if !g.closed {
			g.placeOrphansLocked()
		}
		done := g.closed || len(g.orphans) == 0
		g.mu.Unlock()
		if done {
			return
		}
	}
}

// leaveShare removes s from the share group key (UNSUBSCRIBE). It reports whether s was a member.
func (srv *Server) leaveShare(key string, s *session) bool {
	srv.shares.mu.Lock()
	g := srv.shares.m[key]
	srv.shares.mu.Unlock()
	return g != nil && g.remove(s)
}

// leaveShares removes s from every share group it is a member of: its session ends on this instance or its
// connection closed. Runs before the session's queue and packet-id state are dropped.
func (srv *Server) leaveShares(s *session, subs map[string]subOpts) {
	for f := range subs {
		if isShared(f) {
			srv.leaveShare(f, s)
		}
	}
}

// remove takes s out of the group and hands its queued and unacknowledged messages of the group to the
// other members. When no member is left, the group leaves its Kafka consumer group; the messages s had not
// completed stay uncommitted, so the instance that takes the partitions over delivers them.
func (g *shareGroup) remove(s *session) bool {
	srv := g.srv
	srv.shares.mu.Lock()
	g.mu.Lock()
	idx := -1
	for i := range g.members {
		if g.members[i].s == s {
			idx = i
		}
	}
	if idx < 0 {
		g.mu.Unlock()
		srv.shares.mu.Unlock()
		return false
	}
	g.members = append(g.members[:idx], g.members[idx+1:]...)
	if g.next > idx {
		g.next--
	}
	last := len(g.members) == 0
	if last {
		g.closed = true
		if srv.shares.m[g.key] == g {
			delete(srv.shares.m, g.key)
		}
	}
	srv.shares.mu.Unlock()
	s.mu.Lock()
	g.orphans = s.takeShared(g, g.orphans)
	s.mu.Unlock()
	reader := g.reader
	if !last {
		g.placeOrphansLocked()
		if len(g.orphans) > 0 {
			go g.placeLater() // every member is full: place them as room appears, even if no record comes
		}
	} else if g.sq != nil {
		g.releaseOrphansLocked() // share-group mode: released at once for the other instances' members
	} else {
		g.orphans = nil // uncommitted: the next owner of the partitions re-delivers them
	}
	var sreader *kafkamux.ShareReader
	if last && g.sq != nil {
		g.sq.mu.Lock()
		sreader = g.sq.reader
		g.sq.mu.Unlock()
	}
	g.mu.Unlock()
	if sreader != nil {
		go g.shutdownShare(sreader)
	}
	switch {
	case last && reader != nil:
		go g.shutdown(reader)
	case !last && reader != nil:
		go reader.Rebalance() // this instance's weight changed
	}
	return true
}

// takeShared removes the session's queued messages of group g and its unacknowledged ones (PUBLISH sent, no
// PUBACK/PUBREC yet), appending them to dst for another member. Messages past PUBREC stay: the client has
// them. s.mu is held.
func (s *session) takeShared(g *shareGroup, dst []delivery) []delivery {
	if s.fl != nil {
		f := s.fl
		for i := f.head; i < len(f.out); i++ {
			e := &f.out[i]
			if e.state == outPublished && e.d.share == g {
				d := e.d
				d.resendID, d.released = 0, false
				dst = append(dst, d)
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
				dst = append(dst, *d)
			} else {
				keep.push(*d)
			}
		}
		s.queue.clear()
		s.queue = keep
	}
	return dst
}

// shareDone is called when a delivery leaves a session without being sent (expired, too large, not
// authorized): for the group it is completed. s.mu is held.
func (d *delivery) shareDone() {
	if d.share != nil && d.qos > 0 {
		d.share.completed(tp{d.topic, d.part}, d.off)
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
		if err != nil || !srv.cfg.share.enabled || !srv.joinShare(f, string(inner), s, opts[i]) {
			srv.warn("cannot resume a shared subscription", "client", s.id, "filter", f)
		}
	}
}
