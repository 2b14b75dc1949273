// Command fetchlat times Kafka fetches from the embedded Kafka of a Ferry in standalone mode: a reader that
// catches up from the start of every partition of the messages topic (--mode catchup: one fetch after
// another, each from the offset the last one ended at), or fetches at random offsets (--mode random: each
// fetch may land in another segment). It prints the count, percentiles and total time of the fetches. It
// reads only; run it while nothing else writes to measure the fetch alone.
//
// usage: go run ./docs/proposals/kfake-index/fetchlat --kafka 127.0.0.1:9092 [--mode catchup|random]
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func main() {
	addr := flag.String("kafka", "127.0.0.1:9092", "the embedded Kafka's address (Ferry's --embedded-kafka-addr)")
	topic := flag.String("topic", "mqtt-messages", "topic to read")
	mode := flag.String("mode", "catchup", "catchup: every partition from its start to its end; random: --n fetches at random offsets")
	n := flag.Int("n", 600, "random: fetches")
	maxBytes := flag.Int("bytes", 1<<20, "bytes per fetch (the partition's and the request's maximum)")
	flag.Parse()
	if err := run(*addr, *topic, *mode, *n, int32(*maxBytes)); err != nil {
		fmt.Fprintln(os.Stderr, "fetchlat:", err)
		os.Exit(1)
	}
}

type partition struct {
	id         int32
	leader     int32
	start, end int64
}

func run(addr, topic, mode string, n int, maxBytes int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return fmt.Errorf("cannot create client: %w", err)
	}
	defer cl.Close()
	ctx := context.Background()
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return fmt.Errorf("cannot read metadata: %w", err)
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return fmt.Errorf("topic %s: not found (%v)", topic, td.Err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("cannot list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("cannot list end offsets: %w", err)
	}
	var parts []partition
	var records int64
	for _, p := range td.Partitions.Sorted() {
		s, _ := starts.Lookup(topic, p.Partition)
		e, _ := ends.Lookup(topic, p.Partition)
		parts = append(parts, partition{p.Partition, p.Leader, s.Offset, e.Offset})
		records += e.Offset - s.Offset
	}

	fetch := func(p partition, offset int64) (next int64, bytes int, took time.Duration, err error) {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MinBytes = 1
		req.MaxBytes = maxBytes
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, td.ID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p.id, offset, maxBytes
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		start := time.Now()
		resp, err := req.RequestWith(ctx, cl.Broker(int(p.leader)))
		took = time.Since(start)
		if err != nil {
			return 0, 0, took, fmt.Errorf("partition %d offset %d: %w", p.id, offset, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, 0, took, fmt.Errorf("partition %d offset %d: unexpected response shape", p.id, offset)
		}
		rp2 := resp.Topics[0].Partitions[0]
		if rp2.ErrorCode != 0 {
			return 0, 0, took, fmt.Errorf("partition %d offset %d: error code %d", p.id, offset, rp2.ErrorCode)
		}
		next = offset
		for raw := rp2.RecordBatches; len(raw) >= 12; {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(raw); err != nil {
				break
			}
			next = b.FirstOffset + int64(b.LastOffsetDelta) + 1
			raw = raw[12+b.Length:]
		}
		return next, len(rp2.RecordBatches), took, nil
	}

	var lat []time.Duration
	var total time.Duration
	var bytes int64
	switch mode {
	case "catchup":
		for _, p := range parts {
			for off := p.start; off < p.end; {
				next, nb, took, err := fetch(p, off)
				if err != nil {
					return err
				}
				if next <= off {
					return fmt.Errorf("partition %d offset %d: no progress", p.id, off)
				}
				lat, total, bytes, off = append(lat, took), total+took, bytes+int64(nb), next
			}
		}
	case "random":
		for range n {
			p := parts[rand.IntN(len(parts))]
			if p.end <= p.start {
				continue
			}
			_, nb, took, err := fetch(p, p.start+rand.Int64N(p.end-p.start))
			if err != nil {
				return err
			}
			lat, total, bytes = append(lat, took), total+took, bytes+int64(nb)
		}
	default:
		return fmt.Errorf("--mode %q: want catchup or random", mode)
	}
	if len(lat) == 0 {
		return fmt.Errorf("no fetch made: the topic is empty")
	}
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
	fmt.Printf("fetchlat: %s: %d fetches of %d records in %d partitions, %.1f MB in %.2f s; p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		mode, len(lat), records, len(parts), float64(bytes)/1e6, total.Seconds(), q(0.5), q(0.9), q(0.99), q(1))
	return nil
}
