package kafkamux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A GroupReader reads the messages topic, and any further Kafka topics it is given (topics that route rules
// send MQTT messages to), as one member of a Kafka consumer group: the group's members (one per Ferry
// instance that takes part) split the partitions of every topic between them, so each record reaches exactly
// one of them. MQTT shared subscriptions use one group per share group and filter (server/share.go).
//
// It is the one place where Ferry opens Kafka connections that depend on what MQTT clients do: every
// GroupReader has its own franz-go client (a consumer group member cannot share the instance's client,
// whose reader follows every partition), which holds up to three connections per broker it talks to — one
// for metadata, heartbeats and commits, one for fetches, one for JoinGroup/SyncGroup — plus, while it
// bootstraps, one to a seed address. The server caps how many exist at once (--max-share-groups).
//
// Offsets are committed only as the owner says they are safe ([GroupSpec.Revoked] and
// [GroupSpec.Committable]): a member that dies or loses partitions in a rebalance leaves the next owner to
// start at the first record not yet completed, so records are delivered at least once.
type GroupReader struct {
	m     *Mux
	topic string // the main topic (the messages topic)
	spec  GroupSpec
	cl    *kgo.Client
	conns *connTracker

	topicsMu sync.Mutex
	topics   map[string]struct{} // every topic read: topic, spec.Topics and those of AddTopics

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing chan struct{} // closed when Close begins

	closeOnce sync.Once
}

// GroupHandler receives one record a [GroupReader] read, with the Kafka topic it was read from.
type GroupHandler func(topic string, partition int32, offset int64, msg *Message)

// TopicPartitions lists partitions by Kafka topic; TopicOffsets gives an offset per partition by Kafka topic.
type (
	TopicPartitions = map[string][]int32
	TopicOffsets    = map[string]map[int32]int64
)

// GroupSpec configures [Mux.JoinGroup]. The callbacks other than Handler run on franz-go's group goroutine,
// one at a time.
type GroupSpec struct {
	// Group is the Kafka consumer group id.
	Group string
	// Topics are Kafka topics the member reads besides the main topic given to JoinGroup (the messages
	// topic); [GroupReader.AddTopics] adds more. Every member of a group should read the same topics: a
	// topic's partitions are split only between the members that read it.
	Topics []string
	// Begin is where each partition starts, by topic, when the group has no member anywhere (a group that
	// was empty is reset to it, so that a share group whose last member left long ago does not replay what
	// was published meanwhile). A partition with no committed offset starts at its end in the main topic,
	// as it always did; in the other topics at its Begin offset (members elsewhere never read that topic,
	// e.g. they run without the route rule), or, if Begin does not name it, at its start: a topic added
	// later ([GroupReader.AddTopics]) is one found after the member joined, whose records are new.
	Begin TopicOffsets
	// Handler receives the records of the partitions assigned to this member, in offset order per
	// partition, on the reader's own goroutine. Unlike a [Handler] of Follow it may block (it is the
	// group's backpressure), but a rebalance waits while it does (the reader polls with
	// BlockRebalanceOnPoll, so no record of a revoked partition is ever handed on after Revoked): it must
	// not block for anything near the rebalance timeout (30s), or this member is dropped from the group.
	Handler GroupHandler
	// Weight is this member's share of the partitions, sent with every join: each topic's partitions are
	// split between the members that read it in proportion to their weights, in partition order, the
	// remainders going to the members furthest below their share over all topics so far. At least 1.
	Weight func() int
	// Assigned is called with the partitions this member starts reading.
	Assigned func(parts TopicPartitions)
	// Revoked is called before partitions go elsewhere (rebalance, leave, close). It may wait briefly for
	// work in progress, and returns, per partition, the offset to commit (first record not completed);
	// partitions it leaves out are not committed.
	Revoked func(parts TopicPartitions) TopicOffsets
	// Lost is called when partitions were taken away without a chance to commit (session timeout).
	Lost func(parts TopicPartitions)
	// Committable returns the offsets safe to commit now; called every CommitEvery.
	Committable func() TopicOffsets
	// CommitEvery is how often offsets are committed. Default 1s.
	CommitEvery time.Duration
	// Heartbeat is the group heartbeat interval, which bounds how quickly a rebalance starts. Default 1s;
	// the session timeout is ten times it.
	Heartbeat time.Duration
}

// JoinGroup creates a member of spec.Group reading topic (the messages topic) and spec.Topics. It blocks for a
// few Kafka round trips (describe the group, possibly reset its offsets, create the client) but not until
// partitions are assigned: that happens in the background and is reported to spec.Assigned. Call it off the
// event loops.
func (m *Mux) JoinGroup(ctx context.Context, topic string, spec GroupSpec) (*GroupReader, error) {
	if spec.Handler == nil || spec.Revoked == nil || spec.Committable == nil || spec.Weight == nil {
		return nil, fmt.Errorf("cannot join consumer group %q: missing callback", spec.Group)
	}
	if spec.CommitEvery <= 0 {
		spec.CommitEvery = time.Second
	}
	if spec.Heartbeat <= 0 {
		spec.Heartbeat = time.Second
	}
	if m.ctx.Err() != nil {
		return nil, fmt.Errorf("cannot join consumer group %q: %w", spec.Group, ErrClosed)
	}
	if err := m.resetIfEmpty(ctx, spec); err != nil {
		return nil, err
	}
	g := &GroupReader{m: m, topic: topic, spec: spec, conns: newConnTracker(), closing: make(chan struct{}),
		topics: map[string]struct{}{topic: {}}}
	topics := []string{topic}
	for _, t := range spec.Topics {
		if _, dup := g.topics[t]; !dup {
			g.topics[t] = struct{}{}
			topics = append(topics, t)
		}
	}
	opts := append(m.kgoOpts(m.seeds, false),
		kgo.WithHooks(g.conns), kgo.RetryBackoffFn(retryBackoff),
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(&weightedBalancer{weight: spec.Weight}),
		kgo.HeartbeatInterval(spec.Heartbeat),
		kgo.SessionTimeout(10*spec.Heartbeat),
		kgo.RebalanceTimeout(30*time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), // only for a partition no member ever committed
		kgo.AdjustFetchOffsetsFn(g.adjustOffsets),
		kgo.OnPartitionsAssigned(g.assigned),
		kgo.OnPartitionsRevoked(g.revoked),
		kgo.OnPartitionsLost(g.lost),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot join consumer group %q: %w", spec.Group, err)
	}
	g.cl = cl
	g.ctx, g.cancel = context.WithCancel(context.Background())
	m.groupsMu.Lock()
	if m.ctx.Err() != nil { // Close ran meanwhile: it will not close this one
		m.groupsMu.Unlock()
		cl.Close()
		return nil, fmt.Errorf("cannot join consumer group %q: %w", spec.Group, ErrClosed)
	}
	if m.groups == nil {
		m.groups = make(map[*GroupReader]struct{})
	}
	m.groups[g] = struct{}{}
	m.groupsMu.Unlock()
	g.wg.Add(2)
	go g.read()
	go g.commitLoop()
	return g, nil
}

// resetIfEmpty commits spec.Begin for a group that has no member: the state a share group is in before its
// first member anywhere subscribes, or after its last one everywhere left.
func (m *Mux) resetIfEmpty(ctx context.Context, spec GroupSpec) error {
	described, err := m.adm.DescribeGroups(ctx, spec.Group)
	if err != nil {
		return fmt.Errorf("cannot join consumer group %q: cannot describe it: %w", spec.Group, err)
	}
	if d, ok := described[spec.Group]; ok && d.Err == nil && d.State != "Empty" && d.State != "Dead" && d.State != "" {
		return nil // members elsewhere: their commits are where this member continues
	}
	if len(spec.Begin) == 0 {
		return nil
	}
	resp, err := m.adm.CommitOffsets(ctx, spec.Group, kadmOffsets(spec.Begin))
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("cannot join consumer group %q: cannot set its start offsets: %w", spec.Group, err)
	}
	return nil
}

// read polls the group's assigned partitions and hands each record to the handler.
func (g *GroupReader) read() {
	defer g.wg.Done()
	for {
		// Rebalances wait until AllowRebalance: a batch is handled under the assignment it was fetched for.
		// Small batches keep that wait short.
		fetches := g.cl.PollRecords(g.ctx, 256)
		if g.ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if ok, n := g.m.rl.Allow("group fetch:" + err.Error()); ok {
				g.m.log.Warn("cannot read from Kafka for a consumer group", "group", g.spec.Group, "topic", t,
					"partition", p, "err", err, "suppressed", n)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Attrs.IsControl() {
				return
			}
			msg, err := MessageFromRecord(r)
			if err != nil {
				return // the shared reader counts and logs it (Mux.Skipped)
			}
			g.spec.Handler(r.Topic, r.Partition, r.Offset, msg)
		})
		g.cl.AllowRebalance()
	}
}

// commitLoop commits what is safe every CommitEvery.
func (g *GroupReader) commitLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.spec.CommitEvery)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		g.commit(g.ctx, g.spec.Committable())
	}
}

// commit commits offs, logging a failure (the next commit retries; a rebalance meanwhile re-delivers).
func (g *GroupReader) commit(ctx context.Context, offs TopicOffsets) {
	eo := make(map[string]map[int32]kgo.EpochOffset, len(offs))
	for t, parts := range offs {
		if len(parts) == 0 {
			continue
		}
		tp := make(map[int32]kgo.EpochOffset, len(parts))
		for p, o := range parts {
			tp[p] = kgo.EpochOffset{Epoch: -1, Offset: o}
		}
		eo[t] = tp
	}
	if len(eo) == 0 {
		return
	}
	g.cl.CommitOffsetsSync(ctx, eo,
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
			if err != nil && ctx.Err() == nil {
				if ok, n := g.m.rl.Allow("group commit:" + g.spec.Group); ok {
					g.m.log.Warn("cannot commit consumer group offsets", "group", g.spec.Group, "err", err, "suppressed", n)
				}
			}
		})
}

// adjustOffsets starts the partitions without a committed offset of topics other than the main one at their
// Begin offset or their start (see GroupSpec.Begin). It runs after Assigned, before any fetch of the assigned
// partitions.
func (g *GroupReader) adjustOffsets(_ context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for t, parts := range offs {
		if t == g.topic {
			continue
		}
		for p, o := range parts {
			if o.EpochOffset().Offset >= 0 {
				continue // committed
			}
			if b, ok := g.spec.Begin[t][p]; ok {
				parts[p] = kgo.NewOffset().At(b)
			} else {
				parts[p] = kgo.NewOffset().AtStart()
			}
		}
	}
	return offs, nil
}

// nonEmpty reports whether a lists a partition.
func nonEmpty(a map[string][]int32) bool {
	for _, parts := range a {
		if len(parts) > 0 {
			return true
		}
	}
	return false
}

func (g *GroupReader) assigned(_ context.Context, _ *kgo.Client, a map[string][]int32) {
	if nonEmpty(a) && g.spec.Assigned != nil {
		g.spec.Assigned(a)
	}
}

func (g *GroupReader) revoked(ctx context.Context, _ *kgo.Client, r map[string][]int32) {
	if !nonEmpty(r) {
		return
	}
	g.commit(ctx, g.spec.Revoked(r))
}

func (g *GroupReader) lost(_ context.Context, _ *kgo.Client, l map[string][]int32) {
	if nonEmpty(l) && g.spec.Lost != nil {
		g.spec.Lost(l)
	}
}

// AddTopics makes the member read more Kafka topics (routed topics found after it joined); topics it reads
// already are ignored. The group rebalances once the client's metadata shows them; partitions without a
// committed offset start at their start. It does not block.
func (g *GroupReader) AddTopics(topics ...string) {
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

// Rebalance asks the group to rebalance because this member's weight changed.
func (g *GroupReader) Rebalance() { g.cl.ForceRebalance() }

// Closing is closed when Close begins: a Handler waiting for room must return then (Close waits for it).
func (g *GroupReader) Closing() <-chan struct{} { return g.closing }

// Connections returns the reader's open connections to Kafka brokers.
func (g *GroupReader) Connections() int { return g.conns.count() }

// Close commits (through Revoked), leaves the group so the partitions move to the other members at once,
// and closes the client. It blocks for at most about ctx's deadline. Idempotent.
func (g *GroupReader) Close(ctx context.Context) {
	g.closeOnce.Do(func() {
		close(g.closing)
		if err := g.cl.LeaveGroupContext(ctx); err != nil && ctx.Err() == nil {
			g.m.log.Warn("cannot leave consumer group", "group", g.spec.Group, "err", err)
		}
		g.cancel()
		g.cl.Close()
		g.wg.Wait()
		g.m.groupsMu.Lock()
		delete(g.m.groups, g)
		g.m.groupsMu.Unlock()
	})
}

// GroupConnections returns the open connections of all the instance's GroupReaders.
func (m *Mux) GroupConnections() int {
	m.groupsMu.Lock()
	defer m.groupsMu.Unlock()
	n := 0
	for g := range m.groups {
		n += g.Connections()
	}
	for g := range m.shareReaders {
		n += g.Connections()
	}
	return n
}

// closeGroups closes the GroupReaders still open, for Close.
func (m *Mux) closeGroups() {
	m.groupsMu.Lock()
	gs := make([]*GroupReader, 0, len(m.groups))
	for g := range m.groups {
		gs = append(gs, g)
	}
	ss := make([]*ShareReader, 0, len(m.shareReaders))
	for g := range m.shareReaders {
		ss = append(ss, g)
	}
	m.groupsMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.closeTimeout)
	defer cancel()
	for _, g := range gs {
		g.Close(ctx)
	}
	for _, g := range ss {
		g.Close(ctx)
	}
}

// weightedBalancer is an eager group balancer that splits each topic's partitions between the members that
// read it in proportion to their weights, which travel in the member metadata's user data. Ferry weighs an
// instance by its number of local members of a share group, so that members, not instances, get equal
// shares. With several topics (the messages topic and routed topics) the remainders of one topic go to the
// members furthest below their share of the partitions handed out so far, so that the ties of a topic do not
// all favour the same member: over all topics each member's count stays within one partition of its share.
type weightedBalancer struct{ weight func() int }

func (*weightedBalancer) ProtocolName() string { return "ferry-weighted" }
func (*weightedBalancer) IsCooperative() bool  { return false }

func (b *weightedBalancer) JoinGroupMetadata(topics []string, _ map[string][]int32, _ int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 0
	meta.Topics = topics
	meta.UserData = binary.BigEndian.AppendUint32(nil, uint32(max(b.weight(), 1)))
	return meta.AppendTo(nil)
}

func (*weightedBalancer) ParseSyncAssignment(a []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(a)
}

func (b *weightedBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	if err != nil {
		return nil, nil, err
	}
	return cb, cb.MemberTopics(), nil
}

// Balance runs on the group leader.
func (*weightedBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	plan := cb.NewPlan()
	members := cb.Members()
	weights := make([]int, len(members))
	reads := make([]map[string]bool, len(members))
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		w := 1
		if len(meta.UserData) == 4 {
			w = max(int(binary.BigEndian.Uint32(meta.UserData)), 1)
		}
		for i := range members {
			if members[i].MemberID == m.MemberID {
				weights[i] = w
				reads[i] = make(map[string]bool, len(meta.Topics))
				for _, t := range meta.Topics {
					reads[i][t] = true
				}
			}
		}
	})
	names := make([]string, 0, len(topics))
	for topic := range cb.MemberTopics() {
		names = append(names, topic)
	}
	for topic, quota := range splitTopics(names, topics, weights, reads) {
		next := int32(0)
		for i := range members {
			if quota[i] == 0 {
				continue
			}
			parts := make([]int32, quota[i])
			for j := range parts {
				parts[j] = next
				next++
			}
			plan.AddPartitions(&members[i], topic, parts)
		}
	}
	return plan
}

// splitTopics returns, per topic, how many of its partitions (counts) each member gets: members that do not
// read a topic (reads) get none of it, the others shares in proportion to weights; a remainder partition goes
// to the member furthest below its share over the topics split so far (topics in name order), ties to the
// earlier member. With one topic it is apportion.
func splitTopics(names []string, counts map[string]int32, weights []int, reads []map[string]bool) map[string][]int {
	sort.Strings(names)
	out := make(map[string][]int, len(names))
	deficit := make([]float64, len(weights)) // share so far minus partitions given so far
	for _, topic := range names {
		n := int(counts[topic])
		quota := make([]int, len(weights))
		out[topic] = quota
		total := 0
		for i, w := range weights {
			if reads[i][topic] {
				total += w
			}
		}
		if total == 0 || n <= 0 {
			continue
		}
		given := 0
		var cand []int
		for i, w := range weights {
			if !reads[i][topic] {
				continue
			}
			quota[i] = n * w / total
			given += quota[i]
			deficit[i] += float64(n*w)/float64(total) - float64(quota[i])
			cand = append(cand, i)
		}
		sort.SliceStable(cand, func(a, b int) bool { return deficit[cand[a]] > deficit[cand[b]]+1e-9 })
		for k := 0; given < n; k++ {
			i := cand[k%len(cand)]
			quota[i]++
			deficit[i]--
			given++
		}
	}
	return out
}

// apportion splits n items in proportion to weights by the largest remainder method; ties go to the
// earlier member.
func apportion(n int, weights []int) []int {
	total := 0
	for _, w := range weights {
		total += w
	}
	quota := make([]int, len(weights))
	if total == 0 {
		return quota
	}
	type rem struct{ i, r int }
	rems := make([]rem, len(weights))
	given := 0
	for i, w := range weights {
		quota[i] = n * w / total
		given += quota[i]
		rems[i] = rem{i, n * w % total}
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; given < n; k++ {
		quota[rems[k%len(rems)].i]++
		given++
	}
	return quota
}

// kadmOffsets is o as the offsets kadm commits or alters.
func kadmOffsets(o TopicOffsets) kadm.Offsets {
	offs := make(kadm.Offsets)
	for t, parts := range o {
		for p, at := range parts {
			offs.Add(kadm.Offset{Topic: t, Partition: p, At: at, LeaderEpoch: -1})
		}
	}
	return offs
}
