package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// embeddedConfig holds the bounds of the embedded Kafka (docs/operations.md, "Standalone mode"): how long
// and how many bytes of the messages topic it keeps, and how often retention and compaction run. Ignored with
// --kafka-brokers.
type embeddedConfig struct {
	retention      time.Duration
	retentionBytes int64
	cleanInterval  time.Duration
}

// minPartitionRetentionBytes is the smallest size bound of one partition: kfake deletes whole record batches
// (up to --kafka-batch-bytes, 1 MB by default), so a smaller bound could delete the newest batch too.
const minPartitionRetentionBytes = 4 << 20

func addEmbeddedFlags(fs *flag.FlagSet, c *embeddedConfig) {
	fs.DurationVar(&c.retention, "embedded-retention", kafkamux.DefaultEmbeddedRetention, "embedded Kafka: how long messages are kept (retention.ms of the messages and routed topics; 0 = no time bound)")
	fs.Int64Var(&c.retentionBytes, "embedded-retention-bytes", kafkamux.DefaultEmbeddedRetentionBytes, "embedded Kafka: bytes of messages kept, all partitions of the messages topic together, and of each routed topic; its files stay under about 1.125× this plus one clean interval's writes (0 = no size bound)")
	fs.DurationVar(&c.cleanInterval, "embedded-clean-interval", kafkamux.DefaultEmbeddedCleanInterval, "embedded Kafka: how often retention and compaction run (compaction only if the compacted topics grew by 1 MiB)")
}

func (c *embeddedConfig) validate(partitions int) error {
	switch {
	case c.retention != 0 && c.retention < time.Minute:
		return fmt.Errorf("invalid --embedded-retention %v: want 0 (no time bound) or at least 1m", c.retention)
	case c.retentionBytes != 0 && c.retentionBytes < int64(partitions)*minPartitionRetentionBytes:
		return fmt.Errorf("invalid --embedded-retention-bytes %d: want 0 (no size bound) or at least %d (4 MiB per partition, --messages-partitions %d)",
			c.retentionBytes, int64(partitions)*minPartitionRetentionBytes, partitions)
	case c.cleanInterval < time.Second || c.cleanInterval > 24*time.Hour:
		return fmt.Errorf("invalid --embedded-clean-interval %v: want 1s to 24h", c.cleanInterval)
	}
	return nil
}

func (c *embeddedConfig) opts() []kafkamux.Opt {
	return []kafkamux.Opt{
		kafkamux.EmbeddedRetention(c.retention),
		kafkamux.EmbeddedRetentionBytes(c.retentionBytes),
		kafkamux.EmbeddedCleanInterval(c.cleanInterval),
	}
}
