package offload

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// newBoundLane is a lane with only what the time bound touches: 8192 records, a 10 ms delay, a floor of 256.
func newBoundLane() *Lane {
	return &Lane{maxRecs: 8192, maxBytes: 8 << 20, resumePct: 75, maxDelay: 10 * time.Millisecond, minRecs: 256, limRecs: 8192}
}

// completeWindow feeds n completions that each took lat into l, as if they came over 100 ms, and closes the window.
func completeWindow(l *Lane, n int, lat time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.winStart = time.Now().Add(-100 * time.Millisecond)
	l.winMin = lat
	l.winDone = 0
	l.timeBound(n, lat)
}

func TestLaneTimeBound(t *testing.T) {
	t.Run("a standing queue bounds the records in flight to the delay at the completion rate", func(t *testing.T) {
		l := newBoundLane()
		completeWindow(l, 1000, time.Millisecond) // Kafka's own round trip: 1 ms
		// 10,000 records in 100 ms (100,000/s), every one waited ≥ 40 ms: 10 ms at that rate is about 1,000.
		completeWindow(l, 10000, 40*time.Millisecond)
		if l.limRecs < 900 || l.limRecs > 1100 {
			t.Fatalf("limit %d records, want about 1,000 (100,000/s × 10 ms)", l.limRecs)
		}
	})
	t.Run("no standing queue: a burst is taken whole", func(t *testing.T) {
		l := newBoundLane()
		completeWindow(l, 100, 500*time.Microsecond) // Kafka keeps up
		if l.limRecs != 8192 {
			t.Fatalf("limit %d records while Kafka keeps up, want the count budget 8192", l.limRecs)
		}
	})
	t.Run("the floor holds at any rate", func(t *testing.T) {
		l := newBoundLane()
		completeWindow(l, 1000, time.Millisecond)
		completeWindow(l, 10, 50*time.Millisecond)
		if l.limRecs != 256 {
			t.Fatalf("limit %d records at 100 completions/s, want the floor 256", l.limRecs)
		}
	})
	t.Run("a slow Kafka's own round trip is not mistaken for a queue", func(t *testing.T) {
		l := newBoundLane()
		// Every completion takes 30 ms (a distant cluster, no queue of ours): the delay is 2 × 30 ms, not 10 ms.
		for range 5 {
			completeWindow(l, 10000, 30*time.Millisecond)
		}
		if l.limRecs != 8192 {
			t.Fatalf("limit %d records against a 30 ms Kafka that keeps up, want the count budget 8192", l.limRecs)
		}
		// A queue on top of that round trip is still bounded, by the longer delay: 100,000/s × 60 ms.
		completeWindow(l, 10000, 90*time.Millisecond)
		if want := 6000; l.limRecs < want*9/10 || l.limRecs > want*11/10 {
			t.Fatalf("limit %d records, want about %d", l.limRecs, want)
		}
	})
	t.Run("the limit grows back when Kafka catches up and records were turned away", func(t *testing.T) {
		l := newBoundLane()
		completeWindow(l, 1000, time.Millisecond)
		completeWindow(l, 10000, 40*time.Millisecond)
		low := l.limRecs
		l.winFull = true
		completeWindow(l, 10000, time.Millisecond)
		if l.limRecs != low+low/2 {
			t.Fatalf("limit %d after a window without a standing queue that refused records, want %d", l.limRecs, low+low/2)
		}
		for range 20 {
			l.winFull = true
			completeWindow(l, 10000, time.Millisecond)
		}
		if l.limRecs != 8192 {
			t.Fatalf("limit %d, want it back at the count budget 8192", l.limRecs)
		}
	})
}

// Against a Kafka that falls behind (every produce answered 40 ms late, after a fast start), a lane stops
// taking records at far fewer than its count budget: the queue is bounded by time, and TryPublish says ErrFull.
func TestLaneTimeBoundAgainstSlowKafka(t *testing.T) {
	m := newMux(t)
	o, err := New(m, 1, LaneRecords(4096), LaneDelay(5*time.Millisecond), LaneMinRecords(8))
	if err != nil {
		t.Fatal(err)
	}
	lane := o.Lane(0)
	rec := newRecorder(t)
	id := 0
	publish := func() error {
		id++
		return lane.TryPublish(msg(fmt.Sprintf("t/%d", id%7), 10), rec.done(id))
	}
	for range 200 { // Kafka's own round trip, while it keeps up
		if err := publish(); err != nil {
			t.Fatal(err)
		}
		rec.wait(t, int64(id))
	}
	c := m.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(40 * time.Millisecond) })
		return nil, nil, false
	})
	refused := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && o.Stats().LimitRecords == 4096 {
		if errors.Is(publish(), ErrFull) {
			refused++
			time.Sleep(time.Millisecond)
		}
	}
	s := o.Stats()
	if s.LimitRecords >= 4096 {
		t.Fatalf("limit still %d records after 3 s of 40 ms produces (refused %d)", s.LimitRecords, refused)
	}
	if r, _ := inFlight(lane); r > s.LimitRecords {
		if err := publish(); !errors.Is(err, ErrFull) {
			t.Fatalf("publish with %d records in flight over the time-derived limit %d: err = %v, want ErrFull", r, s.LimitRecords, err)
		}
	}
	t.Logf("limit %d records after the standing queue (count budget 4096)", s.LimitRecords)
}
