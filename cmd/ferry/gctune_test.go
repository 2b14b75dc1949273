package main

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// The tuner's choices: idle heaps keep a quarter of the live heap as headroom, busy ones the runtime's default,
// in between the allocations of the horizon. No memory figure is asserted, only the mechanism.
func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name       string
		rate, live float64
		want       int
	}{
		{"idle connections", 10 << 10, 900 * mib, gcMinPercent},
		{"nothing allocated", 0, 20 * mib, gcMinPercent},
		{"connect storm", 50 * mib, 20 * mib, gcMaxPercent},
		{"busy fan-in", 100 * mib, 200 * mib, gcMaxPercent},
		{"in between", 4 * mib, 40 * mib, 50}, // 5 s of 4 MiB/s = 20 MiB = 50 % of 40 MiB
		{"no live heap yet", 1, 0, gcMaxPercent},
	} {
		if got := gcPercent(c.rate, c.live); got != c.want {
			t.Errorf("%s: gcPercent(%v B/s, %v B) = %d, want %d", c.name, c.rate, c.live, got, c.want)
		}
	}
}

// A tuner of a process that allocates nothing lowers GOGC to its minimum; one that allocates a lot raises it
// at once to the default.
func TestGCTunerFollowsAllocations(t *testing.T) {
	runtime.GC() // the live heap is known after a collection
	tu := newGCTuner()
	var set []int
	frees := 0
	tu.set = func(p int) int { set = append(set, p); return 0 }
	tu.free = func() { frees++ }
	tu.rate = 0
	tu.step(time.Hour) // an hour of this test's allocations is a negligible rate
	if tu.percent != gcMinPercent || len(set) != 1 || set[0] != gcMinPercent {
		t.Fatalf("idle: GOGC %d (set %v), want %d", tu.percent, set, gcMinPercent)
	}
	if frees != 1 {
		t.Fatalf("the end of the start-up burst returned memory %d times, want once", frees)
	}
	burst()
	tu.step(time.Millisecond) // 64 MiB in a millisecond
	if tu.percent != gcMaxPercent || set[len(set)-1] != gcMaxPercent {
		t.Fatalf("busy: GOGC %d (set %v), want %d", tu.percent, set, gcMaxPercent)
	}
	// The burst ends: GOGC falls back, but memory was returned less than gcReturnGap ago.
	tu.rate = 0
	tu.step(time.Hour)
	if tu.percent != gcMinPercent || frees != 1 {
		t.Fatalf("second burst within %v: GOGC %d, %d returns, want %d and 1", gcReturnGap, tu.percent, frees, gcMinPercent)
	}
	tu.lastRet = time.Now().Add(-gcReturnGap)
	burst()
	tu.step(time.Millisecond) // another burst, a minute later
	tu.rate = 0
	tu.step(time.Hour)
	if frees != 2 {
		t.Fatalf("burst after %v: %d returns, want 2", gcReturnGap, frees)
	}
}

var burstSink [][]byte

// burst allocates 64 MiB.
func burst() {
	burstSink = nil
	for range 64 {
		burstSink = append(burstSink, make([]byte, 1<<20))
	}
}

// The end of a collection makes the tuner sample at once, without waiting for its tick: a burst that starts
// while GOGC is at its minimum raises it at its first collection; a collection never lowers it. watchGC's
// signal comes after every collection, and keeps coming.
func TestGCTunerSamplesAfterCollections(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	collected := watchGC(ctx)
	for i := range 3 {
		runtime.GC()
		select {
		case <-collected:
		case <-time.After(10 * time.Second):
			t.Fatalf("collection %d: no signal", i)
		}
	}

	runtime.GC()
	tu := newGCTuner()
	sets := make(chan int, 16)
	tu.set = func(p int) int { sets <- p; return 0 }
	tu.free = func() {}
	tu.rate = 0
	tu.step(time.Hour)
	if p := <-sets; p != gcMinPercent {
		t.Fatalf("idle: GOGC %d, want %d", p, gcMinPercent)
	}
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		tu.run(ctx, nil, kick) // no tick: only a collection can make it sample
		close(done)
	}()
	time.Sleep(2 * gcSoonest) // a collection this soon after the last sample is not one to sample at
	burst()
	kick <- struct{}{}
	select {
	case p := <-sets:
		if p != gcMaxPercent {
			t.Fatalf("burst: GOGC %d, want %d", p, gcMaxPercent)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a collection during a burst did not make the tuner sample")
	}
	cancel()
	<-done

	// A collection in a lull changes nothing: lowering GOGC and returning memory are the tick's.
	frees := 0
	tu.free = func() { frees++ }
	if tu.raise(time.Hour) || tu.percent != gcMaxPercent || frees != 0 || len(sets) != 0 {
		t.Fatalf("a collection at a falling rate: GOGC %d, %d returns, %d changes; want %d and none", tu.percent, frees, len(sets), gcMaxPercent)
	}
}
