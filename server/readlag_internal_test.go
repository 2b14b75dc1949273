package server

import (
	"math"
	"testing"
	"time"
)

// The reader's view: the lag is the shortest wait of a window's records, once the window is over, if one of
// them had a backlog behind it; nothing otherwise, and nothing once the reader has not renewed it for a while.
func TestReadLagWindow(t *testing.T) {
	const limit = 10 * time.Millisecond
	r := readLag{limit: int64(limit)}
	t0 := wallEpoch + int64(time.Hour) // a fetch time, Unix ns
	mono := func(wall int64) int64 { return wall - wallEpoch }
	ms := int64(time.Millisecond)

	if got := r.age(mono(t0)); got != 0 {
		t.Fatalf("lag %v before any record", time.Duration(got))
	}
	// A window of late records, one of them with a backlog behind it: its shortest wait is the lag, once a
	// record of the next window arrives.
	r.note(30*time.Millisecond, t0, readLagMinRecords)
	r.note(20*time.Millisecond, t0+2*ms, 10)
	r.note(50*time.Millisecond, t0+4*ms, 0)
	if got := r.age(mono(t0 + 5*ms)); got != 0 {
		t.Fatalf("lag %v while the first window is still open", time.Duration(got))
	}
	r.note(time.Millisecond, t0+int64(readLagWindow), 0)
	if got := r.age(mono(t0 + int64(readLagWindow))); got != int64(20*time.Millisecond) {
		t.Fatalf("after a window of waits 30, 20, 50 ms with a backlog: lag %v, want 20ms (the shortest)", time.Duration(got))
	}
	if got := r.age(mono(t0+int64(readLagWindow)) + int64(readLagStale) + 1); got != 0 {
		t.Fatalf("lag %v after the reader renewed nothing for %v", time.Duration(got), readLagStale)
	}
	// The second window: late records, but none with a backlog behind it: a pause, not overload.
	r.note(40*time.Millisecond, t0+int64(readLagWindow)+ms, readLagMinRecords-1)
	t2 := t0 + 2*int64(readLagWindow)
	r.note(time.Millisecond, t2, 0)
	if got := r.age(mono(t2)); got != 0 {
		t.Fatalf("after a window with waits up to 40 ms and no backlog: lag %v, want 0", time.Duration(got))
	}

	off := readLag{}
	off.note(time.Hour, t0, 1<<40)
	off.note(time.Hour, t0+int64(time.Second), 1<<40)
	if got := off.age(mono(t0 + int64(time.Second))); got != 0 {
		t.Fatalf("with --read-lag-limit 0 the reader noted a lag of %v", time.Duration(got))
	}
}

// The share a loop drops: it grows while the lag is past the limit, by more when the lag is further past it or
// climbing, settles, falls back to nothing once the lag is under the limit, and never leaves 0–1.
func TestShedderShare(t *testing.T) {
	const limit = int64(10 * time.Millisecond)
	step := int64(shedEvery)
	var s shedder
	now := int64(time.Hour)
	run := func(lag int64, steps int) {
		for range steps {
			now += step
			s.step(lag, limit, now)
			if s.p < 0 || s.p > 1 {
				t.Fatalf("share %v out of 0–1", s.p)
			}
		}
	}

	run(limit/2, 10)
	if s.p != 0 {
		t.Fatalf("under the limit: share %v, want 0", s.p)
	}
	run(limit*3/2, 1) // the first step past the limit: the lag grew by one limit
	first := s.p
	if first <= 0 || first > shedMaxStep {
		t.Fatalf("first step past the limit: share %v, want in (0, %v]", first, shedMaxStep)
	}
	run(limit*3/2, 1) // the same lag again: only the integral part
	if d := s.p - first; d <= 0 || d >= first {
		t.Fatalf("a steady lag past the limit moved the share by %v, want more than 0 and less than the climbing step (%v)", d, first)
	}
	mid := s.p
	var far shedder
	far.step(limit*3/2, limit, now-step)
	far.p = mid
	far.step(limit*3, limit, now)
	var near shedder
	near.step(limit*3/2, limit, now-step)
	near.p = mid
	near.step(limit*3/2, limit, now)
	if far.p <= near.p {
		t.Fatalf("a lag of 3 limits moved the share to %v, one of 1.5 limits to %v: want more for the longer lag", far.p, near.p)
	}

	run(limit*3/2, 500)
	if s.p != 1 {
		t.Fatalf("a lag past the limit for a second: share %v, want 1 (the reader never caught up)", s.p)
	}
	prev := s.p
	run(0, 1)
	if d := prev - s.p; d <= 0 || d > shedMaxStep {
		t.Fatalf("caught up: the share fell by %v, want more than 0 and at most %v per step", d, shedMaxStep)
	}
	run(0, 200)
	if s.p != 0 {
		t.Fatalf("caught up for 400 ms: share %v, want 0", s.p)
	}

	// A loop that took no QoS 0 publish for a while compares the lag with nothing older than its last step.
	s = shedder{}
	s.step(0, limit, now)
	now += int64(time.Minute)
	s.step(limit*3/2, limit, now)
	if s.p <= 0 || s.p >= shedProportional/2 {
		t.Fatalf("first step after a minute without QoS 0: share %v, want a small one (no climb measured over the minute)", s.p)
	}
}

// qos0 drops about the share of the publishes it is asked about: none at 0, all at 1, some in between; and none
// with the limit off.
func TestShedderDraws(t *testing.T) {
	r := readLag{limit: int64(10 * time.Millisecond)}
	drops := func(p float64) int {
		s := shedder{p: p, thresh: uint32(p * math.MaxUint32), at: 1, due: math.MaxInt64}
		n := 0
		for range 10_000 {
			if s.qos0(&r, r.limit, 2) {
				n++
			}
		}
		return n
	}
	if n := drops(0); n != 0 {
		t.Fatalf("share 0: %d of 10,000 dropped", n)
	}
	if n := drops(1); n != 10_000 {
		t.Fatalf("share 1: %d of 10,000 dropped, want all", n)
	}
	if n := drops(0.5); n < 4_000 || n > 6_000 {
		t.Fatalf("share 0.5: %d of 10,000 dropped, want about half", n)
	}
	off := readLag{}
	off.held.Store(int64(time.Hour))
	s := shedder{p: 1, thresh: math.MaxUint32}
	if s.qos0(&off, off.limit, int64(time.Hour)) {
		t.Fatal("a QoS 0 publish dropped with --read-lag-limit 0")
	}
}
