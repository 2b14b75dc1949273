// Package share is the machinery of Ferry's shared subscriptions, "$share/{ShareName}/{filter}" [MQTT 5.0
// §4.8.2], also accepted from v3.1.1 clients: the share groups, the Kafka consumer groups or Kafka share groups
// that feed them, and the commits. The server keeps the MQTT side (SUBSCRIBE, sessions, sending) and reaches
// this package through Registry; this package reaches the server through the small interfaces Host and
// Member it declares, and Kafka through Kafka.
//
// A shared subscription is identified by its share name AND its filter, so a share group here is one
// (name, filter) pair, keyed by the subscribed string. Each record that matches the filter goes to exactly one
// member of the group, across all instances:
//
//   - Across instances, a Kafka consumer group per share group ("<prefix><name>/<filter>") splits the
//     partitions of the Kafka topics it reads between the instances that have online members. Each such
//     instance reads its partitions through the group's own franz-go client (kafkamux/group.go) — not through
//     the shared reader, so the server's trie and onRecord know nothing of shared subscriptions and the non-shared hot
//     path costs exactly what it did. Partitions are split in proportion to each instance's number of local
//     members (kafkamux's weighted balancer, topic by topic), so members, not instances, get equal shares — at
//     the granularity of partitions: the split is fair when the group's traffic is spread over the
//     partitions, and an instance gets nothing when there are fewer partitions than instances with members.
//   - The Kafka topics read are those a non-shared subscription to the filter receives from (the server's
//     routing, Host.Topics): the
//     messages topic and every routed topic this instance follows that a rule able to match the filter can
//     produce (route.Table.MayHold) — fixed ones and templated ones found at start, and templated ones found
//     later, which discovery adds to every group concerned (Registry.AddTopics) and which the group reads from their
//     start unless it committed offsets in them (a routed topic read since the group started on this
//     instance and without commits starts where the shared reader was then: GroupSpec.Begin). A record whose
//     MQTT topic does not route to the Kafka topic it is in is skipped, as the shared reader skips it
//     (counted there only). Without route rules the group reads the messages topic alone, as it always did.
//   - On one instance, each matching record goes to the next online member in round-robin order that has
//     room (queued + unacknowledged messages below its window, min(Receive Maximum, MaxInFlight), plus
//     maxQueued): members that keep up get strictly equal shares, and one that falls behind is skipped
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
// Locks: Registry.mu, then Group.mu, then the member's own lock (a session's, taken inside Member's methods),
// then Group.pmu (a leaf). The Kafka group's callbacks take Group.mu and pmu, never the registry lock while
// holding them.
package share

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ferrymq/ferry/kafkamux"
)

// Opt configures a Registry. Options follow franz-go's style, as the server's do: an interface over an
// unexported config with defaults and validation.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	enabled     bool          // shared subscriptions are offered
	maxGroups   int           // share groups this instance takes part in at once
	prefix      string        // Kafka group id prefix
	heartbeat   time.Duration // Kafka group heartbeat; bounds how fast partitions move
	commitEvery time.Duration // how often offsets are committed
	revokeWait  time.Duration // how long a rebalance waits for acknowledgements before committing

	mode          string        // ModeAuto, ModeShareGroup or ModeConsumerGroup (sharegroup.go)
	deliveryLimit int           // share-group mode: deliveries before a record is rejected as poison
	hold          time.Duration // share-group mode: how long a record may wait for an acknowledgement
}

func (c *cfg) defaults() {
	c.enabled = true
	c.maxGroups = 100
	c.prefix = "ferry-share-"
	c.heartbeat = time.Second
	c.commitEvery = time.Second
	c.revokeWait = 2 * time.Second
	c.mode = ModeAuto
	c.deliveryLimit = 4
	c.hold = 20 * time.Second
}

func (c *cfg) validate() error {
	switch {
	case c.maxGroups < 0:
		return fmt.Errorf("max share groups must not be negative, not %d", c.maxGroups)
	case c.prefix == "":
		return errors.New("the share group prefix must not be empty")
	case c.heartbeat <= 0 || c.commitEvery <= 0 || c.revokeWait < 0:
		return fmt.Errorf("share group timings %v, %v, %v: want positive heartbeat and commit intervals", c.heartbeat, c.commitEvery, c.revokeWait)
	}
	return c.validateMode() // sharegroup.go
}

// Enabled offers shared subscriptions or not. Default true. A Registry does not refuse by itself: its user
// asks Enabled before a Join (the server, off, refuses them with 0x9E and its CONNACK says Shared
// Subscription Available = 0).
func Enabled(on bool) Opt { return opt(func(c *cfg) { c.enabled = on }) }

// MaxGroups caps the share groups (share name + filter) this instance takes part in at once: a Join that
// would start one more reports false (the server refuses that SUBSCRIBE with 0x97 Quota Exceeded). Each costs
// a Kafka consumer group or share group member with its own franz-go client (up to 3 connections per broker
// in consumer-group mode; in share-group mode one per broker leading a partition it reads plus one to the
// coordinator, docs/operations.md). Default 100.
func MaxGroups(n int) Opt { return opt(func(c *cfg) { c.maxGroups = n }) }

// GroupPrefix is the prefix of the Kafka consumer or share group ids, followed by "{name}/{filter}". Default
// "ferry-share-".
func GroupPrefix(p string) Opt { return opt(func(c *cfg) { c.prefix = p }) }

// Timings sets the Kafka group heartbeat (consumer-group mode; a rebalance starts within about one, the
// session timeout is ten), how often offsets are committed, and how long a rebalance waits for
// acknowledgements. Defaults 1s, 1s, 2s.
func Timings(heartbeat, commitEvery, revokeWait time.Duration) Opt {
	return opt(func(c *cfg) { c.heartbeat, c.commitEvery, c.revokeWait = heartbeat, commitEvery, revokeWait })
}

// Mode chooses how share groups use Kafka: ModeAuto (default), ModeShareGroup or ModeConsumerGroup.
func Mode(mode string) Opt { return opt(func(c *cfg) { c.mode = mode }) }

// DeliveryLimit is how many times a share-group mode record may be delivered (released by members that
// left) before it is rejected as poison. 1..9; default 4, the group's share.delivery.count.limit being set
// one above it.
func DeliveryLimit(n int) Opt { return opt(func(c *cfg) { c.deliveryLimit = n }) }

// Hold is how long a share-group mode record may wait for a member's acknowledgement before it is released
// for another consumer; keep it below the cluster's group.share.record.lock.duration.ms. Default 20s.
func Hold(d time.Duration) Opt { return opt(func(c *cfg) { c.hold = d }) }

// CheckOptions validates options without building a Registry.
func CheckOptions(opts ...Opt) error {
	_, err := newCfg(opts)
	return err
}

func newCfg(opts []Opt) (cfg, error) {
	var c cfg
	c.defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	return c, c.validate()
}

const (
	// MaxInFlight is how many unacknowledged messages of one member count against its window (≤ its Receive
	// Maximum): Member.Room's window is min(Receive Maximum, MaxInFlight).
	MaxInFlight = 256
	maxQueued   = 64 // messages queued for a member beyond its window before it counts as full
)

// Kafka is what the share groups need of Kafka: joining consumer and share groups.
type Kafka interface {
	JoinGroup(ctx context.Context, topic string, spec kafkamux.GroupSpec) (*kafkamux.GroupReader, error)
	JoinShareGroup(ctx context.Context, topic string, spec kafkamux.ShareSpec) (*kafkamux.ShareReader, error)
	ShareGroupsSupported(ctx context.Context) (bool, error)
	GroupConnections() int // connections held by the group readers
	MessagesTopic() string
}

// Host is what the share groups need of the server: its Kafka topics and routing, its read positions, its
// payload conversion and its log. Its methods may be called from any goroutine.
type Host interface {
	// TopicIndex returns the server's index of a Kafka topic it follows: 0 for the messages topic.
	TopicIndex(name string) (uint16, bool)
	// TopicName returns the Kafka topic of index t.
	TopicName(t uint16) string
	// RoutesTo reports whether a message of MQTT topic mqttTopic belongs in the Kafka topic of index t (always
	// true without route rules).
	RoutesTo(mqttTopic string, t uint16) bool
	// Topics returns the routed Kafka topics the server follows that a subscription to filter reads.
	Topics(filter string) []string
	// MayHold reports whether the routed Kafka topic name may hold messages that match filter.
	MayHold(filter, name string) bool
	// ReadFrom returns where the server's shared reader is in the Kafka topics of the given indexes.
	ReadFrom(topics map[uint16]bool) kafkamux.TopicOffsets
	// Convert turns a record into what subscribers receive (--payload deliver=json); it may wait.
	Convert(m *kafkamux.Message) *kafkamux.Message
	// Stopping reports whether the server is stopping.
	Stopping() bool
	Warn(msg string, args ...any)  // rate-limited warning
	Debug(msg string, args ...any) // rate-limited debug line
}

// Delivery is one record handed to a member.
type Delivery struct {
	Msg    *kafkamux.Message // shared, read-only
	QoS    byte              // min(published, granted)
	Retain bool              // RETAIN flag to send
	Topic  uint16            // Kafka topic index (Host.TopicIndex)
	Part   int32             // partition
	Off    int64             // offset
	SubIDs []uint32          // the subscription identifier, if any
}

// Member is one subscriber of a share group: a session. A Member is compared by identity (==).
type Member interface {
	// Room reports whether the member is online and has room: fewer queued plus unacknowledged messages than
	// its window (min(Receive Maximum, MaxInFlight)) plus queued, and a queue below the session limit.
	Room(queued int) bool
	// Push queues d, delivered for g, and wakes the member's connection. False if the member is offline.
	Push(g *Group, d Delivery) bool
	// Take removes the member's queued messages of g and those sent and not acknowledged (no PUBACK/PUBREC
	// yet), appending them to dst for another member.
	Take(g *Group, dst []Delivery) []Delivery
}

// Opts are a member's subscription options that shape what it receives.
type Opts struct {
	QoS               byte   // granted QoS
	RetainAsPublished bool   // keep the RETAIN flag
	SubID             uint32 // subscription identifier; 0 for none
}

// Registry holds this instance's share groups by subscribed string.
type Registry struct {
	cfg   cfg
	host  Host
	kafka Kafka

	mu       sync.Mutex
	m        map[string]*Group
	handoffs atomic.Uint64 // messages handed from a member that left to another one

	mode        string                    // the mode in use, decided at Start (sharegroup.go)
	closedStats kafkamux.ShareReaderStats // counters of share readers closed since start (sharegroup.go)
}

// NewRegistry returns an empty registry, or what is wrong with opts; ResolveMode decides its mode before the
// first Join.
func NewRegistry(host Host, kafka Kafka, opts ...Opt) (*Registry, error) {
	c, err := newCfg(opts)
	if err != nil {
		return nil, err
	}
	return &Registry{cfg: c, host: host, kafka: kafka}, nil
}

// Enabled reports whether shared subscriptions are offered (the Enabled option).
func (r *Registry) Enabled() bool { return r.cfg.enabled }

// Stats describes this instance's shared subscriptions.
type Stats struct {
	Groups           int    // share groups with local members
	Members          int    // local members, over all groups
	Partitions       int    // partitions (messages topic and routed topics) assigned to this instance, over all groups
	Handoffs         uint64 // messages handed from a member that left to another member, since start
	KafkaConnections int    // connections held by the share groups' Kafka clients

	Mode           string // ModeShareGroup or ModeConsumerGroup (sharegroup.go)
	PoisonRejected uint64 // share-group mode: records rejected after --share-delivery-limit deliveries, since start
	Released       uint64 // share-group mode: records released for another consumer (member left, or held too long)
	HeldTooLong    uint64 // share-group mode: of Released, those held past --share-hold
	AckErrors      uint64 // share-group mode: acknowledgements Kafka refused (those records are delivered again)
}

// Stats returns the state of this instance's shared subscriptions.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	st := Stats{Groups: len(r.m), Handoffs: r.handoffs.Load()}
	gs := make([]*Group, 0, len(r.m))
	for _, g := range r.m {
		gs = append(gs, g)
	}
	r.mu.Unlock()
	for _, g := range gs {
		g.mu.Lock()
		st.Members += len(g.members)
		g.mu.Unlock()
		g.pmu.Lock()
		st.Partitions += len(g.parts)
		g.pmu.Unlock()
	}
	st.KafkaConnections = r.kafka.GroupConnections()
	r.shareGroupStats(&st, gs)
	return st
}

// tp is a partition of a Kafka topic, by the server's topic index.
type tp struct {
	t uint16
	p int32
}

// Group is one share group's local state.
type Group struct {
	r      *Registry
	key    string // "$share/{name}/{filter}"
	filter string

	mu      sync.Mutex
	members []member
	next    int                   // round-robin start
	orphans []Delivery            // messages of members that left, waiting for a member with room
	reader  *kafkamux.GroupReader // nil until joined
	closed  bool                  // no local member any more: leaving the Kafka group
	routed  map[string]bool       // routed Kafka topics the group reads besides the messages topic
	sq      *shareQ               // share-group mode state (sharegroup.go); nil in consumer-group mode

	wake chan struct{} // capacity 1: a member acknowledged something or joined

	pmu      sync.Mutex
	parts    map[tp]*sharePart // partitions assigned to this instance, by Kafka topic index
	revoking map[tp]*sharePart // partitions being revoked, still counting acknowledgements
}

type member struct {
	m Member
	o Opts
}

// sharePart is the progress in one assigned partition (of the messages topic or a routed topic).
type sharePart struct {
	next int64              // first offset not yet read; -1 before the first record
	pend map[int64]struct{} // offsets handed to a member at QoS>0 and not yet acknowledged
}

// Join makes m a member of the share group key (filter is the part after the share name), creating the
// group and joining its Kafka group if it is the first local member; a member already in it gets its new
// options [MQTT-3.8.4-3]. It reports false when the group would exceed the configured maximum of groups.
func (r *Registry) Join(key, filter string, m Member, o Opts) bool {
	r.mu.Lock()
	g := r.m[key]
	create := g == nil
	if create {
		if len(r.m) >= r.cfg.maxGroups {
			r.mu.Unlock()
			return false
		}
		g = &Group{r: r, key: key, filter: filter, wake: make(chan struct{}, 1), parts: make(map[tp]*sharePart)}
		if r.mode == ModeShareGroup {
			g.sq = &shareQ{held: make(map[shareKey]*kafkamux.ShareRecord)}
		}
		if r.m == nil {
			r.m = make(map[string]*Group)
		}
		r.m[key] = g
	}
	g.mu.Lock()
	r.mu.Unlock()
	added := true
	for i := range g.members {
		if g.members[i].m == m {
			g.members[i].o = o // [MQTT-3.8.4-3] replaces the subscription
			added = false
		}
	}
	if added {
		g.members = append(g.members, member{m: m, o: o})
	}
	reader := g.reader
	g.placeOrphansLocked()
	g.mu.Unlock()
	g.signal()
	switch {
	case create:
		// The routed topics are listed after the group is in the registry: a topic discovery makes ready
		// meanwhile is either listed here or added by discovery (AddTopics).
		routed := r.host.Topics(filter)
		g.addTopics(routed)
		read := map[uint16]bool{0: true}
		for _, name := range routed {
			if t, ok := r.host.TopicIndex(name); ok {
				read[t] = true
			}
		}
		// Records from where the shared reader is now: as for a non-shared subscription.
		begin := r.host.ReadFrom(read)
		if g.sq != nil {
			go g.runShare(begin) // sharegroup.go
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
func (g *Group) deliver(part tp, off int64, m *kafkamux.Message) (delivered, gone bool) {
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
	d := Delivery{Msg: m, QoS: min(m.QoS, mem.o.QoS), Retain: m.Retain && mem.o.RetainAsPublished, Topic: part.t, Part: part.p, Off: off}
	if mem.o.SubID != 0 {
		d.SubIDs = []uint32{mem.o.SubID}
	}
	if !g.advance(part, off, d.QoS > 0) {
		return false, true
	}
	if !mem.m.Push(g, d) {
		// The member went offline after it was picked: the message waits for another.
		g.orphans = append(g.orphans, d)
	}
	return true, false
}

// pickLocked returns the index of the next online member, round robin, that has room: fewer queued and
// unacknowledged messages than its window (Receive Maximum, at most MaxInFlight) plus maxQueued (none in
// share-group mode).
// Members that keep up take strict turns, so they get equal shares; one that falls behind is skipped until
// it catches up, so the others take its share. -1 if every member is full. g.mu is held; Room takes each
// member's session lock in turn.
func (g *Group) pickLocked() int {
	n := len(g.members)
	queued := maxQueued
	if g.sq != nil {
		queued = 0 // share-group mode: a record queued for a member is locked from all others (sharegroup.go)
	}
	for k := 0; k < n; k++ {
		i := (g.next + k) % n
		if g.members[i].m.Room(queued) {
			g.next = i + 1
			return i
		}
	}
	return -1
}

// placeOrphansLocked hands the messages of members that left to members with room. g.mu is held.
func (g *Group) placeOrphansLocked() {
	if g.sq != nil {
		g.releaseOrphansLocked() // share-group mode: the broker hands them to another consumer (sharegroup.go)
		return
	}
	for len(g.orphans) > 0 {
		d := g.orphans[0]
		if !g.owns(tp{d.Topic, d.Part}) {
			g.orphans[0] = Delivery{}
			g.orphans = g.orphans[1:] // revoked: its next owner delivers it from the committed offset
			continue
		}
		i := g.pickLocked()
		if i < 0 {
			return
		}
		mem := &g.members[i]
		d.QoS = min(d.Msg.QoS, mem.o.QoS)
		d.Retain = d.Msg.Retain && mem.o.RetainAsPublished
		d.SubIDs = nil
		if mem.o.SubID != 0 {
			d.SubIDs = []uint32{mem.o.SubID}
		}
		if d.QoS == 0 {
			g.Completed(d.Topic, d.Part, d.Off) // at most once from here on
		}
		if !mem.m.Push(g, d) {
			return
		}
		g.orphans[0] = Delivery{}
		g.orphans = g.orphans[1:]
		g.r.handoffs.Add(1)
	}
	g.orphans = nil
}

// placeLater retries placing orphans until none is left or the group closes. Runs on its own goroutine.
func (g *Group) placeLater() {
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

// Leave removes m from the share group key (UNSUBSCRIBE, or its session ends or its connection closed). It
// reports whether m was a member.
func (r *Registry) Leave(key string, m Member) bool {
	r.mu.Lock()
	g := r.m[key]
	r.mu.Unlock()
	return g != nil && g.remove(m)
}

// remove takes m out of the group and hands its queued and unacknowledged messages of the group to the
// other members. When no member is left, the group leaves its Kafka consumer group; the messages m had not
// completed stay uncommitted, so the instance that takes the partitions over delivers them.
func (g *Group) remove(m Member) bool {
	r := g.r
	r.mu.Lock()
	g.mu.Lock()
	idx := -1
	for i := range g.members {
		if g.members[i].m == m {
			idx = i
		}
	}
	if idx < 0 {
		g.mu.Unlock()
		r.mu.Unlock()
		return false
	}
	g.members = append(g.members[:idx], g.members[idx+1:]...)
	if g.next > idx {
		g.next--
	}
	last := len(g.members) == 0
	if last {
		g.closed = true
		if r.m[g.key] == g {
			delete(r.m, g.key)
		}
	}
	r.mu.Unlock()
	g.orphans = m.Take(g, g.orphans)
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

// bytesOf views s as bytes without copying, for mqttcodec.Match; the bytes must not be changed.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
