package kafkamux

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The embedded Kafka's bounds (docs/operations.md, "Standalone mode"). Only
// the embedded cluster gets them: a real cluster's topics are its
// operators' to configure ([TopicConfig]).
//
// kfake keeps on disk every batch that retention has not deleted and in
// memory one index entry (batchMeta, 72 B in the pinned version) per batch
// of every segment file it holds; a segment file goes only when retention
// has deleted all of its batches. So a topic partition holds at most
// retention.bytes plus one segment (segment.bytes) on disk, and its index
// the batches of that.
const (
	// DefaultEmbeddedRetention is how long the embedded Kafka keeps the
	// messages topic's records by default.
	DefaultEmbeddedRetention = 24 * time.Hour
	// DefaultEmbeddedRetentionBytes is the default bound of the messages
	// topic's records on the embedded Kafka's disk, all partitions together.
	DefaultEmbeddedRetentionBytes = 512 << 20
	// DefaultEmbeddedCleanInterval is how often retention and compaction
	// run on the embedded Kafka by default.
	DefaultEmbeddedCleanInterval = 2 * time.Minute

	minSegmentBytes = 64 << 10
	maxSegmentBytes = 64 << 20

	// embeddedTombstoneRetention is the delete.retention.ms of the embedded
	// compacted topics: how long compaction keeps a tombstone. The sessions
	// topic takes two records per QoS 2 message received on a persistent
	// session (its packet-id state, then the tombstone that releases it):
	// every tombstone kept is an index entry and a batch that each
	// compaction reads and rewrites. Kafka's default, 24 h, would keep a day
	// of them; 15 minutes kept 131,000 (117,000 batches, nearly all of the
	// topic after a pass) in scripts/soak.sh at 5,000 msg/s. A reader
	// misses a delete only if a pass runs while it is this far behind the
	// log end; in standalone mode the one reader is Ferry's own, which
	// follows the topic live and loads it at start, before the first pass.
	embeddedTombstoneRetention = time.Minute
)

// EmbeddedRetention sets how long the embedded Kafka keeps a record of the
// messages topic (and of routed topics Ferry creates): their retention.ms.
// 0 means no time bound. Default [DefaultEmbeddedRetention]. The retained and
// sessions topics are compacted and never lose a live key to retention.
// Ignored with [Brokers].
func EmbeddedRetention(d time.Duration) Opt {
	return opt(func(c *cfg) { c.retention = d })
}

// EmbeddedRetentionBytes sets how many bytes of records the embedded Kafka
// keeps for the messages topic, all partitions together: each partition's
// retention.bytes is n / partitions and its segment.bytes an eighth of that
// (64 KiB to 64 MiB), so the topic's files stay below about 1.125 × n. The
// same bound applies to each routed topic Ferry creates. 0 means no size
// bound. Default [DefaultEmbeddedRetentionBytes]. Ignored with [Brokers].
func EmbeddedRetentionBytes(n int64) Opt {
	return opt(func(c *cfg) { c.retentionBytes = n })
}

// EmbeddedCleanInterval sets how often the embedded Kafka applies retention
// to every topic and compacts the compacted ones if they have grown by 1 MiB
// since the last compaction (cleaner.go); each pass holds the broker's one
// goroutine for its duration. Default [DefaultEmbeddedCleanInterval].
// Ignored with [Brokers].
func EmbeddedCleanInterval(d time.Duration) Opt {
	return opt(func(c *cfg) { c.cleanEvery = d })
}

func (c *cfg) validateRetention() error {
	switch {
	case c.retention < 0:
		return fmt.Errorf("invalid embedded retention %v: want 0 (no time bound) or more", c.retention)
	case c.retentionBytes < 0:
		return fmt.Errorf("invalid embedded retention bytes %d: want 0 (no size bound) or more", c.retentionBytes)
	case c.cleanEvery <= 0:
		return fmt.Errorf("invalid embedded clean interval %v: want more than 0", c.cleanEvery)
	}
	return nil
}

// partitionRetentionBytes is the retention.bytes of one partition of a
// delete-policy topic of n partitions, -1 for no bound.
func (c *cfg) partitionRetentionBytes(n int32) int64 {
	if c.retentionBytes == 0 {
		return -1
	}
	return max(c.retentionBytes/int64(max(n, 1)), 1)
}

// segmentBytes is the segment.bytes of a delete-policy topic of n partitions.
func (c *cfg) segmentBytes(n int32) int64 {
	per := c.partitionRetentionBytes(n)
	if per < 0 {
		return maxSegmentBytes
	}
	return min(max(per/8, minSegmentBytes), maxSegmentBytes)
}

// embeddedConfigs returns the retention configs of a topic of the embedded
// cluster with n partitions: bounded by time and size for delete topics (the
// size bound split between the partitions); for compacted ones,
// tombstones kept a minute and no retention (kfake applies retention.ms, 7 days by default, to compacted
// topics too, which would delete sessions and retained messages whose key
// has not been written for a week).
func (c *cfg) embeddedConfigs(compact bool, n int32) map[string]string {
	if compact {
		return map[string]string{"retention.ms": "-1", "retention.bytes": "-1",
			"delete.retention.ms": strconv.FormatInt(embeddedTombstoneRetention.Milliseconds(), 10)}
	}
	ms := int64(-1)
	if c.retention > 0 {
		ms = max(c.retention.Milliseconds(), 1)
	}
	return map[string]string{
		"retention.ms":    strconv.FormatInt(ms, 10),
		"retention.bytes": strconv.FormatInt(c.partitionRetentionBytes(n), 10),
		"segment.bytes":   strconv.FormatInt(c.segmentBytes(n), 10),
	}
}

// applyEmbeddedRetention sets the retention configs of the three topics on
// the embedded cluster at every start, so a restart with other bounds (or a
// data dir from before they existed) gets them. [TopicConfig]s win over the
// bounds, as when the topics are created. parts is each topic's partition
// count (ensureTopics): the size bound is split between the partitions a
// topic has, which for a data dir made with another count are not those of
// the flags.
//
// Runs on New's goroutine.
func applyEmbeddedRetention(ctx context.Context, adm *kadm.Client, c *cfg, parts map[string]int32) error {
	var alters []kadm.AlterConfig
	for _, r := range c.roles() {
		policy := "delete"
		if r.compact {
			policy = "compact"
		}
		for k, v := range c.topicConfigsOf(r.role, policy, parts[r.name]) {
			if k == "cleanup.policy" {
				continue // checked by ensureTopics, never changed
			}
			alters = append(alters, kadm.AlterConfig{Name: k, Value: v})
		}
		resp, err := adm.AlterTopicConfigs(ctx, alters, r.name)
		if err == nil {
			var ar kadm.AlterConfigsResponse
			if ar, err = resp.On(r.name, nil); err == nil {
				err = ar.Err
			}
		}
		if err != nil {
			return fmt.Errorf("cannot set retention of %s topic %q: %w", r.role, r.name, err)
		}
		alters = alters[:0]
	}
	return nil
}
