package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler receives every record of a followed topic, decoded once and
// shared: it runs on the reader goroutine, one record at a time, in offset
// order per partition, and must not block. msg is read-only and may be
// shared by many subscribers; Ferry never mutates it after the call.
type Handler func(partition int32, offset int64, msg *Message)

// Start says where [Mux.FollowFrom] begins reading each partition.
type Start uint8

const (
	// FromEnd reads the records produced after FollowFrom returns.
	FromEnd Start = iota
	// FromStart reads every record still in the log, then keeps following.
	FromStart
)

// follower is one followed topic.
type follower struct {
	topic string
	h     Handler
	raw   func(*kgo.Record)
	parts map[int32]struct{} // partitions being read; guarded by Mux.followMu

	// Catch-up state, guarded by mu (the reader goroutine and the catch-up
	// watch touch it): the partitions still short of the end offset listed
	// when following began, each mapped to the offset that, once read,
	// catches it up (end-1); where each stands (the offset after the last
	// record seen, control records included) and when it last moved.
	// caughtUp is nil once called. catching is false once caught up, so the
	// reader skips mu from then on — except for a raw follower (the sessions
	// topic, few records), whose pos it keeps current for ReadUpTo.
	mu       sync.Mutex
	behind   map[int32]int64
	pos      map[int32]int64
	moved    map[int32]time.Time
	caughtUp func()
	catching atomic.Bool
}

// Follow starts reading every partition of topic from its current end, with
// one reader for the whole instance (the Mux's client, direct partition
// consumption, no consumer group, read_committed): every record produced
// after Follow returns reaches h, once. Partitions added to the topic later
// are found within [PartitionRefresh] and read from their start.
//
// Records whose key is not a valid MQTT topic name, or whose reserved
// headers are invalid, are skipped and counted ([Mux.Skipped]).
//
// A topic can be followed once; Follow fails if the topic does not exist.
// Follow is FollowFrom(topic, FromEnd, h, nil).
func (m *Mux) Follow(topic string, h Handler) error { return m.FollowFrom(topic, FromEnd, h, nil) }

// FollowFrom is [Mux.Follow] with a choice of where to begin and a signal
// for when the past has been read: it is how a compacted topic (retained
// messages) is loaded into memory and then kept current. Everything goes
// through the Mux's one client: no connection is added.
//
// With FromStart, every partition is read from its log start offset. The
// end of each partition is listed when FollowFrom is called (its high
// watermark); caughtUp is called once, after h has been called for every
// record before those ends, on the reader goroutine, and must not block.
// If there is nothing to read (an empty topic, or FromEnd), caughtUp is
// called before FollowFrom returns. After Close it is never called.
// caughtUp may be nil.
//
// A partition counts as read up to its end once the reader has seen a
// record at or past end-1. Control records (transaction markers) count,
// though h never sees them, so a log ending in a commit or abort marker
// catches up too. A transaction open when FollowFrom is called hides the
// records after its start from the read_committed reader until it ends:
// catching up waits for it (at most the transaction timeout), so that every
// record written before FollowFrom has been seen, not only those that were
// visible then.
//
// Tombstones (records with a null value, written to compacted topics to
// delete a key) reach h as a Message with Tombstone set and a nil Payload;
// h tells them from an empty payload by the flag.
//
// Latency: a topic followed while the reader already has a fetch waiting
// at the broker joins the next fetch, which starts when that one returns:
// when records arrive for the topics it reads, or after [FetchMaxWait].
// So the first records of a newly followed topic, and records produced to
// an empty topic that was "caught up" at once, may reach h up to about
// FetchMaxWait (observed: up to twice that) later than records of topics
// already followed. [Mux.FollowAll] adds its topics' partitions in one
// call, which usually puts them all in the first fetch; franz-go may still
// start fetching the first partitions assigned before the rest are, so it
// narrows the window rather than closing it.
func (m *Mux) FollowFrom(topic string, start Start, h Handler, caughtUp func()) error {
	return m.FollowAll(FollowSpec{Topic: topic, Start: start, Handler: h, CaughtUp: caughtUp})
}

// FollowSpec is one topic for [Mux.FollowAll], with the arguments of
// [Mux.FollowFrom].
type FollowSpec struct {
	Topic    string
	Start    Start
	Handler  Handler
	CaughtUp func() // may be nil

	// Raw, if set instead of Handler, receives the records undecoded (control records excepted): for topics
	// whose records are not MQTT messages, such as the sessions topic. Same goroutine rules as Handler.
	Raw func(r *kgo.Record)
	// Started, if set, is called once before any record is handed on, with the offset reading begins at in
	// every partition.
	Started func(begin map[int32]int64)
}

// FollowAll follows several topics at once, each as [Mux.FollowFrom] does,
// with the offsets of all of them listed and their partitions added to the
// reader together, so the first fetch usually reads them all (see the
// latency note on FollowFrom): what a server starting up wants. It follows
// all of them or, with an error, none.
func (m *Mux) FollowAll(specs ...FollowSpec) error {
	upNow, err := m.follow(specs)
	if err != nil {
		return err
	}
	for i := range specs {
		if upNow[i] && specs[i].CaughtUp != nil {
			specs[i].CaughtUp() // nothing to read; called here rather than under followMu
		}
	}
	return nil
}

// follow does the work of FollowAll under followMu and reports, per spec,
// whether there is nothing to catch up on.
func (m *Mux) follow(specs []FollowSpec) (upNow []bool, err error) {
	if len(specs) == 0 {
		return nil, errors.New("cannot follow topics: none given")
	}
	topics := make([]string, len(specs))
	var fromStart []string
	for i, sp := range specs {
		switch {
		case sp.Handler == nil && sp.Raw == nil:
			return nil, fmt.Errorf("cannot follow topic %q: nil handler", sp.Topic)
		case sp.Start != FromEnd && sp.Start != FromStart:
			return nil, fmt.Errorf("cannot follow topic %q: invalid start %d", sp.Topic, sp.Start)
		case slices.Contains(topics[:i], sp.Topic):
			return nil, fmt.Errorf("cannot follow topic %q: given twice", sp.Topic)
		}
		topics[i] = sp.Topic
		if sp.Start == FromStart {
			fromStart = append(fromStart, sp.Topic)
		}
	}
	m.followMu.Lock()
	defer m.followMu.Unlock()
	if m.ctx.Err() != nil {
		return nil, fmt.Errorf("cannot follow topics %q: %w", topics, ErrClosed)
	}
	for _, t := range topics {
		if _, ok := (*m.followers.Load())[t]; ok {
			return nil, fmt.Errorf("cannot follow topic %q: already followed", t)
		}
	}

	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.dialTimeout+10*time.Second)
	defer cancel()
	// The last stable offset: with read_committed, nothing at or after it
	// has been delivered to anyone yet.
	ends, err := m.adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("cannot follow topics %q: cannot list their end offsets: %w", topics, err)
	}
	// Topics read from the start are caught up at their high watermarks:
	// every record written before FollowFrom, including those an open
	// transaction still hides from read_committed readers.
	var starts, hwms kadm.ListedOffsets
	if len(fromStart) > 0 {
		starts, err = m.adm.ListStartOffsets(ctx, fromStart...)
		if err == nil {
			err = starts.Error()
		}
		if err == nil {
			hwms, err = m.adm.ListEndOffsets(ctx, fromStart...)
		}
		if err == nil {
			err = hwms.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("cannot follow topics %q: cannot list their start and end offsets: %w", fromStart, err)
		}
	}

	fs := make([]*follower, len(specs))
	add := make(map[string]map[int32]kgo.Offset, len(specs))
	begins := make([]map[int32]int64, len(specs))
	upNow = make([]bool, len(specs))
	for i, sp := range specs {
		f, at, begin, err := newFollower(sp, ends[sp.Topic], starts, hwms)
		if err != nil {
			return nil, err
		}
		fs[i], add[sp.Topic], begins[i] = f, at, begin
		if upNow[i] = f.behind == nil; upNow[i] {
			f.caughtUp = nil
		}
	}

	for i, sp := range specs { // only once every topic is known to be followed, before any record is read
		if sp.Started != nil {
			sp.Started(begins[i])
		}
	}
	next := maps.Clone(*m.followers.Load())
	for _, f := range fs {
		next[f.topic] = f
	}
	m.followers.Store(&next) // before the partitions are added: the reader must know the topics
	for _, f := range fs {
		if f.behind != nil {
			f.catching.Store(true)
			m.readerWG.Add(1)
			go m.watchCatchUp(f)
		}
	}
	m.cl.AddConsumePartitions(add)

	if !m.started {
		m.started = true
		m.readerWG.Add(2)
		go m.read()
		go m.refreshPartitions()
	}
	return upNow, nil
}

// newFollower builds the follower of sp from its listed end offsets (last
// stable offsets; and for FromStart, start offsets and high watermarks) and
// returns the offsets to read from, as the client wants them and as numbers.
func newFollower(sp FollowSpec, ends map[int32]kadm.ListedOffset, starts, hwms kadm.ListedOffsets) (
	*follower, map[int32]kgo.Offset, map[int32]int64, error,
) {
	if len(ends) == 0 {
		return nil, nil, nil, fmt.Errorf("cannot follow topic %q: %w", sp.Topic, kerr.UnknownTopicOrPartition)
	}
	f := &follower{topic: sp.Topic, h: sp.Handler, raw: sp.Raw, parts: make(map[int32]struct{}, len(ends)), caughtUp: sp.CaughtUp,
		pos: make(map[int32]int64), moved: make(map[int32]time.Time)}
	at := make(map[int32]kgo.Offset, len(ends))
	begin := make(map[int32]int64, len(ends))
	for p, end := range ends {
		f.parts[p] = struct{}{}
		if sp.Start == FromEnd {
			at[p] = kgo.NewOffset().At(end.Offset)
			begin[p] = end.Offset
			continue
		}
		first, ok := starts.Lookup(sp.Topic, p)
		hwm, ok2 := hwms.Lookup(sp.Topic, p)
		if !ok || !ok2 {
			return nil, nil, nil, fmt.Errorf("cannot follow topic %q: no start or end offset listed for partition %d", sp.Topic, p)
		}
		at[p] = kgo.NewOffset().At(first.Offset)
		begin[p] = first.Offset
		f.pos[p], f.moved[p] = first.Offset, time.Now()
		if hwm.Offset > first.Offset {
			if f.behind == nil {
				f.behind = make(map[int32]int64)
			}
			f.behind[p] = hwm.Offset - 1
		}
	}
	return f, at, begin, nil
}

// read is the one reader goroutine: it polls the client and hands each
// record to its topic's handler.
func (m *Mux) read() {
	defer m.readerWG.Done()
	for {
		fetches := m.cl.PollRecords(m.ctx, 4096)
		if m.ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if ok, n := m.rl.Allow("fetch:" + err.Error()); ok {
				m.log.Warn("cannot read from Kafka", "topic", t, "partition", p, "err", err, "suppressed", n)
			}
		})
		fs := *m.followers.Load()
		fetched := time.Now().UnixNano() // one clock read per poll: the records' "received" time (Message.Fetched)
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			f := fs[ftp.Topic]
			if f == nil || len(ftp.Records) == 0 {
				return
			}
			got := 0                 // records handed on or skipped, for TopicStats
			end := ftp.HighWatermark // the partition's readable end: its last stable offset, if the broker gave one
			if lso := ftp.LastStableOffset; lso >= 0 && lso < end {
				end = lso
			}
			for _, r := range ftp.Records {
				if r.Attrs.IsControl() {
					continue // a transaction marker: kept only so catching up sees it (see FollowFrom)
				}
				got++
				if f.raw != nil {
					f.raw(r)
					continue
				}
				var msg *Message
				var err error
				if ftp.Topic == m.cfg.topicMessages {
					msg, err = m.recentMsgs.take(r, fetched, max(0, end-r.Offset-1)) // decoded into the cache
				} else if msg, err = MessageFromRecord(r); err == nil {
					msg.Fetched, msg.Behind = fetched, max(0, end-r.Offset-1)
				}
				if err != nil {
					m.skipped.Add(1)
					if ok, n := m.rl.Allow("decode:" + ftp.Topic); ok {
						m.log.Warn("skipping Kafka record that is not an MQTT message", "topic", ftp.Topic,
							"partition", r.Partition, "offset", r.Offset, "err", err, "suppressed", n)
					}
					continue
				}
				f.h(r.Partition, r.Offset, msg)
			}
			m.stats.read[m.stats.role(ftp.Topic)].Add(uint64(got))
			if f.catching.Load() {
				f.advance(ftp.Partition, ftp.Records[len(ftp.Records)-1].Offset)
			}
			if f.raw != nil {
				f.readTo(ftp.Partition, ftp.Records[len(ftp.Records)-1].Offset) // for ReadUpTo
			}
		})
	}
}

// advance notes that partition p has been read up to offset last, and calls
// caughtUp when that was the last partition short of its end. Runs on the
// reader goroutine.
func (f *follower) advance(p int32, last int64) {
	f.mu.Lock()
	end, ok := f.behind[p]
	if !ok {
		f.mu.Unlock()
		return
	}
	f.pos[p], f.moved[p] = last+1, time.Now()
	if last < end {
		f.mu.Unlock()
		return
	}
	delete(f.behind, p)
	var cb func()
	if len(f.behind) == 0 {
		f.behind = nil
		f.catching.Store(false)
		cb, f.caughtUp = f.caughtUp, nil
	}
	f.mu.Unlock()
	if cb != nil {
		cb()
	}
}

// readTo notes that partition p of a raw follower has been read up to offset last (control records count).
// Runs on the reader goroutine.
func (f *follower) readTo(p int32, last int64) {
	f.mu.Lock()
	if f.pos[p] <= last {
		f.pos[p] = last + 1
	}
	f.mu.Unlock()
}

// ReadUpTo waits until the reader has handed on every record of topic that was in Kafka when ReadUpTo was
// called: it lists the partitions' end offsets (high watermarks, one ListOffsets request on the Mux's client)
// and waits until the reader's position in each has reached them. A record of a transaction still open counts
// once the transaction ends, so the wait can last until it commits or aborts. It returns ctx's error if that
// ends first. Only for topics followed Raw (the sessions topic, whose decisions need a complete view); it
// blocks: never call it on an event loop or the reader goroutine.
func (m *Mux) ReadUpTo(ctx context.Context, topic string) error {
	f := (*m.followers.Load())[topic]
	if f == nil || f.raw == nil {
		return fmt.Errorf("cannot read topic %q up to its end: not followed raw", topic)
	}
	ends, err := m.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("cannot read topic %q up to its end: cannot list its end offsets: %w", topic, err)
	}
	start := time.Now()
	for {
		behind, from, end := int32(-1), int64(0), int64(0)
		f.mu.Lock()
		for p, e := range ends[topic] {
			if f.pos[p] < e.Offset {
				behind, from, end = p, f.pos[p], e.Offset
				break
			}
		}
		f.mu.Unlock()
		if behind < 0 {
			return nil
		}
		if time.Since(start) >= 500*time.Millisecond {
			start = time.Now() // at most one such Fetch per 500 ms
			// The rest up to the end may be records of aborted transactions with no marker after them, which
			// the reader never sees (see watchCatchUp): a Fetch of its own settles it.
			if none, err := m.nothingReadable(ctx, topic, behind, from, end-1); err == nil && none {
				f.readTo(behind, end-1)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot read topic %q up to its end: %w", topic, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// watchCatchUp settles partitions whose last records the reader will never see: the rest of a partition up
// to its end can be records of aborted transactions with no abort marker after them (an embedded Kafka
// restarted after a crash aborts the transactions that were open without writing markers). A partition that
// has not moved for a while is checked with a Fetch of its own: if nothing readable is left up to its end,
// it is caught up. Runs on its own goroutine until the follower is caught up or the Mux closes.
func (m *Mux) watchCatchUp(f *follower) {
	defer m.readerWG.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for f.catching.Load() {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		type part struct {
			p         int32
			from, end int64
		}
		var stalled []part
		f.mu.Lock()
		for p, end := range f.behind {
			if time.Since(f.moved[p]) >= 500*time.Millisecond {
				stalled = append(stalled, part{p, f.pos[p], end})
			}
		}
		f.mu.Unlock()
		for _, sp := range stalled {
			ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
			none, err := m.nothingReadable(ctx, f.topic, sp.p, sp.from, sp.end)
			cancel()
			if err == nil && none {
				f.advance(sp.p, sp.end)
			}
		}
	}
}

// nothingReadable reports whether partition p of topic holds no record a read_committed reader would get
// with from ≤ offset ≤ end (only control records and records of aborted transactions).
func (m *Mux) nothingReadable(ctx context.Context, topic string, p int32, from, end int64) (bool, error) {
	for from <= end {
		fp, covered, err := m.fetchAt(ctx, topic, p, from)
		if err != nil {
			return false, err
		}
		for _, r := range fp.Records {
			if r.Offset >= from && r.Offset <= end {
				return false, nil
			}
		}
		if covered <= from {
			return false, nil // nothing there yet: the reader has not reached the end either
		}
		from = covered
	}
	return true, nil
}

// refreshPartitions periodically looks for partitions added to followed
// topics and starts reading them from their start.
func (m *Mux) refreshPartitions() {
	defer m.readerWG.Done()
	t := time.NewTicker(m.cfg.partRefresh)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.addNewPartitions()
		}
	}
}

func (m *Mux) addNewPartitions() {
	m.followMu.Lock()
	defer m.followMu.Unlock()
	fs := *m.followers.Load()
	topics := make([]string, 0, len(fs))
	for t := range fs {
		topics = append(topics, t)
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.partRefresh)
	defer cancel()
	details, err := m.adm.ListTopics(ctx, topics...)
	if err != nil {
		if ok, n := m.rl.Allow("refresh"); ok && m.ctx.Err() == nil {
			m.log.Warn("cannot refresh partitions of followed topics", "err", err, "suppressed", n)
		}
		return
	}
	add := make(map[string]map[int32]kgo.Offset)
	for _, d := range details {
		f := fs[d.Topic]
		if f == nil || d.Err != nil {
			continue
		}
		for p := range d.Partitions {
			if _, ok := f.parts[p]; ok {
				continue
			}
			f.parts[p] = struct{}{}
			if add[d.Topic] == nil {
				add[d.Topic] = make(map[int32]kgo.Offset)
			}
			add[d.Topic][p] = kgo.NewOffset().AtStart()
			m.log.Info("following new Kafka partition", "topic", d.Topic, "partition", p)
		}
	}
	if len(add) > 0 {
		m.cl.AddConsumePartitions(add)
	}
}
