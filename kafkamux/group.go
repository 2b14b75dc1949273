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

// A GroupReader reads the messages topic as one member of a Kafka consumer group: the group's members (one
// per Ferry instance that takes part) split the partitions between them, so each record reaches exactly one
// of them. MQTT shared subscriptions use one group per share group and filter (server/share.go).
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
	topic string
	spec  GroupSpec
	cl    *kgo.Client
	conns *connTracker

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing chan struct{} // closed when Close begins

	closeOnce sync.Once
}

// GroupSpec configures [Mux.JoinGroup]. The callbacks other than Handler run on franz-go's group goroutine,
// one at a time.
type GroupSpec struct {
	// Group is the Kafka consumer group id.
	Group string
	// Begin is where each partition starts when the group has no member anywhere (a group that was empty
	// is reset to it, so that a share group whose last member left long ago does not replay what was
	// published meanwhile). Partitions it does not name start at their end.
	Begin map[int32]int64
	// Handler receives the records of the partitions assigned to this member, in offset order per
	// partition, on the reader's own goroutine. Unlike a [Handler] of Follow it may block (it is the
	// group's backpressure), but a rebalance waits while it does (the reader polls with
	// BlockRebalanceOnPoll, so no record of a revoked partition is ever handed on after Revoked): it must
	// not block for anything near the rebalance timeout (30s), or this member is dropped from the group.
	Handler Handler
	// Weight is this member's share of the partitions, sent with every join: partitions are split in
	// proportion to the weights (largest remainder), in partition order. At least 1.
	Weight func() int
	// Assigned is called with the partitions this member starts reading.
	Assigned func(parts []int32)
	// Revoked is called before partitions go elsewhere (rebalance, leave, close). It may wait briefly for
	// work in progress, and returns, per partition, the offset to commit (first record not completed);
	// partitions it leaves out are not committed.
	Revoked func(parts []int32) map[int32]int64
	// Lost is called when partitions were taken away without a chance to commit (session timeout).
	Lost func(parts []int32)
	// Committable returns the offsets safe to commit now; called every CommitEvery.
	Committable func() map[int32]int64
	// CommitEvery is how often offsets are committed. Default 1s.
	CommitEvery time.Duration
	// Heartbeat is the group heartbeat interval, which bounds how quickly a rebalance starts. Default 1s;
	// the session timeout is ten times it.
	Heartbeat time.Duration
}

// JoinGroup creates a member of spec.Group reading topic (the messages topic). It blocks for a few Kafka
// round trips (describe the group, possibly reset its offsets, create the client) but not until partitions
// are assigned: that happens in the background and is reported to spec.Assigned. Call it off the event loops.
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
	if err := m.resetIfEmpty(ctx, topic, spec); err != nil {
		return nil, err
	}
	g := &GroupReader{m: m, topic: topic, spec: spec, conns: newConnTracker(), closing: make(chan struct{})}
	opts := append(m.kgoOpts(m.seeds, false),
		kgo.WithHooks(g.conns), kgo.RetryBackoffFn(retryBackoff),
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(&weightedBalancer{weight: spec.Weight}),
		kgo.HeartbeatInterval(spec.Heartbeat),
		kgo.SessionTimeout(10*spec.Heartbeat),
		kgo.RebalanceTimeout(30*time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), // only for a partition no member ever committed
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
func (m *Mux) resetIfEmpty(ctx context.Context, topic string, spec GroupSpec) error {
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
	offs := make(kadm.Offsets)
	for p, o := range spec.Begin {
		offs.Add(kadm.Offset{Topic: topic, Partition: p, At: o, LeaderEpoch: -1})
	}
	resp, err := m.adm.CommitOffsets(ctx, spec.Group, offs)
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
			if ok, n := g.m.rl.allow("group fetch:" + err.Error()); ok {
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
			g.spec.Handler(r.Partition, r.Offset, msg)
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
func (g *GroupReader) commit(ctx context.Context, offs map[int32]int64) {
	if len(offs) == 0 {
		return
	}
	topic := g.topic
	eo := make(map[int32]kgo.EpochOffset, len(offs))
	for p, o := range offs {
		eo[p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	g.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{topic: eo},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
			if err != nil && ctx.Err() == nil {
				if ok, n := g.m.rl.allow("group commit:" + g.spec.Group); ok {
					g.m.log.Warn("cannot commit consumer group offsets", "group", g.spec.Group, "err", err, "suppressed", n)
				}
			}
		})
}

func (g *GroupReader) assigned(_ context.Context, _ *kgo.Client, a map[string][]int32) {
	if parts := a[g.topic]; len(parts) > 0 && g.spec.Assigned != nil {
		g.spec.Assigned(parts)
	}
}

func (g *GroupReader) revoked(ctx context.Context, _ *kgo.Client, r map[string][]int32) {
	parts := r[g.topic]
	if len(parts) == 0 {
		return
	}
	g.commit(ctx, g.spec.Revoked(parts))
}

func (g *GroupReader) lost(_ context.Context, _ *kgo.Client, l map[string][]int32) {
	if parts := l[g.topic]; len(parts) > 0 && g.spec.Lost != nil {
		g.spec.Lost(parts)
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
	return n
}

// closeGroups closes the GroupReaders still open, for Close.
func (m *Mux) closeGroups() {
	m.groupsMu.Lock()
	gs := make([]*GroupReader, 0, len(m.groups))
	for g := range m.groups {
		gs = append(gs, g)
	}
	m.groupsMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.closeTimeout)
	defer cancel()
	for _, g := range gs {
		g.Close(ctx)
	}
}

// weightedBalancer is an eager group balancer that splits each topic's partitions in proportion to the
// members' weights, which travel in the member metadata's user data. Ferry weighs an instance by its number
// of local members of a share group, so that members, not instances, get equal shares.
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
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		w := 1
		if len(meta.UserData) == 4 {
			w = max(int(binary.BigEndian.Uint32(meta.UserData)), 1)
		}
		for i := range members {
			if members[i].MemberID == m.MemberID {
				weights[i] = w
			}
		}
	})
	for topic := range cb.MemberTopics() {
		quota := apportion(int(topics[topic]), weights)
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
