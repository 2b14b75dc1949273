package kafkamux

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// recent keeps the latest decoded records of every partition of one followed topic, so that a session
// resuming from stored offsets reads what it missed without a Kafka fetch. It is written by the reader
// goroutine and read by resumes; its byte budget is split evenly over the partitions.
type recent struct {
	mu       sync.RWMutex
	parts    map[int32]*recentPart
	perPart  int // bytes per partition
	capBytes int
}

// recentPart is one partition's window: every decodable record with offset in [from, next) is in recs (in
// offset order); offsets in that range without an entry were not MQTT messages (skipped or control records).
type recentPart struct {
	recs  []recentRec
	head  int
	from  int64 // the window's first covered offset
	next  int64 // one past the last offset the reader has seen
	bytes int
}

type recentRec struct {
	off  int64
	msg  *Message
	size int // what the record counts against the budget
}

// recentOverhead is what a cached record costs besides its bytes: the decoded Message (200 bytes), the
// cache's slot, and the framing of the record in the fetch buffer its payload points into (which stays alive
// as long as the message does).
const recentOverhead = 200 + 32 + 64

// RecentCacheBytes sets the memory for the recent-records cache of the messages topic: records kept decoded
// per partition so resumes need no Kafka fetch. Default 64 MiB; 0 turns the cache off.
func RecentCacheBytes(n int) Opt { return opt(func(c *cfg) { c.recentBytes = n }) }

func newRecent(capBytes int) *recent {
	return &recent{parts: make(map[int32]*recentPart), capBytes: capBytes}
}

// add records that the reader saw offset off of partition p (msg nil: not an MQTT message); wire is the
// record's size in Kafka (RecordSize): its key, value and headers, which the message's strings and payload
// share. Runs on the reader goroutine.
func (r *recent) add(p int32, off int64, msg *Message, wire int) {
	if r == nil || r.capBytes <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pc := r.parts[p]
	if pc == nil {
		pc = &recentPart{from: off, next: off}
		r.parts[p] = pc
		r.perPart = r.capBytes / len(r.parts)
	}
	if off < pc.next {
		return // a re-delivery after a reader reset: already covered
	}
	// Offsets between next and off, if any, were never handed on (the client skipped them): the window still
	// covers them, as its contract is about what the reader handed on.
	pc.next = off + 1
	if msg == nil {
		return
	}
	size := recentOverhead + wire
	pc.recs = append(pc.recs, recentRec{off: off, msg: msg, size: size})
	pc.bytes += size
	// Slots before head are never written again: a scan may still be reading them through the slice it took
	// (scan runs its callback without the lock). Evicted records are let go when the live ones move to a fresh
	// array, once a quarter of the slots are evicted ones.
	for pc.bytes > r.perPart && pc.head < len(pc.recs)-1 {
		pc.bytes -= pc.recs[pc.head].size
		pc.head++
		pc.from = pc.recs[pc.head].off
	}
	if pc.head > 256 && pc.head >= len(pc.recs)/4 {
		pc.recs, pc.head = append(make([]recentRec, 0, 2*(len(pc.recs)-pc.head)), pc.recs[pc.head:]...), 0
	}
}

// scan calls fn for the cached records of p with from ≤ offset < to, and reports the first offset it could
// not serve (to if it served everything, or from if the window starts after it).
func (r *recent) scan(p int32, from, to int64, fn func(int64, *Message) error) (int64, error) {
	if r == nil {
		return from, nil
	}
	r.mu.RLock()
	pc := r.parts[p]
	if pc == nil || from < pc.from || to > pc.next {
		r.mu.RUnlock()
		return from, nil
	}
	// The slice header is copied under the lock; add never writes to slots it already filled, so the records
	// stay valid while fn runs without the lock (it may wait for a session's queue).
	recs := pc.recs[pc.head:]
	r.mu.RUnlock()
	i := sort.Search(len(recs), func(k int) bool { return recs[k].off >= from })
	for ; i < len(recs) && recs[i].off < to; i++ {
		if err := fn(recs[i].off, recs[i].msg); err != nil {
			return recs[i].off, err
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
