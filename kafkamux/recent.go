package kafkamux

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"sync"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// recent keeps the latest decoded records of every partition of one followed topic, so that a session
// resuming from stored offsets reads what it missed without a Kafka fetch. It is written by the reader
// goroutine and read by resumes; its byte budget is split evenly over the partitions.
//
// The cache owns what it holds: the reader decodes each record of the messages topic straight into its
// partition's newest chunk (a slab: the Messages, their offsets, and a buffer for every byte they reference),
// so no cached message points into the fetch response it came in, and the messages handed on to the fan-out
// are the cached ones (one decode, no allocation per record once a chunk is open). A partition's window is a
// list of chunks, oldest first; the oldest is let go as a whole when the window is over its share. What the
// cache counts is the capacity of the chunks it holds, so the budget is what it keeps reachable. A chunk the
// cache let go stays alive as long as something else holds one of its messages (a session's queue, a resume
// in progress): like any delivery, within that holder's own budget.
type recent struct {
	mu       sync.RWMutex
	parts    map[int32]*recentPart
	perPart  int // bytes per partition
	capBytes int
}

// recentPart is one partition's window: every decodable record with offset in [from, next) is in chunks (in
// offset order); offsets in that range without an entry were not MQTT messages (skipped or control records).
type recentPart struct {
	chunks []*recentChunk // oldest first; the last one is being filled
	from   int64          // the window's first covered offset
	next   int64          // one past the last offset the reader has seen
	bytes  int            // the chunks' sizes
	avg    int            // bytes referenced per message in the last full chunk: sizes the next one
}

// recentChunk is one slab of a partition's window: n cached records, their offsets, and the bytes and user
// properties their messages reference. msgs, offs, buf and props never move once made; only the reader
// goroutine writes to them, and only to slots not yet published: n is written under recent.mu, so a scan
// reads the slots below the n it saw under the lock while the reader fills the next ones.
type recentChunk struct {
	msgs      []Message
	offs      []int64
	n         int // published records
	buf       []byte
	used      int // bytes of buf taken; the reader goroutine's
	props     []UserProp
	usedProps int // the reader goroutine's
	size      int // what the chunk holds: the capacity of its arrays
}

const (
	messageSize     = int(unsafe.Sizeof(Message{}))
	userPropSize    = int(unsafe.Sizeof(UserProp{}))
	recentSlotSize  = messageSize + 8 // a Message and its offset
	recentChunkMin  = 16 << 10
	recentChunkMax  = 256 << 10
	recentFirstAvg  = 128 // bytes referenced per message assumed for a partition's first chunk
	recentChunkHead = int(unsafe.Sizeof(recentChunk{})) + 8
)

// RecentCacheBytes sets the memory for the recent-records cache of the messages topic: records kept decoded
// per partition so resumes need no Kafka fetch. Default 64 MiB; 0 turns the cache off.
func RecentCacheBytes(n int) Opt { return opt(func(c *cfg) { c.recentBytes = n }) }

func newRecent(capBytes int) *recent {
	return &recent{parts: make(map[int32]*recentPart), capBytes: capBytes}
}

// take decodes rec, the next record the reader hands on from its partition of the messages topic, and caches
// it: the message returned is the cached one, stamped with fetched and behind (Message.Fetched and Behind)
// before a resume can see it. A record that is not an MQTT message returns the decode error; its offset still
// counts as covered. Without a cache (nil, or a budget of 0) it is MessageFromRecord. Runs on the reader
// goroutine.
func (r *recent) take(rec *kgo.Record, fetched, behind int64) (*Message, error) {
	if r == nil || r.capBytes <= 0 {
		msg, err := MessageFromRecord(rec)
		if err == nil {
			msg.Fetched, msg.Behind = fetched, behind
		}
		return msg, err
	}
	pc := r.parts[rec.Partition] // only this goroutine writes the map
	if pc == nil {
		r.mu.Lock()
		pc = &recentPart{from: rec.Offset, next: rec.Offset, avg: recentFirstAvg}
		r.parts[rec.Partition] = pc
		r.perPart = r.capBytes / len(r.parts)
		r.mu.Unlock()
	}
	if rec.Offset < pc.next {
		// A re-delivery after a reader reset: already covered (and cached, if it was a message). It is handed
		// on again as it was before the cache, on the heap.
		msg, err := MessageFromRecord(rec)
		if err == nil {
			msg.Fetched, msg.Behind = fetched, behind
		}
		return msg, err
	}
	c := r.room(pc, RecordSize(rec), len(rec.Headers))
	msg := &c.msgs[c.n]
	used, usedProps := c.used, c.usedProps
	err := decodeRecord(msg, rec, c)
	if err != nil {
		*msg, c.used, c.usedProps = Message{}, used, usedProps // the slot and its bytes are taken by the next one
	} else {
		msg.Fetched, msg.Behind = fetched, behind
		c.offs[c.n] = rec.Offset
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	// Offsets between next and this one, if any, were never handed on (the client skipped them): the window
	// still covers them, as its contract is about what the reader handed on.
	pc.next = rec.Offset + 1
	if err != nil {
		return nil, err
	}
	c.n++
	r.evict(pc)
	return msg, nil
}

// room returns pc's chunk to decode a record into: the newest, if it has a free slot, need bytes and props
// user properties free; else a new one, appended (and counted). Runs on the reader goroutine.
func (r *recent) room(pc *recentPart, need, props int) *recentChunk {
	if n := len(pc.chunks); n > 0 {
		c := pc.chunks[n-1]
		if c.n < len(c.msgs) && len(c.buf)-c.used >= need && (props == 0 || c.props == nil || len(c.props)-c.usedProps >= props) {
			if props > 0 && c.props == nil {
				c.props = alloc[UserProp](max(props, 2*(len(c.msgs)-c.n)))
				r.mu.Lock()
				c.size += len(c.props) * userPropSize
				pc.bytes += len(c.props) * userPropSize
				r.mu.Unlock()
			}
			return c
		}
		if c.n > 0 {
			pc.avg = max(16, c.used/c.n)
		}
	}
	target := min(max(r.perPart/16, recentChunkMin), recentChunkMax, r.perPart) // perPart: written by this goroutine
	slots := max(1, target/(recentSlotSize+pc.avg))
	bufLen := target - slots*recentSlotSize
	if need > bufLen {
		slots, bufLen = 1, need // a record larger than a chunk's buffer: a chunk of its own
	}
	c := &recentChunk{msgs: alloc[Message](slots), buf: alloc[byte](bufLen)}
	c.offs = alloc[int64](len(c.msgs))[:len(c.msgs)]
	if props > 0 {
		c.props = alloc[UserProp](max(props, 2*len(c.msgs)))
	}
	c.size = recentChunkHead + len(c.msgs)*messageSize + cap(c.offs)*8 + len(c.buf) + len(c.props)*userPropSize
	r.mu.Lock()
	pc.chunks = append(pc.chunks, c)
	pc.bytes += c.size
	r.mu.Unlock()
	return c
}

// alloc returns a slice of at least n elements, as long as the memory the allocator gives it (its size
// class or whole pages): so that what a chunk counts is what it holds.
func alloc[T any](n int) []T {
	s := slices.Grow([]T(nil), n)
	return s[:cap(s)]
}

// evict lets the oldest chunks of pc go while it holds more than its share, the newest always kept. The list
// moves to a fresh array, so that a chunk let go is not kept reachable by the old one (a scan in progress
// may still read it through the list it took). Runs on the reader goroutine with r.mu held.
func (r *recent) evict(pc *recentPart) {
	k := 0
	for pc.bytes > r.perPart && k < len(pc.chunks)-1 {
		pc.bytes -= pc.chunks[k].size
		k++
	}
	if k == 0 {
		return
	}
	pc.chunks = append(make([]*recentChunk, 0, len(pc.chunks)-k+4), pc.chunks[k:]...)
	if c := pc.chunks[0]; c.n > 0 {
		pc.from = c.offs[0]
	} else {
		pc.from = pc.next
	}
}

// str returns b as a string: a copy in c's buffer, or, with c nil, a new string.
func (c *recentChunk) str(b []byte) string {
	if c == nil {
		return string(b)
	}
	if len(b) == 0 {
		return ""
	}
	at := c.used
	c.used += copy(c.buf[at:], b)
	return unsafe.String(&c.buf[at], len(b))
}

// strOf is str for a string.
func (c *recentChunk) strOf(s string) string {
	if c == nil {
		return s
	}
	return c.str(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// bytes returns b (nil stays nil), a copy in c's buffer, or with c nil b itself.
func (c *recentChunk) bytes(b []byte) []byte {
	if c == nil || b == nil {
		return b
	}
	at := c.used
	c.used += copy(c.buf[at:], b)
	return c.buf[at:c.used:c.used]
}

// userProps returns an empty slice with room for n user properties: in c's array, or with c nil a new one.
func (c *recentChunk) userProps(n int) []UserProp {
	if c == nil {
		return make([]UserProp, 0, n)
	}
	at := c.usedProps
	c.usedProps += n
	return c.props[at:at:c.usedProps]
}

// scan calls fn for the cached records of p with from ≤ offset < to, and reports the first offset it could
// not serve (to if it served everything, or from if the window starts after it).
func (r *recent) scan(p int32, from, to int64, fn func(int64, *Message) error) (int64, error) {
	if r == nil {
		return from, nil
	}
	r.mu.RLock()
	pc := r.parts[p]
	if pc == nil || from < pc.from || to > pc.next || len(pc.chunks) == 0 {
		r.mu.RUnlock()
		return from, nil
	}
	// The list is copied under the lock with the newest chunk's count: the reader never writes to published
	// slots, and older chunks are full, so the records stay valid while fn runs without the lock (it may wait
	// for a session's queue).
	chunks := pc.chunks
	lastN := chunks[len(chunks)-1].n
	r.mu.RUnlock()
	count := func(k int) int {
		if k == len(chunks)-1 {
			return lastN
		}
		return chunks[k].n
	}
	// The first chunk whose last record is at from or after it (an empty chunk can only be the newest).
	k := sort.Search(len(chunks), func(k int) bool { n := count(k); return n == 0 || chunks[k].offs[n-1] >= from })
	for ; k < len(chunks); k++ {
		c, n := chunks[k], count(k)
		i := sort.Search(n, func(i int) bool { return c.offs[i] >= from })
		for ; i < n; i++ {
			if c.offs[i] >= to {
				return to, nil
			}
			if err := fn(c.offs[i], &c.msgs[i]); err != nil {
				return c.offs[i], err
			}
		}
	}
	return to, nil
}

// ReadRange calls fn, in offset order, for every MQTT message of topic's partition with from ≤ offset < to.
// It serves them from the recent-records cache when the range is in it and otherwise fetches them from
// Kafka on the instance's one client (no new connection). It blocks: call it from a resume goroutine, never
// from an event loop. fn must not keep msg beyond what it may share (messages are read-only).
func (m *Mux) ReadRange(ctx context.Context, topic string, partition int32, from, to int64, fn func(off int64, msg *Message) error) error {
	for from < to {
		if c := m.recentOf(topic); c != nil {
			next, err := c.scan(partition, from, to, fn)
			if err != nil || next >= to {
				return err
			}
			if next > from {
				from = next
				continue
			}
		}
		next, err := m.fetchRange(ctx, topic, partition, from, to, fn)
		if err != nil {
			return err
		}
		if next <= from {
			return fmt.Errorf("cannot read %s/%d from offset %d: no progress", topic, partition, from)
		}
		from = next
	}
	return nil
}

// fetchRange issues one Fetch for the partition at from and hands on the records below to. It returns the
// offset to continue at.
func (m *Mux) fetchRange(ctx context.Context, topic string, partition int32, from, to int64, fn func(int64, *Message) error) (int64, error) {
	fp, _, err := m.fetchAt(ctx, topic, partition, from)
	if err != nil {
		if fp.Err == kerr.OffsetOutOfRange && from < fp.LogStartOffset {
			// Retention removed what the session had not read: it resumes at the log start.
			m.log.Warn("resume starts after records already deleted by retention", "topic", topic,
				"partition", partition, "from", from, "log_start", fp.LogStartOffset)
			return fp.LogStartOffset, nil
		}
		return from, err
	}
	next := from
	for _, r := range fp.Records {
		if r.Offset >= to {
			return to, nil
		}
		next = r.Offset + 1
		msg, err := MessageFromRecord(r)
		if err != nil {
			m.skipped.Add(1)
			continue
		}
		if err := fn(r.Offset, msg); err != nil {
			return next, err
		}
	}
	if len(fp.Records) == 0 {
		// Nothing readable at from (aborted transactions or control records, or the stable end): move to
		// what the broker says is readable.
		if fp.LastStableOffset > from {
			return min(fp.LastStableOffset, to), nil
		}
		if fp.HighWatermark >= to {
			return to, nil
		}
		return from, fmt.Errorf("cannot read %s/%d up to %d: the partition ends at %d", topic, partition, to, fp.HighWatermark)
	}
	return next, nil
}

// recentOf returns the recent-records cache of topic, if it has one: only the messages topic does.
func (m *Mux) recentOf(topic string) *recent {
	if topic == m.cfg.topicMessages {
		return m.recentMsgs
	}
	return nil
}

// fetchAt issues one read_committed Fetch for the partition at from, on the partition leader's connection of
// the instance's one client, and returns the readable records and the offset after the last record batch the
// response held (readable or not). fp.Err is set, and returned, on a partition error.
func (m *Mux) fetchAt(ctx context.Context, topic string, partition int32, from int64) (kgo.FetchPartition, int64, error) {
	var fp kgo.FetchPartition
	details, err := m.adm.ListTopics(ctx, topic)
	if err != nil {
		return fp, from, fmt.Errorf("cannot read %s/%d: %w", topic, partition, err)
	}
	td, ok := details[topic]
	if !ok || td.Err != nil {
		return fp, from, fmt.Errorf("cannot read %s/%d: topic not found: %v", topic, partition, td.Err)
	}
	pd, ok := td.Partitions[partition]
	if !ok {
		return fp, from, fmt.Errorf("cannot read %s/%d: %w", topic, partition, kerr.UnknownTopicOrPartition)
	}
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = 0
	req.MinBytes = 1
	req.MaxBytes = 16 << 20
	req.IsolationLevel = 1 // read_committed, as the shared reader
	req.SessionEpoch = -1  // no fetch session
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rt.TopicID = td.ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = partition
	rp.FetchOffset = from
	rp.CurrentLeaderEpoch = -1
	rp.LogStartOffset = -1
	rp.PartitionMaxBytes = 8 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := m.cl.Broker(int(pd.Leader)).Request(ctx, req)
	if err != nil {
		return fp, from, fmt.Errorf("cannot fetch %s/%d at %d: %w", topic, partition, from, err)
	}
	fr := resp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(fr.ErrorCode); err != nil {
		return fp, from, fmt.Errorf("cannot fetch %s/%d at %d: %w", topic, partition, from, err)
	}
	if len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != 1 {
		return fp, from, fmt.Errorf("cannot fetch %s/%d at %d: unexpected response shape", topic, partition, from)
	}
	raw := &fr.Topics[0].Partitions[0]
	covered := from
	for b := raw.RecordBatches; len(b) >= 61; { // batch headers: base offset, length, …, last offset delta
		n := 12 + int(binary.BigEndian.Uint32(b[8:12]))
		if n > len(b) {
			break // a partial batch at the end of the response
		}
		covered = max(covered, int64(binary.BigEndian.Uint64(b[0:8]))+int64(int32(binary.BigEndian.Uint32(b[23:27])))+1)
		b = b[n:]
	}
	fp, _ = kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
		Offset: from, IsolationLevel: kgo.ReadCommitted(), Topic: topic, Partition: partition,
	}, raw, kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		return fp, from, fmt.Errorf("cannot fetch %s/%d at %d: %w", topic, partition, from, fp.Err)
	}
	return fp, covered, nil
}
