package server

import (
	"testing"
	"time"
)

// BenchmarkCounterInc is the cost of one metric increment on the hot path (a publish counted by QoS): one atomic
// add on a counter allocated with the Server, no lock, no lookup, no allocation.
func BenchmarkCounterInc(b *testing.B) {
	var m Metrics
	b.ReportAllocs()
	for i := range b.N {
		m.publishesIn[i&1].Add(1)
	}
}

// BenchmarkCounterIncParallel is the same increment from every P at once: the cost when all event loops count
// into one cache line.
func BenchmarkCounterIncParallel(b *testing.B) {
	var m Metrics
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.publishesIn[1].Add(1)
		}
	})
}

// BenchmarkProduceTiming is what measuring produce latency adds per record: a clock read on the loop, one on
// the Kafka callback, and a histogram observation.
func BenchmarkProduceTiming(b *testing.B) {
	var m Metrics
	b.ReportAllocs()
	for range b.N {
		start := time.Now()
		m.loopLag.Observe(time.Since(start))
	}
}
