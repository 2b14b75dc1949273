package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The garbage collector's headroom follows the allocation rate (docs/architecture.md, "Memory of idle
// connections").
//
// With Go's default GOGC=100 the heap grows to twice the live heap before each collection, and the process
// keeps that much resident. An edge server's live heap is mostly connection state that lives for hours;
// doubling it buys nothing when little is being allocated: 15,000 idle connections held about 1,600 B of
// RSS each for about 950 B of live heap. So Ferry sets GOGC from what the next collections would cost:
// the headroom is the allocations of the next gcHorizon (the collector then runs about once per horizon),
// but never below gcMinPercent nor above Go's default of the live heap.
//
//   - idle, or a steady trickle of keep-alives: GOGC gcMinPercent, the heap stays near 1.25 × live;
//   - a connect storm or a busy fan-in: GOGC up to 100, exactly the runtime's default, so throughput pays
//     nothing for it (a fixed GOGC of 25 cut QoS 1 fan-in through the embedded Kafka by a third).
//
// A GOGC environment variable turns the tuner off (the operator chose); GOMEMLIMIT works as always on top.
const (
	gcMinPercent = 25                    // lowest GOGC: a collection per quarter of the live heap allocated
	gcMaxPercent = 100                   // highest: the runtime's default
	gcHorizon    = 5 * time.Second       // headroom = allocations expected in this time
	gcTick       = time.Second           // how often the rate is sampled, at least
	gcSoonest    = 10 * time.Millisecond // a collection samples at once if at least this long after the last sample
	gcReturnGap  = time.Minute           // at most one early return of memory per this time
)

// gcPercent is the GOGC for a heap of live bytes allocating rate bytes per second.
func gcPercent(rate, live float64) int {
	if live <= 0 {
		return gcMaxPercent
	}
	p := int(100 * rate * gcHorizon.Seconds() / live)
	return min(max(p, gcMinPercent), gcMaxPercent)
}

// gcTuner samples the allocation rate and the live heap every gcTick and sets GOGC.
type gcTuner struct {
	samples []metrics.Sample
	allocs  uint64  // cumulative bytes allocated at the last sample
	rate    float64 // smoothed allocation rate, bytes per second
	percent int     // GOGC in force
	peak    int     // highest GOGC since memory was last returned to the OS
	lastRet time.Time
	set     func(int) int
	free    func()       // debug.FreeOSMemory
	log     *slog.Logger // nil: no debug line per change
}

func newGCTuner() *gcTuner {
	t := &gcTuner{
		samples: []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}},
		percent: gcMaxPercent,
		peak:    gcMaxPercent,
		set:     debug.SetGCPercent,
		free:    debug.FreeOSMemory,
	}
	metrics.Read(t.samples)
	t.allocs = t.samples[0].Value.Uint64()
	return t
}

// step takes one sample, dt after the previous one, and sets GOGC if it should change. A rising rate is
// followed at once (a storm must not run the collector back to back), a falling one is smoothed (a pause of
// a second in a busy stream does not shrink the heap only to grow it again).
func (t *gcTuner) step(dt time.Duration) {
	metrics.Read(t.samples)
	allocs, live := t.samples[0].Value.Uint64(), t.samples[1].Value.Uint64()
	r := float64(allocs-t.allocs) / dt.Seconds()
	t.allocs = allocs
	if r >= t.rate {
		t.rate = r
	} else {
		t.rate = 0.5*t.rate + 0.5*r
	}
	p := gcPercent(t.rate, float64(live))
	// Small changes are not worth a new heap goal; reaching either bound always is.
	if d := p - t.percent; d >= t.percent/8 || -d >= t.percent/8 || p != t.percent && (p == gcMinPercent || p == gcMaxPercent) {
		t.set(p)
		t.percent = p
		if t.log != nil {
			t.log.Debug("garbage collector headroom changed", "gogc", p, "alloc_rate_bytes", int64(t.rate), "live_heap_bytes", live)
		}
	}
	t.peak = max(t.peak, p)
	// A burst (a connect storm) has just ended: the heap grew to twice the live heap during it, and the
	// runtime would give those pages back only slowly. Collect and return them now, once per burst and at
	// most once per gcReturnGap: a collection of the live heap, as the burst ran many of.
	if p == gcMinPercent && t.peak >= gcMaxPercent/2 && time.Since(t.lastRet) >= gcReturnGap {
		t.free()
		t.peak, t.lastRet = p, time.Now()
		if t.log != nil {
			t.log.Debug("garbage collector returned the memory of a burst to the OS", "live_heap_bytes", live)
		}
	}
}

// raise takes a sample dt after the previous one, but only if the allocation rate rose: then it raises GOGC
// as step would and reports true. Otherwise it changes nothing, and the next sample covers this interval too.
func (t *gcTuner) raise(dt time.Duration) bool {
	metrics.Read(t.samples)
	allocs, live := t.samples[0].Value.Uint64(), t.samples[1].Value.Uint64()
	r := float64(allocs-t.allocs) / dt.Seconds()
	if r <= t.rate {
		return false
	}
	t.allocs, t.rate = allocs, r
	if p := gcPercent(r, float64(live)); p-t.percent >= t.percent/8 || p > t.percent && p == gcMaxPercent {
		t.set(p)
		t.percent = p
		t.peak = max(t.peak, p)
		if t.log != nil {
			t.log.Debug("garbage collector headroom changed", "gogc", p, "alloc_rate_bytes", int64(r), "live_heap_bytes", live)
		}
	}
	return true
}

// tuneGC runs the tuner until ctx ends, unless GOGC is set in the environment.
func tuneGC(ctx context.Context, log *slog.Logger) {
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Info("GOGC set in the environment: the garbage collector's headroom is not tuned", "GOGC", v)
		return
	}
	t := newGCTuner()
	t.log = log
	tick := time.NewTicker(gcTick)
	go func() {
		defer tick.Stop()
		t.run(ctx, tick.C, watchGC(ctx))
	}()
}

// run samples at every tick, and at the end of every collection at least gcSoonest after the last sample:
// a burst that starts while GOGC is low (an idle server's) runs the collector back to back until the rate is
// seen, and is seen at its first collection instead of at the next tick. Idle, nothing collects, and the
// tick alone samples. A collection's sample only raises GOGC (raise); lowering it, and returning a burst's
// memory, stay with the tick: a sample of a few milliseconds inside a burst can see a lull.
func (t *gcTuner) run(ctx context.Context, tick <-chan time.Time, collected <-chan struct{}) {
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick:
			t.step(now.Sub(last))
			last = now
		case <-collected:
			if now := time.Now(); now.Sub(last) >= gcSoonest && t.raise(now.Sub(last)) {
				last = now
			}
		}
	}
}

// watchGC returns a channel that receives after every garbage collection (at most one waiting), until ctx
// ends: an unreachable sentinel's cleanup runs after the collection that frees it, and arms the next one.
func watchGC(ctx context.Context) <-chan struct{} {
	collected := make(chan struct{}, 1)
	var arm func(int)
	arm = func(int) {
		if ctx.Err() != nil {
			return
		}
		select {
		case collected <- struct{}{}:
		default:
		}
		runtime.AddCleanup(new(gcSentinel), arm, 0)
	}
	runtime.AddCleanup(new(gcSentinel), arm, 0)
	return collected
}

// gcSentinel holds a pointer so that it is not packed with other small objects (the tiny allocator keeps
// such a block alive as long as any of them lives): it is freed by the first collection after it is made.
type gcSentinel struct{ _ *byte }
