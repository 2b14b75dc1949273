package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaTally is what a read of the messages topic found for one run's topics.
type kafkaTally struct {
	records  int64
	foreign  int64             // records under the prefix without a stamp
	occ      map[ackKey]uint32 // occurrences per message
	reorders int64             // first occurrences of a sequence number below one already seen on the key
	perKey   map[string]uint64 // highest sequence number seen per key (+1)
	byQoS    [3]int64          // records per QoS (from the key)
	first    map[ackKey]where  // where each QoS 2 message was read first
	dups     []string          // where QoS 2 duplicates were read, for the first few
	kafkaScan
}

// where a record was read: its partition, offset and the producer epoch that wrote it.
type where struct {
	part  int32
	off   int64
	epoch int16
}

func (w where) String() string {
	return fmt.Sprintf("p%d@%d (producer epoch %d)", w.part, w.off, w.epoch)
}

// maxDupsShown bounds the QoS 2 duplicates verify prints.
const maxDupsShown = 10

// kafkaScan is what a read of a topic reached.
type kafkaScan struct {
	partEnds map[int32][2]int64 // start, end offset per partition at the start of the read
	reached  map[int32]int64    // last offset read per partition
	errs     []string
}

// readKafka reads topic from the start to the offsets committed (read_committed) when the read began and
// tallies the records whose key starts with prefix. The key after the prefix must be q<qos>/<publisher>.
func readKafka(broker, topic, prefix string, timeout time.Duration) (*kafkaTally, error) {
	t := &kafkaTally{occ: map[ackKey]uint32{}, perKey: map[string]uint64{}, first: map[ackKey]where{}}
	sc, err := scanKafka(broker, topic, prefix, timeout, func(r *kgo.Record) {
		k := string(r.Key)
		rest := k[len(prefix):]
		if len(rest) < 3 || rest[0] != 'q' || rest[1] < '0' || rest[1] > '2' || rest[2] != '/' {
			t.foreign++
			return
		}
		s, ok := stampOf(r.Value)
		if !ok {
			t.foreign++
			return
		}
		q := rest[1] - '0'
		t.records++
		t.byQoS[q]++
		ak := ackKey{qos: q, pub: s.Pub, seq: s.Seq}
		t.occ[ak]++
		if q == 2 {
			w := where{r.Partition, r.Offset, r.ProducerEpoch}
			if t.occ[ak] == 1 {
				t.first[ak] = w
			} else if len(t.dups) < maxDupsShown {
				t.dups = append(t.dups, fmt.Sprintf("%s seq %d: %v, again %v", k, s.Seq, t.first[ak], w))
			}
		}
		if t.occ[ak] == 1 && s.Seq+1 < t.perKey[k] {
			t.reorders++
		}
		if s.Seq+1 > t.perKey[k] {
			t.perKey[k] = s.Seq + 1
		}
	})
	t.kafkaScan = sc
	return t, err
}

// scanKafka reads topic from the start to the offsets committed (read_committed) when the read began and
// hands each record whose key starts with prefix to each (on the calling goroutine).
func scanKafka(broker, topic, prefix string, timeout time.Duration, each func(*kgo.Record)) (kafkaScan, error) {
	t := kafkaScan{partEnds: map[int32][2]int64{}, reached: map[int32]int64{}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	base := []kgo.Opt{kgo.SeedBrokers(strings.Split(broker, ",")...), kgo.MetadataMinAge(time.Second)}
	adm, err := kgo.NewClient(base...)
	if err != nil {
		return t, fmt.Errorf("cannot create kafka client for %s: %w", broker, err)
	}
	ad := kadm.NewClient(adm)
	ends, err := ad.ListCommittedOffsets(ctx, topic)
	if err != nil {
		adm.Close()
		return t, fmt.Errorf("cannot list the committed end offsets of %s: %w", topic, err)
	}
	starts, err := ad.ListStartOffsets(ctx, topic)
	adm.Close()
	if err != nil {
		return t, fmt.Errorf("cannot list the start offsets of %s: %w", topic, err)
	}
	parts := map[int32]kgo.Offset{}
	var lerr error
	starts.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lerr = o.Err
			return
		}
		e, _ := ends.Lookup(topic, o.Partition)
		if e.Err != nil {
			lerr = e.Err
			return
		}
		t.partEnds[o.Partition] = [2]int64{o.Offset, e.Offset}
		if e.Offset > o.Offset {
			parts[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	if lerr != nil {
		return t, fmt.Errorf("cannot list offsets of %s: %w", topic, lerr)
	}
	if len(parts) == 0 {
		return t, nil
	}
	cl, err := kgo.NewClient(append(base, kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(500*time.Millisecond),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))...)
	if err != nil {
		return t, fmt.Errorf("cannot create kafka reader: %w", err)
	}
	defer cl.Close()
	idleSince := time.Now()
	for {
		done := true
		for p := range parts {
			if t.reached[p] < t.partEnds[p][1]-1 {
				done = false
			}
		}
		if done {
			return t, nil
		}
		if time.Since(idleSince) > 10*time.Second { // read_committed skips control records: the last offsets may never show
			return t, nil
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			return t, fmt.Errorf("reading %s took longer than %v", topic, timeout)
		}
		fs.EachError(func(tp string, p int32, err error) {
			if err != context.DeadlineExceeded {
				t.errs = append(t.errs, fmt.Sprintf("%s[%d]: %v", tp, p, err))
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			idleSince = time.Now()
			if r.Offset > t.reached[r.Partition] {
				t.reached[r.Partition] = r.Offset
			}
			if r.Offset >= t.partEnds[r.Partition][1] {
				return // produced after the read began
			}
			if !strings.HasPrefix(string(r.Key), prefix) {
				return
			}
			each(r)
		})
	}
}

// verifyResult compares the acknowledged messages with what Kafka holds.
type verifyResult struct {
	acked, found, lost, dup [3]int64
	records                 int64
	reorders                int64
}

func compare(acked map[ackKey]struct{}, t *kafkaTally) verifyResult {
	var v verifyResult
	for k := range acked {
		v.acked[k.qos]++
		if t.occ[k] > 0 {
			v.found[k.qos]++
		} else {
			v.lost[k.qos]++
		}
	}
	for k, n := range t.occ {
		if n > 1 {
			v.dup[k.qos] += int64(n - 1)
		}
	}
	v.records = t.records
	v.reorders = t.reorders
	return v
}

func (v verifyResult) String() string {
	return fmt.Sprintf("q1_acked=%d q1_found=%d q1_lost=%d q1_dup=%d q2_acked=%d q2_found=%d q2_lost=%d q2_dup=%d kafka_records=%d kafka_reorders=%d",
		v.acked[1], v.found[1], v.lost[1], v.dup[1], v.acked[2], v.found[2], v.lost[2], v.dup[2], v.records, v.reorders)
}

// verify reads ack logs and the messages topic and fails on any acknowledged message Kafka does not hold.
func verify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	broker := fs.String("kafka", "127.0.0.1:9092", "Kafka bootstrap address")
	topic := fs.String("topic", "mqtt-messages", "the messages topic")
	prefix := fs.String("prefix", "chaos/r/", "key prefix of the run's records")
	logs := fs.String("acklog", "acks.log", "ack log files, comma-separated")
	strict := fs.Bool("strict-qos2", false, "fail on QoS 2 duplicates (exactly-once)")
	order := fs.Bool("check-order", false, "fail when a key's sequence numbers are out of order in Kafka")
	timeout := fs.Duration("timeout", 3*time.Minute, "time allowed for the read")
	_ = fs.Parse(args)
	acked, err := readAckLogs(strings.Split(*logs, ","))
	if err != nil {
		return err
	}
	t, err := readKafka(*broker, *topic, *prefix, *timeout)
	if err != nil {
		return err
	}
	v := compare(acked, t)
	fmt.Printf("verify: %s\n", v)
	for _, d := range t.dups {
		fmt.Printf("verify: QoS 2 duplicate: %s\n", d)
	}
	var bad []string
	if n := v.lost[1] + v.lost[2]; n > 0 {
		bad = append(bad, fmt.Sprintf("%d acknowledged messages are not in Kafka", n))
	}
	if *strict && v.dup[2] > 0 {
		bad = append(bad, fmt.Sprintf("%d QoS 2 duplicates in Kafka (STRICT_QOS2)", v.dup[2]))
	}
	if *order && v.reorders > 0 {
		bad = append(bad, fmt.Sprintf("%d records out of order in Kafka", v.reorders))
	}
	if len(t.errs) > 0 {
		bad = append(bad, "fetch errors: "+strings.Join(t.errs, "; "))
	}
	if v.acked[1]+v.acked[2] == 0 {
		bad = append(bad, "the ack logs hold nothing")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}
