package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

// Shared subscriptions served by Kafka share groups (KIP-932), the "share-group" mode of
// --shared-subscriptions; share.go describes the share groups themselves and the "consumer-group" mode.
//
//   - One Kafka share group per MQTT share group and filter, named ShareGroupPrefix + "{name}/{filter}"
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
// Locks: as share.go; shareQ.mu is a leaf taken under shareGroup.mu or session.mu.

// Shared subscription modes (--shared-subscriptions).
const (
	ShareModeAuto          = "auto"           // share groups when the cluster supports them, else consumer groups
	ShareModeShareGroup    = "share-group"    // Kafka share groups (KIP-932, Kafka 4.2)
	ShareModeConsumerGroup = "consumer-group" // one Kafka consumer group per share group, split by partition
)

// SharedSubscriptionMode chooses how shared subscriptions use Kafka: ShareModeAuto (default),
// ShareModeShareGroup or ShareModeConsumerGroup.
func SharedSubscriptionMode(mode string) Opt { return opt(func(c *cfg) { c.share.mode = mode }) }

// ShareDeliveryLimit is how many times a share-group mode record may be delivered (released by members that
// left) before it is rejected as poison. 1..9; default 4, the group's share.delivery.count.limit being set
// one above it.
func ShareDeliveryLimit(n int) Opt { return opt(func(c *cfg) { c.share.deliveryLimit = n }) }

// ShareHold is how long a share-group mode record may wait for a member's acknowledgement before it is
// released for another consumer; keep it below the cluster's group.share.record.lock.duration.ms. Default 20s.
func ShareHold(d time.Duration) Opt { return opt(func(c *cfg) { c.share.hold = d }) }

func (c *shareCfg) validateMode() error {
	switch c.mode {
	case ShareModeAuto, ShareModeShareGroup, ShareModeConsumerGroup:
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

// resolveShareMode decides, once at Start, which mode serves shared subscriptions, and says so in one log
// line. Runs before the listeners open.
func (srv *Server) resolveShareMode() {
	c := &srv.cfg.share
	mode, why := c.mode, "configured"
	if mode == ShareModeAuto && !c.enabled {
		mode = ShareModeConsumerGroup // not asked: shared subscriptions are off
	}
	if mode == ShareModeAuto {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok, err := srv.kafka.ShareGroupsSupported(ctx)
		cancel()
		switch {
		case err != nil:
			mode, why = ShareModeConsumerGroup, "cannot ask the brokers: "+err.Error()
		case ok:
			mode, why = ShareModeShareGroup, "the brokers advertise ShareGroupHeartbeat, ShareFetch and ShareAcknowledge"
		default:
			mode, why = ShareModeConsumerGroup, "the brokers do not advertise the share group APIs (Kafka 4.2 has them)"
		}
	}
	srv.shares.mu.Lock()
	srv.shares.mode = mode
	srv.shares.mu.Unlock()
	if c.enabled {
		srv.cfg.log.Info("shared subscriptions", "mode", mode, "why", why)
	}
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
func (g *shareGroup) runShare(begin kafkamux.TopicOffsets) {
	srv := g.srv
	spec := kafkamux.ShareSpec{
		Group:         srv.cfg.share.prefix + strings.TrimPrefix(g.key, "$share/"),
		Topics:        g.routedTopics(),
		Begin:         begin,
		DeliveryLimit: srv.cfg.share.deliveryLimit,
		Hold:          srv.cfg.share.hold,
		MaxRecords:    shareFetchRecords,
		Handler:       g.onShareRecord,
	}
	for try, wait := 1, 50*time.Millisecond; ; try, wait = try+1, min(2*wait, 5*time.Second) {
		if g.isClosed() || srv.metrics.stopping.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		reader, err := srv.kafka.JoinShareGroup(ctx, srv.kafka.MessagesTopic(), spec)
		cancel()
		if err == nil {
			g.mu.Lock()
			closed := g.closed
			if !closed {
				g.sq.mu.Lock()
				g.sq.reader = reader
				g.sq.mu.Unlock()
			}
			g.mu.Unlock()
			if closed {
				g.shutdownShare(reader)
			} else {
				reader.AddTopics(g.routedTopics()...) // those discovery found while joining
			}
			return
		}
		if try > 2 {
			srv.warn("cannot join the Kafka share group of a shared subscription; retrying", "filter", g.key, "err", err)
		}
		time.Sleep(wait)
	}
}

// shutdownShare releases what is left, leaves the share group and closes its client. Runs on its own
// goroutine.
func (g *shareGroup) shutdownShare(reader *kafkamux.ShareReader) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reader.Close(ctx)
	g.mu.Lock()
	g.releaseOrphansLocked()
	g.mu.Unlock()
	g.srv.shares.addReaderStats(reader)
}

// onShareRecord hands one acquired record to one member with room. It runs on the share reader's goroutine
// and waits while every member is full (the group's backpressure), or returns at once if the group closes.
func (g *shareGroup) onShareRecord(r *kafkamux.ShareRecord) {
	srv := g.srv
	t, ok := srv.kafkaTopicIndex(r.Topic)
	if !ok || (srv.rt != nil && !srv.rt.tbl.RoutesTo(r.Msg.Topic, srv.rt.name(t))) || !mqttcodec.Match(bytesOf(g.filter), bytesOf(r.Msg.Topic)) {
		r.Ack(kafkamux.ShareAccept) // not for this filter (the shared reader counts misrouted records)
		return
	}
	if srv.cfg.payload != nil {
		r.Msg = srv.deliverAsJSONWait(r.Msg) // contract.go; as deliverRecord does for the other subscriptions
	}
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
func (g *shareGroup) deliverShare(key shareKey, r *kafkamux.ShareRecord) (delivered, gone bool) {
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
	d := delivery{msg: r.Msg, qos: min(r.Msg.QoS, mem.o.qos), retain: r.Msg.Retain && mem.o.retainAsPub,
		topic: key.part.t, part: key.part.p, off: key.off, share: g}
	if mem.o.subID != 0 {
		d.subIDs = []uint32{mem.o.subID}
	}
	if d.qos > 0 {
		g.sq.mu.Lock()
		g.sq.held[key] = r
		g.sq.mu.Unlock()
	}
	if !g.pushLocked(mem.s, d) {
		g.sq.settle(key, kafkamux.ShareRelease) // went offline after it was picked: for another consumer
		if d.qos == 0 {
			r.Ack(kafkamux.ShareRelease)
		}
		return true, false
	}
	if d.qos == 0 {
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
func (g *shareGroup) releaseOrphansLocked() {
	for i := range g.orphans {
		d := &g.orphans[i]
		g.sq.settle(shareKey{tp{d.topic, d.part}, d.off}, kafkamux.ShareRelease)
		g.orphans[i] = delivery{}
	}
	g.orphans = nil
}

// addReaderStats keeps the counters of a closed share reader.
func (r *shareRegistry) addReaderStats(reader *kafkamux.ShareReader) {
	st := reader.Stats()
	r.mu.Lock()
	r.closedStats.Rejected += st.Rejected
	r.closedStats.Released += st.Released
	r.closedStats.HeldTooLong += st.HeldTooLong
	r.closedStats.AckErrors += st.AckErrors
	r.mu.Unlock()
}

// shareGroupStats adds the share-group mode counters to st. Registry lock not held.
func (srv *Server) shareGroupStats(st *ShareStats, gs []*shareGroup) {
	srv.shares.mu.Lock()
	st.Mode = srv.shares.mode
	c := srv.shares.closedStats
	srv.shares.mu.Unlock()
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
