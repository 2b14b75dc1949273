package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/perf/internal/stats"
)

// kafkaReader consumes the messages topic and accounts for the records the
// run's publishers produced through the broker: count, latency from the
// payload stamp to the moment the reader holds the record, loss, duplicates.
type kafkaReader struct {
	cl      *kgo.Client
	cancel  context.CancelFunc
	done    chan struct{}
	minSent int64

	count   atomic.Int64
	foreign atomic.Int64

	mu       sync.Mutex
	hist     *hdrhistogram.Histogram
	trackers map[uint32]*stats.SeqTracker
	err      error
}

// startKafkaReader positions a reader at the current end of every partition of
// topic (or at the start, if the topic does not exist yet; records stamped
// before minSentNs are then skipped as another run's).
func startKafkaReader(broker, topic string, minSentNs int64) (*kafkaReader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := []kgo.Opt{kgo.SeedBrokers(broker), kgo.MetadataMinAge(time.Second)}
	adm, err := kgo.NewClient(base...)
	if err != nil {
		return nil, fmt.Errorf("cannot create kafka client for %s: %w", broker, err)
	}
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
	adm.Close()
	opts := append(base, kgo.FetchMaxWait(250*time.Millisecond), kgo.FetchMaxBytes(64<<20))
	parts := map[int32]kgo.Offset{}
	if err == nil {
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err == nil {
				parts[o.Partition] = kgo.NewOffset().At(o.Offset)
			}
		})
	}
	if len(parts) > 0 {
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	} else {
		opts = append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot create kafka reader for %s: %w", broker, err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	r := &kafkaReader{cl: cl, cancel: rcancel, done: make(chan struct{}), minSent: minSentNs,
		hist: stats.NewHist(), trackers: map[uint32]*stats.SeqTracker{}}
	go r.loop(rctx)
	return r, nil
}

func (r *kafkaReader) loop(ctx context.Context) {
	defer close(r.done)
	for {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		now := stats.NowNs()
		fs.EachError(func(t string, p int32, err error) {
			r.mu.Lock()
			r.err = fmt.Errorf("fetch %s[%d]: %w", t, p, err)
			r.mu.Unlock()
		})
		r.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			s, ok := stats.ReadStamp(rec.Value)
			if !ok || s.SentNs < r.minSent {
				r.foreign.Add(1)
				return
			}
			stats.RecordNs(r.hist, now-s.SentNs)
			t := r.trackers[s.Pub]
			if t == nil {
				t = &stats.SeqTracker{}
				r.trackers[s.Pub] = t
			}
			t.Add(s.Seq)
			r.count.Add(1)
		})
		r.mu.Unlock()
	}
}

// stop ends the reader and returns the loss against the publishers' acked prefixes.
func (r *kafkaReader) stop(acked map[int]uint64) (stats.Loss, *hdrhistogram.Histogram, error) {
	r.cancel()
	<-r.done
	r.cl.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	var l stats.Loss
	empty := &stats.SeqTracker{}
	for id, n := range acked {
		t := r.trackers[uint32(id)]
		if t == nil {
			t = empty
		}
		l.Account(t, n)
	}
	return l, r.hist, r.err
}
