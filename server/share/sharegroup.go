package share

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// Shared subscriptions served by Kafka share groups (KIP-932), the "share-group" mode of
// --shared-subscriptions; share.go describes the share groups themselves, consumer.go the "consumer-group" mode.
//
//   - One Kafka share group per MQTT share group and filter, named GroupPrefix + "{name}/{filter}"
//     (the subscribed string without "$share/"), e.g. "ferry-share-workers/jobs/#": the same name the
//     consumer-group mode gives its consumer group. Every instance with a local member joins it with one
//     share consumer (kafkamux.ShareReader) over the messages topic and the routed topics the filter can
//     reach (as in consumer-group mode).
//   - The broker acquires records for a consumer one by one, whatever the partition count: members beyond the
//     partition count, and instances beyond it, all receive. On this instance each acquired record goes to the
//     next member in round-robin order that has room (pickLocked, as in consumer-group mode): a slow member,
//     its window full (Receive Maximum, the outbound budget), is skipped and gets fewer.
//   - A record is accepted in Kafka when the member completes it: PUBACK (QoS 1), PUBREC (QoS 2), at once
//     when handed to it at QoS 0, or when it leaves the session unsent (expired, too large, not allowed).
//   - A member that leaves (unsubscribes, disconnects, times out, is taken over) releases the records it had
//     not acknowledged: the broker gives them to another consumer — any instance's — with their delivery
//     count raised. A record delivered more than --share-delivery-limit times is rejected (archived) and
//     counted as poison instead of being handed on again.
//   - franz-go auto-accepts at the next poll whatever the previous poll left unacknowledged, so the reader
//     polls again only when every record of its last poll is settled; records held longer than
//     --share-hold are released (ShareReader), so one client that never acknowledges cannot stop the group.
//   - Records whose MQTT topic does not match the filter, or do not route to the Kafka topic they are in,
//     are accepted at once without delivery (skipped, as in consumer-group mode).
//
// Locks: as share.go; shareQ.mu is a leaf taken under Group.mu or a member's lock.

// Shared subscription modes (--shared-subscriptions).
const (
	ModeAuto          = "auto"           // share groups when the cluster supports them, else consumer groups
	ModeShareGroup    = "share-group"    // Kafka share groups (KIP-932, Kafka 4.2)
	ModeConsumerGroup = "consumer-group" // one Kafka consumer group per share group, split by partition
)

func (c *cfg) validateMode() error {
	switch c.mode {
	case ModeAuto, ModeShareGroup, ModeConsumerGroup:
	default:
		return fmt.Errorf("shared subscription mode %q: want auto, share-group or consumer-group", c.mode)
	}
	if c.deliveryLimit < 1 || c.deliveryLimit > 9 {
		return fmt.Errorf("share delivery limit %d: want 1 to 9", c.deliveryLimit)
	}
	if c.hold <= 0 {
		return fmt.Errorf("share hold %v: want a positive duration", c.hold)
	}
	return nil
}

// ResolveMode decides, once before the first Join, which mode serves shared subscriptions, and returns it
// with the reason, for the server's log.
func (r *Registry) ResolveMode() (mode, why string) {
	c := &r.cfg
	mode, why = c.mode, "configured"
	if mode == ModeAuto && !c.enabled {
		mode = ModeConsumerGroup // not asked: shared subscriptions are off
	}
	if mode == ModeAuto {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok, err := r.kafka.ShareGroupsSupported(ctx)
		cancel()
		switch {
		case err != nil:
			mode, why = ModeConsumerGroup, "cannot ask the brokers: "+err.Error()
		case ok:
			mode, why = ModeShareGroup, "the brokers advertise ShareGroupHeartbeat, ShareFetch and ShareAcknowledge"
		default:
			mode, why = ModeConsumerGroup, "the brokers do not advertise the share group APIs (Kafka 4.2 has them)"
		}
	}
	r.mu.Lock()
	r.mode = mode
	r.mu.Unlock()
	return mode, why
}

// shareFetchRecords is the most records one share fetch acquires and one poll hands on. The reader polls
// again only when every record of a poll is settled, so a poll is a barrier: 64 made the embedded benchmark
// (10 members, QoS 1, scripts/bench-shared.sh) fall behind its publishers, 1,024 gave the lowest p99; 512
// keeps two buffered fetches within Kafka's default 2,000 record locks per partition and shares a
// 1-partition topic between instances.
const shareFetchRecords = 512

// shareQ is a share group's share-group mode state: its reader and the records acquired for local members.
type shareQ struct {
	mu     sync.Mutex
	reader *kafkamux.ShareReader // nil until joined
	held   map[shareKey]*kafkamux.ShareRecord
}

type shareKey struct {
	part tp
	off  int64
}

// runShare joins the Kafka share group, retrying while the group still has local members. Runs on its own
// goroutine until joined.
func (g *Group) runShare(begin kafkamux.TopicOffsets) {
	r := g.r
	spec := kafkamux.ShareSpec{
		Group:         g.kafkaGroup(),
		Topics:        g.routedTopics(),
		Begin:         begin,
		DeliveryLimit: r.cfg.deliveryLimit,
		Hold:          r.cfg.hold,
		MaxRecords:    shareFetchRecords,
		Handler:       g.onShareRecord,
	}
	g.joinRetrying("share group", func(ctx context.Context) error { // consumer.go
		reader, err := r.kafka.JoinShareGroup(ctx, r.kafka.MessagesTopic(), spec)
		if err != nil {
			return err
		}
		if !g.adopt(func() {
			g.sq.mu.Lock()
			g.sq.reader = reader
			g.sq.mu.Unlock()
		}) {
			g.shutdownShare(reader)
		} else {
			reader.AddTopics(g.routedTopics()...) // those discovery found while joining
		}
		return nil
	})
}

// shutdownShare releases what is left, leaves the share group and closes its client. Runs on its own
// goroutine.
func (g *Group) shutdownShare(reader *kafkamux.ShareReader) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reader.Close(ctx)
	g.mu.Lock()
	g.releaseOrphansLocked()
	g.mu.Unlock()
	g.r.addReaderStats(reader)
}

// onShareRecord hands one acquired record to one member with room. It runs on the share reader's goroutine
// and waits while every member is full (the group's backpressure), or returns at once if the group closes.
func (g *Group) onShareRecord(r *kafkamux.ShareRecord) {
	host := g.r.host
	t, ok := host.TopicIndex(r.Topic)
	if !ok || !host.RoutesTo(r.Msg.Topic, t) || !mqttcodec.Match(bytesOf(g.filter), bytesOf(r.Msg.Topic)) {
		r.Ack(kafkamux.ShareAccept) // not for this filter (the shared reader counts misrouted records)
		return
	}
	r.Msg = host.Convert(r.Msg) // as the server does for the other subscriptions
	key := shareKey{tp{t, r.Partition}, r.Offset}
	var closing <-chan struct{}
	g.sq.mu.Lock()
	if g.sq.reader != nil {
		closing = g.sq.reader.Closing()
	}
	g.sq.mu.Unlock()
	var timer *time.Timer
	for {
		delivered, gone := g.deliverShare(key, r)
		if delivered || gone {
			if timer != nil {
				timer.Stop()
			}
			if gone {
				r.Ack(kafkamux.ShareRelease)
			}
			return
		}
		if timer == nil {
			timer = time.NewTimer(20 * time.Millisecond)
		} else {
			timer.Reset(20 * time.Millisecond)
		}
		select {
		case <-g.wake:
		case <-timer.C:
		case <-closing:
			timer.Stop()
			r.Ack(kafkamux.ShareRelease)
			return
		}
	}
}

// deliverShare queues r for the next member with room. It reports whether it did, and gone when the group
// closed.
func (g *Group) deliverShare(key shareKey, r *kafkamux.ShareRecord) (delivered, gone bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false, true
	}
	i := g.pickLocked()
	if i < 0 {
		return false, false
	}
	mem := &g.members[i]
	d := Delivery{Msg: r.Msg, QoS: min(r.Msg.QoS, mem.o.QoS), Retain: r.Msg.Retain && mem.o.RetainAsPublished,
		Topic: key.part.t, Part: key.part.p, Off: key.off}
	if mem.o.SubID != 0 {
		d.SubIDs = []uint32{mem.o.SubID}
	}
	if d.QoS > 0 {
		g.sq.mu.Lock()
		g.sq.held[key] = r
		g.sq.mu.Unlock()
	}
	if !mem.m.Push(g, d) {
		g.sq.settle(key, kafkamux.ShareRelease) // went offline after it was picked: for another consumer
		if d.QoS == 0 {
			r.Ack(kafkamux.ShareRelease)
		}
		return true, false
	}
	if d.QoS == 0 {
		r.Ack(kafkamux.ShareAccept) // at most once: accepted on hand-off
	}
	return true, false
}

// settle acknowledges the held record at key, if any. It may run with a session lock held.
func (q *shareQ) settle(key shareKey, status kafkamux.ShareAck) {
	q.mu.Lock()
	r := q.held[key]
	delete(q.held, key)
	q.mu.Unlock()
	if r != nil {
		r.Ack(status)
	}
}

// releaseOrphansLocked releases the records of members that left, for another consumer. g.mu is held.
func (g *Group) releaseOrphansLocked() {
	for i := range g.orphans {
		d := &g.orphans[i]
		g.sq.settle(shareKey{tp{d.Topic, d.Part}, d.Off}, kafkamux.ShareRelease)
		g.orphans[i] = Delivery{}
	}
	g.orphans = nil
}

// addReaderStats keeps the counters of a closed share reader.
func (r *Registry) addReaderStats(reader *kafkamux.ShareReader) {
	st := reader.Stats()
	r.mu.Lock()
	r.closedStats.Rejected += st.Rejected
	r.closedStats.Released += st.Released
	r.closedStats.HeldTooLong += st.HeldTooLong
	r.closedStats.AckErrors += st.AckErrors
	r.mu.Unlock()
}

// shareGroupStats adds the share-group mode counters to st. Registry lock not held.
func (r *Registry) shareGroupStats(st *Stats, gs []*Group) {
	r.mu.Lock()
	st.Mode = r.mode
	c := r.closedStats
	r.mu.Unlock()
	for _, g := range gs {
		if g.sq == nil {
			continue
		}
		g.sq.mu.Lock()
		reader := g.sq.reader
		g.sq.mu.Unlock()
		if reader != nil {
			rs := reader.Stats()
			c.Rejected += rs.Rejected
			c.Released += rs.Released
			c.HeldTooLong += rs.HeldTooLong
			c.AckErrors += rs.AckErrors
		}
	}
	st.PoisonRejected, st.Released, st.HeldTooLong, st.AckErrors = c.Rejected, c.Released, c.HeldTooLong, c.AckErrors
}
