package kafkamux

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// HistogramBuckets is the number of buckets of a [Histogram]: bucket i < HistogramBuckets-1 counts durations
// below 2^i µs (1 µs, 2 µs, 4 µs … 2^25 µs ≈ 33.6 s), the last one everything longer.
const HistogramBuckets = 27

// Histogram counts durations in power-of-two buckets of microseconds. Observe is lock-free and allocation-free:
// one bits.Len64 and two atomic adds (about 12 ns, see BenchmarkHistogramObserve), so it can sit on an event
// loop or a Kafka callback. Power-of-two buckets bound the error of a quantile estimated from them to a factor
// of two, which is what an operator needs to see a p99 move; finer buckets would cost more series per scrape.
//
// The zero value is ready to use. Safe for concurrent use.
type Histogram struct {
	counts [HistogramBuckets]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// Observe adds one duration; a negative one counts as 0.
func (h *Histogram) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := bits.Len64(uint64(d / time.Microsecond)) // us in [2^(i-1), 2^i) → bucket i
	if i >= HistogramBuckets {
		i = HistogramBuckets - 1
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// HistogramBound returns the exclusive upper bound of bucket i, or -1 for the last (unbounded) bucket.
func HistogramBound(i int) time.Duration {
	if i >= HistogramBuckets-1 {
		return -1
	}
	return time.Duration(1<<i) * time.Microsecond
}

// HistogramSnapshot is a copy of a Histogram's counts.
type HistogramSnapshot struct {
	Counts [HistogramBuckets]uint64 // per bucket, not cumulative
	Count  uint64                   // the sum of Counts
	Sum    time.Duration
}

// Snapshot copies the counts. Buckets are read one by one while observations may go on, so the copy is not an
// instant of the histogram, but Count is always the sum of the copied buckets.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}
