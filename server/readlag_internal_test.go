package server

import (
	"math"
	"testing"
	"time"
)

// The reader's view: a record read with a backlog behind it makes the lag the time since its timestamp, so the
// lag keeps growing while the reader reads nothing more; a record with (nearly) nothing behind it means no lag.
func TestReadLagAge(t *testing.T) {
	const limit = 10 * time.Millisecond
	r := readLag{limit: int64(limit)}
	at := func(mono int64) int64 { return mono + wallEpoch } // a timestamp whose monoNow is mono

	if got := r.age(int64(time.Hour)); got != 0 {
		t.Fatalf("lag %v before any record", time.Duration(got))
	}
	ts := int64(time.Minute)
	r.note(at(ts), readLagMinRecords)
	for _, later := range []time.Duration{0, 5 * time.Millisecond, time.Second} {
		if got := r.age(ts + int64(later)); got != int64(later) {
			t.Fatalf("%v after a record with a backlog behind it: lag %v, want %v", later, time.Duration(got), later)
		}
	}
	r.note(at(ts+int64(time.Millisecond)), readLagMinRecords-1)
	if got := r.age(ts + int64(time.Second)); got != 0 {
		t.Fatalf("after a record with %d behind it (a pause, not a backlog): lag %v, want 0", readLagMinRecords-1, time.Duration(got))
	}
	r.note(at(ts+int64(2*time.Millisecond)), 10*readLagMinRecords)
	if got := r.age(ts + int64(3*time.Millisecond)); got != int64(time.Millisecond) {
		t.Fatalf("backlog again: lag %v, want 1ms", time.Duration(got))
	}
	if got := r.age(ts); got != 0 {
		t.Fatalf("a record stamped after now (another clock): lag %v, want 0", time.Duration(got))
	}

	off := readLag{}
	off.note(at(ts), 1<<40)
	if got := off.age(ts + int64(time.Hour)); got != 0 {
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
			if s.qos0(&r, 2) {
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
	if s.qos0(&off, int64(time.Hour)) {
		t.Fatal("a QoS 0 publish dropped with --read-lag-limit 0")
	}
}
