package share

import (
	"context"
	"strings"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// The Kafka side of a share group in consumer-group mode (share.go): the consumer group that gives this
// instance its partitions, the topics it reads, records in, and the offsets committed as members complete them.

// kafkaGroup is the name of the Kafka group behind g, in either mode: the prefix, then the MQTT group's name.
func (g *Group) kafkaGroup() string { return g.r.cfg.prefix + strings.TrimPrefix(g.key, "$share/") }

// run joins the Kafka consumer group, retrying while the group still has local members. Runs on its own
// goroutine until joined.
func (g *Group) run(begin kafkamux.TopicOffsets) {
	r := g.r
	spec := kafkamux.GroupSpec{
		Group:       g.kafkaGroup(),
		Topics:      g.routedTopics(),
		Begin:       begin,
		Handler:     g.onRecord,
		Weight:      g.weight,
		Assigned:    g.assigned,
		Revoked:     g.revoked,
		Lost:        g.lost,
		Committable: g.committable,
		CommitEvery: r.cfg.commitEvery,
		Heartbeat:   r.cfg.heartbeat,
	}
	g.joinRetrying("consumer group", func(ctx context.Context) error {
		reader, err := r.kafka.JoinGroup(ctx, r.kafka.MessagesTopic(), spec)
		if err != nil {
			return err
		}
		if !g.adopt(func() { g.reader = reader }) {
			g.shutdown(reader)
		} else {
			reader.AddTopics(g.routedTopics()...) // those discovery found while joining; no-op otherwise
		}
		return nil
	})
}

// adopt runs keep (which stores a reader just joined) under g.mu unless the group closed meanwhile, and
// reports whether it ran: a closed group's new reader is shut down by the caller instead.
func (g *Group) adopt(keep func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	keep()
	return true
}

// joinRetrying calls join (a Kafka "what" of the group) until it succeeds, the group has no local member
// left or the server stops, waiting longer after each failure: 50ms, doubling up to 5s.
func (g *Group) joinRetrying(what string, join func(ctx context.Context) error) {
	r := g.r
	for try, wait := 1, 50*time.Millisecond; ; try, wait = try+1, min(2*wait, 5*time.Second) {
		if g.isClosed() || r.host.Stopping() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := join(ctx)
		cancel()
		if err == nil {
			return
		}
		if try > 2 { // a first failure is often a seed connection the instance's client parked (kafkamux/conns.go)
			r.host.Warn("cannot join the Kafka "+what+" of a shared subscription; retrying", "filter", g.key, "err", err)
		}
		time.Sleep(wait)
	}
}

// routedTopics returns the routed Kafka topics the group reads.
func (g *Group) routedTopics() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.routed))
	for name := range g.routed {
		out = append(out, name)
	}
	return out
}

// addTopics makes the group read more routed Kafka topics (already filtered for its filter).
func (g *Group) addTopics(names []string) {
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
		sreader = g.sq.reader // share-group mode (sharegroup.go)
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

// AddTopics has the share groups read routed topics the server just followed, each the ones its filter
// needs. Runs on the server's discovery goroutine.
func (r *Registry) AddTopics(names []string) {
	r.mu.Lock()
	gs := make([]*Group, 0, len(r.m))
	for _, g := range r.m {
		gs = append(gs, g)
	}
	r.mu.Unlock()
	for _, g := range gs {
		var add []string
		for _, name := range names {
			if r.host.MayHold(g.filter, name) {
				add = append(add, name)
			}
		}
		g.addTopics(add)
	}
}

func (g *Group) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// shutdown leaves the Kafka group (committing through revoked) and closes its client. Runs on its own
// goroutine.
func (g *Group) shutdown(reader *kafkamux.GroupReader) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reader.Close(ctx)
}

// signal wakes the group's reader if it waits for room.
func (g *Group) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// weight is this instance's share of the group's partitions: its number of local members.
func (g *Group) weight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(len(g.members), 1)
}

// onRecord delivers one record of an assigned partition to one member. It runs on the group reader's
// goroutine and waits while every member is full (backpressure on this group's consumer only), or returns
// at once if the partition was revoked meanwhile (its next owner delivers the record).
func (g *Group) onRecord(topic string, p int32, off int64, m *kafkamux.Message) {
	r := g.r
	t, ok := r.host.TopicIndex(topic)
	if !ok {
		return // not a topic this instance follows: never assigned (addTopics only adds followed ones)
	}
	part := tp{t, p}
	// As the shared reader (deliverRecord): a record whose MQTT topic does not route to the Kafka topic it is
	// in is skipped (the shared reader counts it).
	if !r.host.RoutesTo(m.Topic, t) || !mqttcodec.Match(bytesOf(g.filter), bytesOf(m.Topic)) {
		g.advance(part, off, false)
		return
	}
	m = r.host.Convert(m) // as the server does for the other subscriptions
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
func (g *Group) owns(part tp) bool {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.parts[part] != nil
}

// advance records that the record at off was read, and handed to a member at QoS>0 if pend. It reports
// false if the partition is not assigned to this instance (the group is being left).
func (g *Group) advance(part tp, off int64, pend bool) bool {
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

// Completed records that a member acknowledged the record at off of partition p of Kafka topic index t
// (PUBACK, PUBREC) or that it is otherwise done with (it left the session unsent). It may run with a
// member's lock held.
func (g *Group) Completed(t uint16, p int32, off int64) {
	part := tp{t, p}
	if g.sq != nil {
		g.sq.settle(shareKey{part, off}, kafkamux.ShareAccept) // share-group mode: accepted in Kafka (sharegroup.go)
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
func (g *Group) commitOffsets(held map[tp]*sharePart) kafkamux.TopicOffsets {
	offs := make(kafkamux.TopicOffsets)
	for part, p := range held {
		if o, ok := p.commitOffset(); ok {
			name := g.r.host.TopicName(part.t)
			if offs[name] == nil {
				offs[name] = make(map[int32]int64)
			}
			offs[name][part.p] = o
		}
	}
	return offs
}

// committable runs on the group's commit goroutine.
func (g *Group) committable() kafkamux.TopicOffsets {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	return g.commitOffsets(g.parts)
}

// keys returns the position keys of parts, leaving out topics this instance does not follow.
func (g *Group) keys(parts kafkamux.TopicPartitions) []tp {
	var out []tp
	for name, ps := range parts {
		t, ok := g.r.host.TopicIndex(name)
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
func (g *Group) assigned(parts kafkamux.TopicPartitions) {
	g.pmu.Lock()
	for _, part := range g.keys(parts) {
		if g.parts[part] == nil {
			g.parts[part] = &sharePart{next: -1, pend: make(map[int64]struct{})}
		}
	}
	g.pmu.Unlock()
	g.r.host.Debug("share group partitions assigned", "filter", g.key, "partitions", parts)
}

// revoked runs on franz-go's group goroutine before parts go to another instance (or the group is left):
// reading them stops at once, then it waits up to revokeWait for their messages to be acknowledged — unless
// no member is left to acknowledge them — and returns the offsets to commit.
func (g *Group) revoked(parts kafkamux.TopicPartitions) kafkamux.TopicOffsets {
	g.pmu.Lock()
	keys := g.keys(parts)
	held := make(map[tp]*sharePart, len(keys))
	for _, part := range keys {
		if p := g.parts[part]; p != nil {
			held[part] = p
			delete(g.parts, part) // the reader stops delivering them; acks still land in held via Completed
		}
	}
	g.revoking = held
	g.pmu.Unlock()
	deadline := time.Now().Add(g.r.cfg.revokeWait)
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
		g.r.host.Debug("share group partitions revoked", "filter", g.key, "partitions", parts, "commit", offs)
	}
	return offs
}

// lost runs on franz-go's group goroutine when partitions were taken away without a commit.
func (g *Group) lost(parts kafkamux.TopicPartitions) {
	g.pmu.Lock()
	for _, part := range g.keys(parts) {
		delete(g.parts, part)
	}
	g.pmu.Unlock()
}
