package kafkamux

import (
	"context"
	"io/fs"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// kfakeIndexEntrySize is the size of one entry of kfake's on-disk batch
// index (.idx file), and kfakeBatchMetaSize that of its in-memory copy
// (batchMeta), in the pinned kfake version.
const (
	kfakeIndexEntrySize = 15
	kfakeBatchMetaSize  = 72
)

// EmbeddedStats is what the embedded Kafka's cleaner last measured.
type EmbeddedStats struct {
	Passes       uint64        // retention and compaction passes run
	LastPass     time.Time     // when the last pass ended; zero before the first
	LastDuration time.Duration // how long the last pass held the broker
	Topics       []EmbeddedTopicStats
}

// EmbeddedTopicStats is one topic's share of the embedded Kafka's disk and
// memory. Topic is the name of the messages, retained or sessions topic, or
// "other" for every other topic (routed topics) together.
type EmbeddedTopicStats struct {
	Topic string
	// DiskBytes is the size of the topic's segment and index files.
	DiskBytes int64
	// IndexEntries is the number of batches in those files: kfake keeps an
	// in-memory index entry of [EmbeddedIndexEntryBytes] for each.
	IndexEntries int64
	// RecordsDeleted counts records retention and compaction removed from
	// the start of the log since New (the advance of the log start offsets).
	RecordsDeleted uint64
}

// EmbeddedIndexEntryBytes is the memory of one in-memory index entry of the
// embedded Kafka (one per stored record batch), for estimates.
const EmbeddedIndexEntryBytes = kfakeBatchMetaSize

// cleaner runs retention and compaction on the embedded cluster every
// cfg.cleanEvery and measures the result.
type cleaner struct {
	m      *Mux
	starts map[string]map[int32]int64 // log start offsets after the last pass
	done   chan struct{}

	mu      sync.Mutex // guards stats and deleted
	stats   EmbeddedStats
	deleted map[string]uint64 // by stats topic name
}

// startCleaner starts the cleaner goroutine; Close stops it before the
// cluster.
func (m *Mux) startCleaner() {
	cl := &cleaner{m: m, done: make(chan struct{}), deleted: map[string]uint64{}}
	m.cleaner = cl
	go cl.run()
}

// run is the cleaner's goroutine: it measures the data dir at once, then
// runs a pass every interval until Close. The first pass waits an interval
// too: compacting while Ferry loads the retained and sessions topics at
// start would be legal Kafka behaviour, but nothing needs it sooner (a
// restart with tighter bounds applies them within one interval).
func (cl *cleaner) run() {
	defer close(cl.done)
	cl.starts = cl.startOffsets() // baseline: nothing deleted yet
	topics := cl.diskUsage()
	cl.mu.Lock()
	cl.stats.Topics = topics
	cl.mu.Unlock()
	t := time.NewTicker(cl.m.cfg.cleanEvery)
	defer t.Stop()
	for {
		select {
		case <-cl.m.ctx.Done():
			return
		case <-t.C:
		}
		cl.pass()
	}
}

// pass runs one retention and compaction pass and measures it. Runs on the
// cleaner goroutine; Cluster.Compact blocks until kfake's run loop has done
// the work (compaction of the compacted topics, then retention of all).
func (cl *cleaner) pass() {
	start := time.Now()
	cl.m.cluster.Compact() // compacts cleanup.policy=compact topics and applies retention to every topic
	took := time.Since(start)

	now := cl.startOffsets()
	var deleted map[string]uint64
	if now != nil {
		deleted = map[string]uint64{}
		for t, ps := range now {
			for p, o := range ps {
				if prev, ok := cl.starts[t][p]; ok && o > prev {
					deleted[cl.statsTopic(t)] += uint64(o - prev)
				}
			}
		}
		cl.starts = now
	}
	topics := cl.diskUsage()
	cl.m.storage.check() // a full data dir clears even when nobody asks /readyz

	cl.mu.Lock()
	defer cl.mu.Unlock()
	for t, n := range deleted {
		cl.deleted[t] += n
	}
	for i := range topics {
		topics[i].RecordsDeleted = cl.deleted[topics[i].Topic]
	}
	cl.stats = EmbeddedStats{Passes: cl.stats.Passes + 1, LastPass: time.Now(), LastDuration: took, Topics: topics}
	if took > time.Second {
		cl.m.log.Warn("embedded Kafka retention and compaction pass was slow", "took", took)
	}
}

// startOffsets returns the log start offset of every partition, nil if the
// cluster did not answer.
func (cl *cleaner) startOffsets() map[string]map[int32]int64 {
	ctx, cancel := context.WithTimeout(cl.m.ctx, 10*time.Second)
	defer cancel()
	offs, err := cl.m.adm.ListStartOffsets(ctx)
	if err != nil {
		return nil
	}
	out := map[string]map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out
}

// statsTopic maps a topic to its label: the three roles by name, the rest
// "other", so the metrics' cardinality is bounded by the configuration.
func (cl *cleaner) statsTopic(t string) string {
	c := &cl.m.cfg
	if t == c.topicMessages || t == c.topicRetained || t == c.topicSessions {
		return t
	}
	return "other"
}

// diskUsage sums the segment (.dat) and index (.idx) files of each topic in
// the data dir (kfake's layout: partitions/<escaped topic>-<partition>/).
// Nil with an in-memory cluster.
func (cl *cleaner) diskUsage() []EmbeddedTopicStats {
	c := &cl.m.cfg
	if c.dataDir == "" {
		return nil
	}
	byTopic := map[string]*EmbeddedTopicStats{}
	for _, t := range []string{c.topicMessages, c.topicRetained, c.topicSessions, "other"} {
		byTopic[t] = &EmbeddedTopicStats{Topic: t}
	}
	root := filepath.Join(c.dataDir, "partitions")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // a partition deleted under us is not an error
		}
		dir := filepath.Base(filepath.Dir(path))
		i := strings.LastIndexByte(dir, '-')
		if i < 0 {
			return nil
		}
		if _, err := strconv.Atoi(dir[i+1:]); err != nil {
			return nil
		}
		topic, err := url.PathUnescape(dir[:i])
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		s := byTopic[cl.statsTopic(topic)]
		switch filepath.Ext(path) {
		case ".dat":
			s.DiskBytes += info.Size()
		case ".idx":
			s.DiskBytes += info.Size()
			s.IndexEntries += info.Size() / kfakeIndexEntrySize
		}
		return nil
	})
	out := make([]EmbeddedTopicStats, 0, len(byTopic))
	for _, t := range []string{c.topicMessages, c.topicRetained, c.topicSessions, "other"} {
		out = append(out, *byTopic[t])
	}
	return out
}

// EmbeddedStats returns what the embedded Kafka's cleaner measured after its
// last pass; ok is false with external brokers. Safe for concurrent use.
func (m *Mux) EmbeddedStats() (s EmbeddedStats, ok bool) {
	if m.cleaner == nil {
		return EmbeddedStats{}, false
	}
	m.cleaner.mu.Lock()
	defer m.cleaner.mu.Unlock()
	s = m.cleaner.stats
	s.Topics = append([]EmbeddedTopicStats(nil), s.Topics...)
	return s, true
}
