package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A ShareReader is one member of a Kafka share group (KIP-932): the broker hands it records one by one
// (acquired for it under a time-limited lock), and each record is settled by exactly one acknowledgement —
// accepted (done), released (given to another consumer, its delivery count raised) or rejected (never
// delivered again). MQTT shared subscriptions in share-group mode use one per share group and instance
// (server/share/sharegroup.go).
//
// franz-go's share consumer auto-accepts, at the next poll, every record of the previous poll that was not
// acknowledged. A record handed to an MQTT client must stay acquired until the client acknowledges it, so
// the reader polls again only when every record of the previous poll is settled ([ShareRecord.Ack]); a
// record held longer than [ShareSpec.Hold] is released so that one stuck client does not stop the group on
// this instance (its late acknowledgement is then a no-op, and the record may reach another member too).
//
// Like a [GroupReader] it has its own franz-go client — a client joins one share group, franz-go cannot
// share it between groups — which holds at most two connections per broker: ShareFetch and
// ShareAcknowledge on one (the broker ties the share session to it), heartbeats to the coordinator and
// metadata on the other. Steady, that is one per broker leading a partition it reads plus one to the
// coordinator; a seed connection while it bootstraps and one to the broker of each metadata refresh stay
// until franz-go closes them idle (docs/operations.md). The server caps how many exist (--max-share-groups).
type ShareReader struct {
	m     *Mux
	spec  ShareSpec
	cl    *kgo.Client
	conns *connTracker

	topicsMu sync.Mutex
	topics   map[string]struct{}

	outMu       sync.Mutex
	out         int           // records of the last poll not yet settled
	settled     chan struct{} // capacity 1: a record was settled
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	closing     chan struct{}
	closeOnce   sync.Once
	rejected    atomic.Uint64 // records rejected as poison
	released    atomic.Uint64 // records released (member left, or held too long)
	heldTooLong atomic.Uint64 // of those, released because Hold passed
	ackErrors   atomic.Uint64 // acknowledgements the broker refused (lock expired meanwhile, leader moved)
}

// ShareSpec configures [Mux.JoinShareGroup].
type ShareSpec struct {
	// Group is the Kafka share group id.
	Group string
	// Topics are Kafka topics read besides the main topic given to JoinShareGroup; AddTopics adds more.
	Topics []string
	// Begin is where each partition starts when the share group has no member anywhere: a new group, or
	// one whose last member left (its start offsets are reset to Begin, as a consumer-group mode share
	// group's offsets are). Partitions it does not name start at their earliest record (routed topics
	// found later, whose records are all new).
	Begin TopicOffsets
	// DeliveryLimit: a record delivered more than this many times (released by members that left, or held
	// too long) is rejected as poison, counted, and not handed on. The group's share.delivery.count.limit is
	// set one above it, so that the broker hands such a record over once more for Ferry to count. 1..9,
	// default 4.
	DeliveryLimit int
	// Hold is how long records of one poll may stay unacknowledged before they are released; keep it below
	// the cluster's group.share.record.lock.duration.ms (30s by default). Default 20s.
	Hold time.Duration
	// MaxRecords is the most records acquired by one fetch and handed on by one poll. Default 512.
	MaxRecords int32
	// Handler receives each acquired record, on the reader's goroutine. It may block while every local
	// member is full (the group's backpressure), but not for anything near Hold. It must settle the record
	// eventually (Ack), or Hold releases it.
	Handler func(*ShareRecord)
}

// ShareRecord is one acquired record. Ack settles it; only the first call counts.
type ShareRecord struct {
	Topic     string
	Partition int32
	Offset    int64
	Delivery  int32 // the broker's delivery count, 1 on the first delivery
	Msg       *Message

	r    *kgo.Record
	sr   *ShareReader
	done atomic.Bool
}

// ShareAck is how a [ShareRecord] is settled.
type ShareAck = kgo.AckStatus

// Share acknowledgement kinds.
const (
	ShareAccept  = kgo.AckAccept
	ShareRelease = kgo.AckRelease
	ShareReject  = kgo.AckReject
)

// Ack settles the record: accept, release or reject. It reports false if the record was settled already
// (e.g. released after Hold). Safe from any goroutine; does not block.
func (r *ShareRecord) Ack(status ShareAck) bool {
	if !r.done.CompareAndSwap(false, true) {
		return false
	}
	r.r.Ack(status)
	if status == kgo.AckRelease {
		r.sr.released.Add(1)
	}
	r.sr.settle()
	return true
}

func (g *ShareReader) settle() {
	g.outMu.Lock()
	g.out--
	g.outMu.Unlock()
	select {
	case g.settled <- struct{}{}:
	default:
	}
}

// ShareGroupsSupported reports whether every broker of the cluster advertises the share group APIs
// (ShareGroupHeartbeat, ShareFetch, ShareAcknowledge: Kafka 4.0 early access, 4.2 generally available).
func (m *Mux) ShareGroupsSupported(ctx context.Context) (bool, error) {
	vs, err := m.adm.ApiVersions(ctx)
	if err != nil {
		return false, fmt.Errorf("cannot ask the Kafka brokers which APIs they support: %w", err)
	}
	ok := len(vs) > 0
	for _, v := range vs {
		if v.Err != nil {
			return false, fmt.Errorf("cannot ask Kafka broker %d which APIs it supports: %w", v.NodeID, v.Err)
		}
		for _, key := range []int16{kmsg.ShareGroupHeartbeat.Int16(), kmsg.ShareFetch.Int16(), kmsg.ShareAcknowledge.Int16()} {
			if _, has := v.KeyMaxVersion(key); !has {
				ok = false
			}
		}
	}
	return ok, nil
}

// JoinShareGroup makes this instance a member of the share group spec.Group over topic (the messages
// topic) and spec.Topics. It blocks for a few Kafka round trips (set the group's configs, possibly reset its
// start offsets, create the client): call it off the event loops.
func (m *Mux) JoinShareGroup(ctx context.Context, topic string, spec ShareSpec) (*ShareReader, error) {
	if spec.Handler == nil {
		return nil, fmt.Errorf("cannot join share group %q: missing handler", spec.Group)
	}
	if spec.DeliveryLimit <= 0 {
		spec.DeliveryLimit = 4
	}
	if spec.DeliveryLimit > 9 {
		return nil, fmt.Errorf("cannot join share group %q: delivery limit %d above 9 (Kafka allows a group limit of 10)", spec.Group, spec.DeliveryLimit)
	}
	if spec.Hold <= 0 {
		spec.Hold = 20 * time.Second
	}
	if spec.MaxRecords <= 0 {
		spec.MaxRecords = 512
	}
	if m.ctx.Err() != nil {
		return nil, fmt.Errorf("cannot join share group %q: %w", spec.Group, ErrClosed)
	}
	if err := m.prepareShareGroup(ctx, spec); err != nil {
		return nil, err
	}
	g := &ShareReader{m: m, spec: spec, conns: newConnTracker(), closing: make(chan struct{}),
		settled: make(chan struct{}, 1), topics: map[string]struct{}{topic: {}}}
	topics := []string{topic}
	for _, t := range spec.Topics {
		if _, dup := g.topics[t]; !dup {
			g.topics[t] = struct{}{}
			topics = append(topics, t)
		}
	}
	opts := append(m.shareOpts(),
		kgo.WithHooks(g.conns), kgo.RetryBackoffFn(retryBackoff),
		kgo.ShareGroup(spec.Group),
		kgo.ConsumeTopics(topics...),
		kgo.ShareMaxRecords(spec.MaxRecords),
		kgo.ShareAckCallback(g.ackResults),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot join share group %q: %w", spec.Group, err)
	}
	g.cl = cl
	g.ctx, g.cancel = context.WithCancel(context.Background())
	m.groupsMu.Lock()
	if m.ctx.Err() != nil {
		m.groupsMu.Unlock()
		cl.Close()
		return nil, fmt.Errorf("cannot join share group %q: %w", spec.Group, ErrClosed)
	}
	if m.shareReaders == nil {
		m.shareReaders = make(map[*ShareReader]struct{})
	}
	m.shareReaders[g] = struct{}{}
	m.groupsMu.Unlock()
	g.wg.Add(1)
	go g.read()
	return g, nil
}

// shareOpts are the client options of a share consumer: the connection, security and logging options of
// the instance's clients, none of the producer or fetch-offset ones (a share consumer has no offsets).
func (m *Mux) shareOpts() []kgo.Opt {
	c := &m.cfg
	o := []kgo.Opt{
		kgo.SeedBrokers(m.seeds...),
		kgo.ClientID(c.clientID),
		kgo.WithLogger(kgoLogger{l: m.log}),
		kgo.DialTimeout(c.dialTimeout),
		kgo.MetadataMinAge(500 * time.Millisecond),
		// A share fetch in flight holds back the acknowledgements; with the embedded Kafka, 500 ms waits put
		// the delivery p99 of scripts/bench-shared.sh near 460 ms, 50 ms near 130 ms. Idle, it costs 20 fetches
		// a second per group and broker.
		kgo.FetchMaxWait(min(c.fetchMaxWait, 50*time.Millisecond)),
	}
	o = append(o, c.securityOpts()...)
	return append(o, c.extra...)
}

// prepareShareGroup sets the group's configs — read_committed (QoS 2 records are transactional), a
// delivery count limit one above Ferry's, new partitions from their earliest record — and, when the group
// has no member, resets its start offsets to spec.Begin.
func (m *Mux) prepareShareGroup(ctx context.Context, spec ShareSpec) error {
	limit := strconv.Itoa(spec.DeliveryLimit + 1)
	earliest, committed := "earliest", "read_committed"
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType = kmsg.ConfigResourceTypeGroupConfig
	res.ResourceName = spec.Group
	for k, v := range map[string]*string{"share.isolation.level": &committed, "share.delivery.count.limit": &limit, "share.auto.offset.reset": &earliest} {
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name, c.Value, c.Op = k, v, kmsg.IncrementalAlterConfigOpSet
		res.Configs = append(res.Configs, c)
	}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, m.cl)
	if err == nil && len(resp.Resources) == 1 {
		err = kerr.ErrorForCode(resp.Resources[0].ErrorCode)
	}
	if err != nil {
		return fmt.Errorf("cannot join share group %q: cannot set its configs: %w", spec.Group, err)
	}
	described, err := m.adm.DescribeShareGroups(ctx, spec.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		var se *kadm.ShardErrors
		if !errors.As(err, &se) {
			return fmt.Errorf("cannot join share group %q: cannot describe it: %w", spec.Group, err)
		}
	}
	if d, ok := described[spec.Group]; ok && d.Err == nil && len(d.Members) > 0 {
		return nil // members elsewhere: the group continues where they are
	}
	if len(spec.Begin) == 0 {
		return nil
	}
	ar, err := m.adm.AlterShareGroupOffsets(ctx, spec.Group, kadmOffsets(spec.Begin))
	if err == nil {
		err = ar.Error()
	}
	if errors.Is(err, kerr.NonEmptyGroup) {
		return nil // a member joined meanwhile, elsewhere: its instance set the offsets
	}
	if err != nil {
		return fmt.Errorf("cannot join share group %q: cannot set its start offsets: %w", spec.Group, err)
	}
	return nil
}

// ackResults runs on franz-go's callback goroutine.
func (g *ShareReader) ackResults(_ *kgo.Client, rs kgo.ShareAckResults) {
	for _, r := range rs {
		if r.Err == nil {
			continue
		}
		g.ackErrors.Add(1)
		if ok, n := g.m.rl.Allow("share ack:" + g.spec.Group); ok {
			g.m.log.Warn("Kafka refused a share group acknowledgement; the records will be delivered again",
				"group", g.spec.Group, "topic", r.Topic, "partition", r.Partition, "err", r.Err, "suppressed", n)
		}
	}
}

// read polls, hands each record on, and waits until every record of the poll is settled before the next.
func (g *ShareReader) read() {
	defer g.wg.Done()
	var pending []*ShareRecord
	for {
		pending = g.waitSettled(pending)
		if g.ctx.Err() != nil {
			return
		}
		fetches := g.cl.PollRecords(g.ctx, int(g.spec.MaxRecords))
		if g.ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if ok, n := g.m.rl.Allow("share fetch:" + err.Error()); ok {
				g.m.log.Warn("cannot read from Kafka for a share group", "group", g.spec.Group, "topic", t,
					"partition", p, "err", err, "suppressed", n)
			}
		})
		pending = pending[:0]
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Attrs.IsControl() {
				r.Ack(kgo.AckAccept)
				return
			}
			if int(r.DeliveryCount()) > g.spec.DeliveryLimit {
				r.Ack(kgo.AckReject)
				g.rejected.Add(1)
				if ok, n := g.m.rl.Allow("share poison:" + g.spec.Group); ok {
					g.m.log.Warn("rejecting a record delivered too often to a share group (poison)", "group", g.spec.Group,
						"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "deliveries", r.DeliveryCount(), "suppressed", n)
				}
				return
			}
			msg, err := MessageFromRecord(r)
			if err != nil {
				r.Ack(kgo.AckAccept) // not an MQTT message: the shared reader counts and logs it (Mux.Skipped)
				return
			}
			sr := &ShareRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Delivery: r.DeliveryCount(), Msg: msg, r: r, sr: g}
			g.outMu.Lock()
			g.out++
			g.outMu.Unlock()
			pending = append(pending, sr)
			g.spec.Handler(sr)
		})
	}
}

// waitSettled waits until every record of the last poll is settled, releasing those still held after Hold.
func (g *ShareReader) waitSettled(pending []*ShareRecord) []*ShareRecord {
	deadline := time.NewTimer(g.spec.Hold)
	defer deadline.Stop()
	for {
		g.outMu.Lock()
		out := g.out
		g.outMu.Unlock()
		if out <= 0 {
			return pending
		}
		select {
		case <-g.settled:
		case <-g.ctx.Done():
			return pending // Close releases what is left (franz-go's leave releases the last poll)
		case <-deadline.C:
			for _, r := range pending {
				if r.Ack(kgo.AckRelease) {
					g.heldTooLong.Add(1)
				}
			}
		}
	}
}

// AddTopics makes the member read more Kafka topics (routed topics found after it joined).
func (g *ShareReader) AddTopics(topics ...string) {
	g.topicsMu.Lock()
	var add []string
	for _, t := range topics {
		if _, ok := g.topics[t]; !ok {
			g.topics[t] = struct{}{}
			add = append(add, t)
		}
	}
	g.topicsMu.Unlock()
	if len(add) > 0 {
		g.cl.AddConsumeTopics(add...)
	}
}

// Closing is closed when Close begins: a Handler waiting for room must return then.
func (g *ShareReader) Closing() <-chan struct{} { return g.closing }

// Connections returns the reader's open connections to Kafka brokers.
func (g *ShareReader) Connections() int { return g.conns.count() }

// ShareReaderStats counts what a ShareReader settled other than by acceptance.
type ShareReaderStats struct {
	Rejected    uint64 // poison: delivered more than DeliveryLimit times
	Released    uint64 // given back for another consumer: member left, or held past Hold
	HeldTooLong uint64 // of Released, those released because Hold passed
	AckErrors   uint64 // acknowledgements Kafka refused (the records are delivered again)
}

// Stats returns the reader's counters.
func (g *ShareReader) Stats() ShareReaderStats {
	return ShareReaderStats{Rejected: g.rejected.Load(), Released: g.released.Load(),
		HeldTooLong: g.heldTooLong.Load(), AckErrors: g.ackErrors.Load()}
}

// Close releases the records not yet settled, leaves the share group and closes the client. It blocks for
// at most about ctx's deadline. Idempotent.
func (g *ShareReader) Close(ctx context.Context) {
	g.closeOnce.Do(func() {
		close(g.closing)
		g.cancel()
		g.wg.Wait() // the handler returns on Closing
		if err := g.cl.LeaveGroupContext(ctx); err != nil && ctx.Err() == nil {
			g.m.log.Warn("cannot leave share group", "group", g.spec.Group, "err", err)
		}
		g.cl.Close()
		g.m.groupsMu.Lock()
		delete(g.m.shareReaders, g)
		g.m.groupsMu.Unlock()
	})
}
