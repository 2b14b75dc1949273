package server

import (
	"context"
	"strings"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// The Kafka side of a share group (share.go): the consumer group that gives this instance its partitions, the
// topics it reads, records in, and the offsets committed as members complete them.

// run joins the Kafka consumer group, retrying while the group still has local members. Runs on its own
// goroutine until joined.
func (g *shareGroup) run(begin kafkamux.TopicOffsets) {
	srv := g.srv
	spec := kafkamux.GroupSpec{
		Group:       srv.cfg.share.prefix + strings.TrimPrefix(g.key, "$share/"),
		Topics:      g.routedTopics(),
		Begin:       begin,
		Handler:     g.onRecord,
		Weight:      g.weight,
		Assigned:    g.assigned,
		Revoked:     g.revoked,
		Lost:        g.lost,
		Committable: g.committable,
		CommitEvery: srv.cfg.share.commitEvery,
		Heartbeat:   srv.cfg.share.heartbeat,
	}
	for try, wait := 1, 50*time.Millisecond; ; try, wait = try+1, min(2*wait, 5*time.Second) {
		if g.isClosed() || srv.metrics.stopping.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		reader, err := srv.kafka.JoinGroup(ctx, srv.kafka.MessagesTopic(), spec)
		cancel()
		if err == nil {
			g.mu.Lock()
			closed := g.closed
			if !closed {
				g.reader = reader
			}
			g.mu.Unlock()
			if closed {
				g.shutdown(reader)
			} else {
				reader.AddTopics(g.routedTopics()...) // those discovery found while joining; no-op otherwise
			}
			return
		}
		if try > 2 { // a first failure is often a seed connection the instance's client parked (kafkamux/conns.go)
			srv.warn("cannot join the Kafka consumer group of a shared subscription; retrying", "filter", g.key, "err", err)
		}
		time.Sleep(wait)
	}
}

// routedTopics returns the routed Kafka topics the group reads.
func (g *shareGroup) routedTopics() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.routed))
	for name := range g.routed {
		out = append(out, name)
	}
	return out
}

// addTopics makes the group read more routed Kafka topics (already filtered for its filter).
func (g *shareGroup) addTopics(names []string) {
	if len(names) == 0 {
		return
	}
	g.mu.Lock()
	if g.routed == nil {
		g.routed = make(map[string]bool)
	}
	for _, name := range names {
		g.routed[name] = true
	}
	reader := g.reader
	var sreader *kafkamux.ShareReader
	if g.sq != nil {
		g.sq.mu.Lock()
		sreader = g.sq.reader // share-group mode (share_group.go)
		g.sq.mu.Unlock()
	}
	if g.closed {
		reader, sreader = nil, nil // leaving the Kafka group
	}
	g.mu.Unlock()
	if reader != nil {
		reader.AddTopics(names...) // not joined yet: run adds them once it is
	}
	if sreader != nil {
		sreader.AddTopics(names...) // not joined yet: runShare adds them once it is
	}
}

// shareTopics returns the routed Kafka topics this instance follows that a shared subscription to filter reads
// (route.Table.MayHold), for a new share group; none without route rules.
func (srv *Server) shareTopics(filter string) []string {
	if srv.rt == nil {
		return nil
	}
	var out []string
	for _, name := range (*srv.rt.names.Load())[1:] {
		if v, ok := srv.rt.state.Load(name); ok && v.(uint32) == topicReady && srv.rt.tbl.MayHold(filter, name) {
			out = append(out, name)
		}
	}
	return out
}

// shareAddTopics has the share groups read routed topics discovery just followed, each the ones its filter
// needs. Runs on the discovery goroutine.
func (srv *Server) shareAddTopics(names []string) {
	srv.shares.mu.Lock()
	gs := make([]*shareGroup, 0, len(srv.shares.m))
	for _, g := range srv.shares.m {
		gs = append(gs, g)
	}
	srv.shares.mu.Unlock()
	for _, g := range gs {
		var add []string
		for _, name := range names {
			if srv.rt.tbl.MayHold(g.filter, name) {
				add = append(add, name)
			}
		}
		g.addTopics(add)
	}
}

// kafkaTopicIndex returns the index (routing.go) of a Kafka topic a share group reads: 0 for the messages
// topic.
func (srv *Server) kafkaTopicIndex(name string) (uint16, bool) {
	if srv.rt == nil || name == srv.kafka.MessagesTopic() {
		return 0, true
	}
	return srv.topicIndex(name)
}

// kafkaTopicName returns the Kafka topic of index t.
func (srv *Server) kafkaTopicName(t uint16) string {
	if t == 0 {
		return srv.kafka.MessagesTopic()
	}
	return srv.rt.name(t)
}

func (g *shareGroup) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// shutdown leaves the Kafka group (committing through revoked) and closes its client. Runs on its own
// goroutine.
func (g *shareGroup) shutdown(reader *kafkamux.GroupReader) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reader.Close(ctx)
}

// signal wakes the group's reader if it waits for room.
func (g *shareGroup) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// weight is this instance's share of the group's partitions: its number of local members.
func (g *shareGroup) weight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(len(g.members), 1)
}

// onRecord delivers one record of an assigned partition to one member. It runs on the group reader's
// goroutine and waits while every member is full (backpressure on this group's consumer only), or returns
// at once if the partition was revoked meanwhile (its next owner delivers the record).
func (g *shareGroup) onRecord(topic string, p int32, off int64, m *kafkamux.Message) {
	srv := g.srv
	t, ok := srv.kafkaTopicIndex(topic)
	if !ok {
		return // not a topic this instance follows: never assigned (addTopics only adds followed ones)
	}
	part := tp{t, p}
	// As the shared reader (deliverRecord): a record whose MQTT topic does not route to the Kafka topic it is
	// in is skipped (the shared reader counts it).
	if (srv.rt != nil && !srv.rt.tbl.RoutesTo(m.Topic, srv.rt.name(t))) || !mqttcodec.Match(bytesOf(g.filter), bytesOf(m.Topic)) {
		g.advance(part, off, false)
		return
	}
	if srv.cfg.payload != nil {
		m = srv.deliverAsJSONWait(m) // contract.go; as deliverRecord does for the other subscriptions
	}
	var timer *time.Timer
	g.mu.Lock()
	var closing <-chan struct{} // nil (never ready) until the reader is known
	if g.reader != nil {
		closing = g.reader.Closing()
	}
	g.mu.Unlock()
	for {
		delivered, gone := g.deliver(part, off, m)
		if delivered || gone {
			if timer != nil {
				timer.Stop()
			}
			return
		}
		if timer == nil {
			timer = time.NewTimer(20 * time.Millisecond)
		} else {
			timer.Reset(20 * time.Millisecond) // the queues also drain without an acknowledgement
		}
		select {
		case <-g.wake:
		case <-timer.C:
		case <-closing:
			timer.Stop()
			return // the reader is closing (Kafka side shut down): uncommitted, delivered by the next owner
		}
	}
}

// owns reports whether part is assigned to this instance.
func (g *shareGroup) owns(part tp) bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.parts[part] != nil
}

// advance records that the record at off was read, and handed to a member at QoS>0 if pend. It reports
// false if the partition is not assigned to this instance (the group is being left).
func (g *shareGroup) advance(part tp, off int64, pend bool) bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	p := g.parts[part]
	if p == nil {
		return false
	}
	if pend {
		p.pend[off] = struct{}{}
	}
	p.next = off + 1
	return true
}

// completed records that a member acknowledged the record at off (PUBACK, PUBREC) or that it is otherwise
// done with. It may run with a session lock held.
func (g *shareGroup) completed(part tp, off int64) {
	if g.sq != nil {
		g.sq.settle(shareKey{part, off}, kafkamux.ShareAccept) // share-group mode: accepted in Kafka (share_group.go)
		g.signal()
		return
	}
	g.pmu.Lock()
	if p := g.parts[part]; p != nil {
		delete(p.pend, off)
	} else if p := g.revoking[part]; p != nil {
		delete(p.pend, off)
	}
	g.pmu.Unlock()
	g.signal()
}

// commitOffset is where the partition's committed offset may go: its first record not completed. pmu is held.
func (p *sharePart) commitOffset() (int64, bool) {
	o := p.next
	for off := range p.pend {
		o = min(o, off)
	}
	return o, o >= 0
}

// commitOffsets returns, by Kafka topic, the offsets of held that may be committed. pmu is held.
func (g *shareGroup) commitOffsets(held map[tp]*sharePart) kafkamux.TopicOffsets {
	offs := make(kafkamux.TopicOffsets)
	for part, p := range held {
		if o, ok := p.commitOffset(); ok {
			name := g.srv.kafkaTopicName(part.t)
			if offs[name] == nil {
				offs[name] = make(map[int32]int64)
			}
			offs[name][part.p] = o
		}
	}
	return offs
}

// committable runs on the group's commit goroutine.
func (g *shareGroup) committable() kafkamux.TopicOffsets {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.commitOffsets(g.parts)
}

// keys returns the position keys of parts, leaving out topics this instance does not follow.
func (g *shareGroup) keys(parts kafkamux.TopicPartitions) []tp {
	var out []tp
	for name, ps := range parts {
		t, ok := g.srv.kafkaTopicIndex(name)
		if !ok {
			continue
		}
		for _, p := range ps {
			out = append(out, tp{t, p})
		}
	}
	return out
}

// assigned runs on franz-go's group goroutine.
func (g *shareGroup) assigned(parts kafkamux.TopicPartitions) {
	g.pmu.Lock()
	for _, part := range g.keys(parts) {
		if g.parts[part] == nil {
			g.parts[part] = &sharePart{next: -1, pend: make(map[int64]struct{})}
		}
	}
	g.pmu.Unlock()
	g.srv.debug("share group partitions assigned", "filter", g.key, "partitions", parts)
}

// revoked runs on franz-go's group goroutine before parts go to another instance (or the group is left):
// reading them stops at once, then it waits up to revokeWait for their messages to be acknowledged — unless
// no member is left to acknowledge them — and returns the offsets to commit.
func (g *shareGroup) revoked(parts kafkamux.TopicPartitions) kafkamux.TopicOffsets {
	g.pmu.Lock()
	keys := g.keys(parts)
	held := make(map[tp]*sharePart, len(keys))
	for _, part := range keys {
		if p := g.parts[part]; p != nil {
			held[part] = p
			delete(g.parts, part) // the reader stops delivering them; acks still land in held via completedHeld
		}
	}
	g.revoking = held
	g.pmu.Unlock()
	deadline := time.Now().Add(g.srv.cfg.share.revokeWait)
	for time.Now().Before(deadline) && !g.isClosed() {
		g.pmu.Lock()
		busy := false
		for _, p := range held {
			busy = busy || len(p.pend) > 0
		}
		g.pmu.Unlock()
		if !busy {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	g.revoking = nil
	offs := g.commitOffsets(held)
	if n := len(held); n > 0 {
		g.srv.debug("share group partitions revoked", "filter", g.key, "partitions", parts, "commit", offs)
	}
	return offs
}

// lost runs on franz-go's group goroutine when partitions were taken away without a commit.
func (g *shareGroup) lost(parts kafkamux.TopicPartitions) {
	g.pmu.Lock()
	for _, part := range g.keys(parts) {
		delete(g.parts, part)
	}
	g.pmu.Unlock()
}
