package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
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
// A GOGC environment variable turns the tuning of GOGC off (the operator chose).
//
// The tuner also owns the soft memory limit (memlimit.go): it sets the limit planned from --memory-limit,
// GOMEMLIMIT or the retention bounds, keeps its derived part up to date with the compacted topics, and warns
// when the live heap nears it. GOGC sets how far the heap may grow past the live heap; the limit caps that
// growth, so under load the heap stays below the limit while the live heap does.
const (
	gcMinPercent = 25              // lowest GOGC: a collection per quarter of the live heap allocated
	gcMaxPercent = 100             // highest: the runtime's default
	gcHorizon    = 5 * time.Second // headroom = allocations expected in this time
	gcTick       = time.Second     // how often the rate is sampled
	gcReturnGap  = time.Minute     // at most one early return of memory per this time
	gcNearLimit  = 0.9             // warn when the live heap passes this share of the memory limit
	gcWarnGap    = 10 * time.Minute
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
	tuneGC  bool         // false: GOGC was set in the environment, only the memory limit is owned

	plan     atomic.Pointer[memoryLimit] // the memory limit to keep; nil: none planned yet
	limit    int64                       // the limit set, 0 for none
	setLimit func(int64) int64           // debug.SetMemoryLimit
	lastWarn time.Time
}

func newGCTuner() *gcTuner {
	t := &gcTuner{
		samples:  []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}},
		percent:  gcMaxPercent,
		peak:     gcMaxPercent,
		set:      debug.SetGCPercent,
		free:     debug.FreeOSMemory,
		setLimit: debug.SetMemoryLimit,
		tuneGC:   true,
	}
	metrics.Read(t.samples)
	t.allocs = t.samples[0].Value.Uint64()
	t.limit = limitInForce(t.setLimit) // GOMEMLIMIT's, if set
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
	t.keepLimit(live)
	if !t.tuneGC {
		return
	}
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

// limitMemory hands the tuner the memory limit to keep from its next step on. Safe for concurrent use.
func (t *gcTuner) limitMemory(ml memoryLimit) {
	t.plan.Store(&ml)
}

// keepLimit sets the planned memory limit when it has changed by 1 MiB or more (its derived part follows the
// compacted topics), and warns, at most once per gcWarnGap, when the live heap nears it.
func (t *gcTuner) keepLimit(live uint64) {
	ml := t.plan.Load()
	if ml == nil || ml.source == "GOMEMLIMIT" {
		return // the runtime's own limit, from the environment, is left alone
	}
	want := ml.static
	if ml.others != nil {
		want += ml.others()
	}
	if d := want - t.limit; d >= 1<<20 || -d >= 1<<20 {
		if want == 0 {
			t.setLimit(math.MaxInt64)
		} else {
			t.setLimit(want)
		}
		t.limit = want
		if t.log != nil {
			t.log.Debug("memory limit set", "limit_bytes", want, "source", ml.source)
		}
	}
	if t.limit > 0 && float64(live) > gcNearLimit*float64(t.limit) && time.Since(t.lastWarn) >= gcWarnGap {
		t.lastWarn = time.Now()
		if t.log != nil {
			t.log.Warn("the live heap is near the memory limit: the garbage collector runs more often (at most about half the CPU), and memory may pass the limit",
				"live_heap", formatMiB(int64(live)), "limit", formatMiB(t.limit), "source", ml.source)
		}
	}
}

// tuneGC runs the tuner until ctx ends: GOGC, unless GOGC is set in the environment, and the memory limit
// handed to it (limitMemory).
func tuneGC(ctx context.Context, log *slog.Logger) *gcTuner {
	t := newGCTuner()
	t.log = log
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Info("GOGC set in the environment: the garbage collector's headroom is not tuned", "GOGC", v)
		t.tuneGC = false
	}
	go func() {
		tick := time.NewTicker(gcTick)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				t.step(now.Sub(last))
				last = now
			}
		}
	}()
	return t
}
