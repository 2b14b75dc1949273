package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Topics are the Kafka topics the rules of a Table write to, as one instance knows them: an index per topic
// (0 is the messages topic; the server keys delivery positions by it), whether each takes publishes (ready,
// being created, missing), the creation of templated topics on first use, and the discovery of templated
// topics that appear later (created by another instance or by this one).
//
// Topics: fixed rule topics must exist (or are created) when the server starts (Start). Templated ones are
// created on first use when topic creation is on, by a goroutine (the loop never waits for Kafka admin): the
// first records are produced at once and wait in franz-go for the topic's metadata (bounded by its
// unknown-topic retries and the record delivery timeout). With creation off, a publish to a templated topic
// that does not exist yet is refused until discovery finds it. At most MaxTopics routed topics are known per
// instance: clients choose the captures, so a fleet cannot create topics without bound through one instance.
//
// Reading: the server follows every routed topic with its shared reader: fixed ones and templated ones that
// exist at Start from their end (as the messages topic), templated ones found later (listed every
// DiscoverEvery and right after this instance created one) from their start (Host.Follow).
//
// Safe for concurrent use: Route runs on the event loops (and for wills on any goroutine) and never blocks.
type Topics struct {
	tbl                      *Table
	messages, retained, sess string // the messages topic; Ferry's own compacted topics: never a destination
	kafka                    Kafka
	host                     Host
	creatable                bool

	mu          sync.Mutex
	names       atomic.Pointer[[]string] // index → Kafka topic; [0] is the messages topic; copy on write under mu
	index       map[string]uint16        // under mu
	state       sync.Map                 // Kafka topic name → topic state (uint32)
	known       atomic.Int32             // entries in state
	discoverMu  sync.Mutex               // one discovery at a time
	discoverNow chan struct{}
	ctx         context.Context // canceled by Close
	cancel      context.CancelFunc
}

// Kafka is what Topics needs of Kafka: the admin calls, which block (never called on an event loop).
type Kafka interface {
	CreateTopic(ctx context.Context, name string) error
	ListTopicNames(ctx context.Context) ([]string, error)
}

// Host is what Topics needs of the server. Its methods run on Topics' own goroutines and may block.
type Host interface {
	// Follow starts reading routed topics found after Start, from their start.
	Follow(found []Topic) error
	// Followed is told of them once they take publishes, for whatever else reads them (shared subscriptions).
	Followed(found []Topic)
	Warn(msg string, args ...any) // rate-limited
	Logger() *slog.Logger
}

// Topic is a routed Kafka topic and its index.
type Topic struct {
	Index uint16
	Name  string
}

const (
	// DiscoverEvery is how often the cluster's topics are listed to find templated routed ones.
	DiscoverEvery = 10 * time.Second
	// MaxTopics bounds the routed topics one instance knows.
	MaxTopics = 10000
)

// Reasons a publish is refused by routing, for ferry_route_refused_total{reason}.
const (
	Unrouted = iota // no rule matches, --route-unrouted=refuse
	Illegal         // the rule builds an illegal Kafka topic name
	Missing         // the Kafka topic does not exist and cannot be created (or the limit is reached)
	Refusals
)

// RefusalNames are the label values of the refusals, by index.
var RefusalNames = [Refusals]string{"unrouted", "illegal_topic", "topic_missing"}

// RefusalWhy are the reason strings a v5 client is told with a refusal, by index.
var RefusalWhy = [Refusals]string{"no route for topic", "routed Kafka topic name is not legal", "routed Kafka topic does not exist"}

// topic states in Topics.state
const (
	topicReady uint32 = iota
	topicCreating
	topicMissing
	topicCreated // created by this instance, not followed yet
)

// NewTopics prepares the topics of tbl, whose default is the messages topic. retained and sessions are
// Ferry's compacted topics, which no rule may name; creatable says whether topics may be created.
func NewTopics(tbl *Table, retained, sessions string, creatable bool, kafka Kafka, host Host) (*Topics, error) {
	for _, r := range tbl.Rules() {
		if f, ok := r.Fixed(); ok && (f == retained || f == sessions) {
			return nil, fmt.Errorf("route %q: %q is Ferry's retained or sessions topic", r.Spec, f)
		}
	}
	ts := &Topics{tbl: tbl, messages: tbl.Default(), retained: retained, sess: sessions, kafka: kafka, host: host,
		creatable: creatable, index: map[string]uint16{tbl.Default(): 0}, discoverNow: make(chan struct{}, 1)}
	names := []string{ts.messages}
	ts.names.Store(&names)
	ts.ctx, ts.cancel = context.WithCancel(context.Background())
	return ts, nil
}

// Table returns the rules.
func (ts *Topics) Table() *Table { return ts.tbl }

// Name returns the Kafka topic of index t.
func (ts *Topics) Name(t uint16) string { return (*ts.names.Load())[t] }

// Index returns the index of a routed topic this instance follows.
func (ts *Topics) Index(name string) (uint16, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.index[name]
	return t, ok
}

// register gives a Kafka topic an index. It reports false when the index space is full.
func (ts *Topics) register(name string) (uint16, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t, ok := ts.index[name]; ok {
		return t, true
	}
	names := *ts.names.Load()
	if len(names) > MaxTopics {
		return 0, false
	}
	next := append(slices.Clip(names), name)
	t := uint16(len(names))
	ts.index[name] = t
	ts.names.Store(&next)
	return t, true
}

// ownTopic reports whether name is one of Ferry's compacted topics, which no route may write to.
func (ts *Topics) ownTopic(name string) bool { return name == ts.retained || name == ts.sess }

// Route decides where a message to topic goes: res.Topic is "" for the messages topic. It never blocks; it may
// start a goroutine that creates the Kafka topic. reason (one of Unrouted, Illegal, Missing) is valid when ok
// is false.
func (ts *Topics) Route(topic string) (res Result, reason int, ok bool) {
	res, err := ts.tbl.Route(topic)
	switch {
	case errors.Is(err, ErrUnrouted):
		return res, Unrouted, false
	case err != nil:
		return res, Illegal, false
	}
	if res.Rule < 0 || res.Topic == ts.messages {
		res.Topic = ""
		return res, 0, true
	}
	if ts.ownTopic(res.Topic) {
		return res, Illegal, false
	}
	v, found := ts.state.Load(res.Topic)
	if !found {
		if !ts.creatable || ts.known.Load() >= MaxTopics {
			return res, Missing, false // discovery marks it ready once it exists
		}
		if v, found = ts.state.LoadOrStore(res.Topic, topicCreating); !found {
			ts.known.Add(1)
			go ts.create(res.Topic)
			return res, 0, true
		}
	}
	if v.(uint32) == topicMissing {
		return res, Missing, false
	}
	return res, 0, true // ready, or being created: franz-go holds the records until the topic's metadata shows
}

// create creates a routed topic on first use and has discovery follow it. Runs on its own goroutine.
func (ts *Topics) create(name string) {
	ctx, cancel := context.WithTimeout(ts.ctx, 30*time.Second)
	err := ts.kafka.CreateTopic(ctx, name)
	cancel()
	if err != nil {
		ts.state.Store(name, topicMissing) // discovery forgets it, so a later publish tries again
		ts.host.Warn("cannot create routed Kafka topic; its publishes are refused", "topic", name, "err", err)
		return
	}
	ts.state.CompareAndSwap(name, topicCreating, topicCreated)
	select {
	case ts.discoverNow <- struct{}{}:
	default:
	}
}

// Start ensures the fixed routed topics exist and lists the templated ones, and returns all of them, to be
// read from their end by the server's first fetch. Once they are followed, the server calls Ready and Run.
func (ts *Topics) Start() ([]Topic, error) {
	ctx, cancel := context.WithTimeout(ts.ctx, 60*time.Second)
	defer cancel()
	have, err := ts.kafka.ListTopicNames(ctx)
	if err != nil {
		return nil, err
	}
	var follow []string
	for _, f := range ts.tbl.FixedTopics() {
		if f == ts.messages {
			continue
		}
		if !slices.Contains(have, f) {
			if err := ts.kafka.CreateTopic(ctx, f); err != nil {
				return nil, fmt.Errorf("routed Kafka topic %q does not exist: %w", f, err)
			}
		}
		follow = append(follow, f)
	}
	for _, n := range have {
		if ts.templated(n) && !slices.Contains(follow, n) {
			follow = append(follow, n)
		}
	}
	out := make([]Topic, 0, len(follow))
	for _, n := range follow {
		t, ok := ts.register(n)
		if !ok {
			ts.host.Logger().Warn("too many routed Kafka topics; not following", "topic", n, "limit", MaxTopics)
			continue
		}
		out = append(out, Topic{t, n})
	}
	return out, nil
}

// templated reports whether a listed Kafka topic is one a templated rule could write.
func (ts *Topics) templated(name string) bool {
	if name == ts.messages || ts.ownTopic(name) {
		return false
	}
	for _, r := range ts.tbl.Templated() {
		if r.MatchesTemplate(name) {
			return true
		}
	}
	return false
}

// Ready records that topics are followed and take publishes.
func (ts *Topics) Ready(topics []Topic) {
	for _, t := range topics {
		if _, loaded := ts.state.Swap(t.Name, topicReady); !loaded {
			ts.known.Add(1)
		}
	}
}

// ReadyFor returns the routed Kafka topics that are followed and may hold messages matching filter
// (Table.MayHold), without the messages topic.
func (ts *Topics) ReadyFor(filter string) []string {
	var out []string
	for _, name := range (*ts.names.Load())[1:] {
		if v, ok := ts.state.Load(name); ok && v.(uint32) == topicReady && ts.tbl.MayHold(filter, name) {
			out = append(out, name)
		}
	}
	return out
}

// Run follows templated routed topics as they appear. Runs on its own goroutine until Close.
func (ts *Topics) Run() {
	t := time.NewTimer(DiscoverEvery)
	defer t.Stop()
	for {
		select {
		case <-ts.ctx.Done():
			return
		case <-t.C:
		case <-ts.discoverNow:
		}
		// The topic list comes from metadata, which the client may serve from a cache younger than its
		// metadata min age (500 ms): a topic just created may be missing, so look again soon.
		next := DiscoverEvery
		if ts.discover() {
			next = 300 * time.Millisecond
		}
		t.Stop()
		t.Reset(next)
	}
}

// Close stops Run and the creation of topics.
func (ts *Topics) Close() { ts.cancel() }

// discover lists the cluster's topics and follows, from their start, templated routed topics not followed yet.
// Topics whose creation failed are forgotten, so the next publish tries again. It reports whether a topic this
// instance created is still not followed.
func (ts *Topics) discover() (pending bool) {
	ts.discoverMu.Lock()
	defer ts.discoverMu.Unlock()
	ctx, cancel := context.WithTimeout(ts.ctx, DiscoverEvery)
	have, err := ts.kafka.ListTopicNames(ctx)
	cancel()
	if err != nil {
		if ts.ctx.Err() == nil {
			ts.host.Warn("cannot list Kafka topics to find routed ones", "err", err)
		}
		return true
	}
	var found []Topic
	for _, n := range have {
		if v, ok := ts.state.Load(n); ok && v.(uint32) == topicReady {
			continue
		}
		if !ts.templated(n) {
			continue
		}
		if t, ok := ts.register(n); ok {
			found = append(found, Topic{t, n})
		}
	}
	if len(found) > 0 {
		if err := ts.host.Follow(found); err != nil {
			ts.host.Warn("cannot follow routed Kafka topics; retrying", "err", err)
			return true
		}
		ts.Ready(found)
		for _, t := range found {
			ts.host.Logger().Info("following routed Kafka topic", "topic", t.Name)
		}
		ts.host.Followed(found)
	}
	ts.state.Range(func(k, v any) bool {
		switch v.(uint32) {
		case topicMissing:
			if ts.state.CompareAndDelete(k, v) {
				ts.known.Add(-1)
			}
		case topicCreated:
			pending = true
		}
		return true
	})
	return pending
}
