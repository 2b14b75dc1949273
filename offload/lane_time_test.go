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
	l.timeBound(n, lat, time.Now())
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

// newQoS0Lane is a lane with only what the QoS 0 budget touches: 8192 records, a 2 ms QoS 0 delay, a floor of
// 256, and no LaneDelay.
func newQoS0Lane() *Lane {
	return &Lane{maxRecs: 8192, maxBytes: 8 << 20, resumePct: 75, minRecs: 256, limRecs: 8192, qos0Delay: 2 * time.Millisecond, qos0Recs: 8192}
}

// completeQoS0Window feeds n completions that each took lat into l, as if they came over 10 ms of work, and
// closes the window.
func completeQoS0Window(l *Lane, n int, lat time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.q0Start, l.q0Done, l.q0Lat = now.Add(-10*time.Millisecond), 0, 0
	l.qos0Bound(n, lat, now)
}

func TestLaneQoS0Budget(t *testing.T) {
	t.Run("records that wait past the delay bound QoS 0 to what Kafka completes in it", func(t *testing.T) {
		l := newQoS0Lane()
		// 2,000 records in 10 ms (200,000/s), each waited 20 ms: 2 ms at that rate is 400 records.
		completeQoS0Window(l, 2000, 20*time.Millisecond)
		if l.qos0Recs < 360 || l.qos0Recs > 440 {
			t.Fatalf("QoS 0 budget %d records, want about 400 (200,000/s × 2 ms)", l.qos0Recs)
		}
		if l.limRecs != 8192 {
			t.Fatalf("record limit %d: the QoS 0 budget moved the limit of every record", l.limRecs)
		}
	})
	t.Run("a burst Kafka completes within the delay is taken whole", func(t *testing.T) {
		l := newQoS0Lane()
		completeQoS0Window(l, 5000, 1500*time.Microsecond)
		if l.qos0Recs != 8192 {
			t.Fatalf("QoS 0 budget %d records while records wait 1.5 ms, want the count budget 8192", l.qos0Recs)
		}
	})
	t.Run("the floor holds at any rate", func(t *testing.T) {
		l := newQoS0Lane()
		completeQoS0Window(l, 10, 50*time.Millisecond)
		if l.qos0Recs != 256 {
			t.Fatalf("QoS 0 budget %d records at 1,000 completions/s, want the floor 256", l.qos0Recs)
		}
	})
	t.Run("a slow Kafka's own round trip is not mistaken for a queue", func(t *testing.T) {
		l := newQoS0Lane()
		l.baseMin = 5 * time.Millisecond // the fastest completion of the last seconds: a distant cluster
		completeQoS0Window(l, 2000, 8*time.Millisecond)
		if l.qos0Recs != 8192 {
			t.Fatalf("QoS 0 budget %d records against a 5 ms Kafka at 8 ms, want the count budget 8192", l.qos0Recs)
		}
		completeQoS0Window(l, 2000, 30*time.Millisecond) // a queue on top of it: bounded by 2 × 5 ms
		if want := 2000; l.qos0Recs < want*9/10 || l.qos0Recs > want*11/10 {
			t.Fatalf("QoS 0 budget %d records, want about %d (200,000/s × 10 ms)", l.qos0Recs, want)
		}
	})
	t.Run("the budget grows back when Kafka catches up and it turned messages away", func(t *testing.T) {
		l := newQoS0Lane()
		completeQoS0Window(l, 2000, 20*time.Millisecond)
		low := l.qos0Recs
		completeQoS0Window(l, 2000, time.Millisecond) // no refusal: the budget stays
		if l.qos0Recs != low {
			t.Fatalf("QoS 0 budget %d after a window that refused nothing, want %d", l.qos0Recs, low)
		}
		for range 20 {
			l.mu.Lock()
			now := time.Now()
			l.q0Start, l.q0Done, l.q0Lat, l.q0Refused = now.Add(-10*time.Millisecond), 0, 0, true
			l.qos0Bound(2000, time.Millisecond, now)
			l.mu.Unlock()
		}
		if l.qos0Recs != 8192 {
			t.Fatalf("QoS 0 budget %d, want it back at the count budget 8192", l.qos0Recs)
		}
	})
	t.Run("a lane that went idle starts a new window", func(t *testing.T) {
		l := newQoS0Lane()
		l.mu.Lock()
		now := time.Now()
		// Slow completions a second ago, then the lane emptied: the idle second is not part of the rate.
		l.q0Start, l.q0Done, l.q0Lat = now.Add(-time.Second), 1, 20*time.Millisecond
		l.mu.Unlock()
		if err := l.take(1, 10, true); err != nil {
			t.Fatal(err)
		}
		l.mu.Lock()
		l.qos0Bound(100, 20*time.Millisecond, now)
		start, done := l.q0Start, l.q0Done
		l.mu.Unlock()
		if !start.Equal(now) || done != 100 {
			t.Fatalf("window after an idle second: started %v ago with %d records, want a new one with 100", now.Sub(start), done)
		}
		if l.qos0Recs != 8192 {
			t.Fatalf("QoS 0 budget %d after an idle gap, want the count budget 8192", l.qos0Recs)
		}
	})
	t.Run("a slow Kafka answering in bursts is measured across its gaps", func(t *testing.T) {
		l := newQoS0Lane()
		l.recs = 5000 // never idle
		l.mu.Lock()
		now := time.Now()
		// A burst of 1,000 completions every 30 ms, each record having waited 60 ms: 33,000/s.
		l.q0Start, l.q0Done, l.q0Lat = now.Add(-30*time.Millisecond), 1000, 1000*60*time.Millisecond
		l.qos0Bound(1000, 60*time.Millisecond, now)
		l.mu.Unlock()
		if l.qos0Recs != 256 {
			t.Fatalf("QoS 0 budget %d records, want the floor 256 (2,000 records in 30 ms × 2 ms is 133)", l.qos0Recs)
		}
	})
}

// take refuses a QoS 0 message past the QoS 0 budget with ErrLate, which is an ErrFull that does not pause the
// lane; a QoS 1 message with as many records in flight is taken.
func TestLaneTakeQoS0(t *testing.T) {
	l := newQoS0Lane()
	l.qos0Recs = 4
	for i := range 4 {
		if err := l.take(1, 10, true); err != nil {
			t.Fatalf("QoS 0 record %d within the budget: %v", i, err)
		}
	}
	err := l.take(1, 10, true)
	if !errors.Is(err, ErrLate) || !errors.Is(err, ErrFull) {
		t.Fatalf("QoS 0 record past the budget: err = %v, want ErrLate (an ErrFull)", err)
	}
	if l.paused || l.full != 0 || l.late != 1 || !l.q0Refused {
		t.Fatalf("after ErrLate: paused %v, full %d, late %d, refused %v; want not paused, 0, 1, true", l.paused, l.full, l.late, l.q0Refused)
	}
	if err := l.take(1, 10, false); err != nil {
		t.Fatalf("QoS 1 record past the QoS 0 budget: %v, want it taken", err)
	}
	if l.recs != 5 {
		t.Fatalf("%d records in flight, want 5", l.recs)
	}
	l.recs = 0 // an empty lane takes a QoS 0 message whatever its budget
	l.qos0Recs = 0
	if err := l.take(1, 10, true); err != nil {
		t.Fatalf("QoS 0 record on an empty lane: %v", err)
	}
}

// Against a Kafka that falls behind (every produce answered 30 ms late), QoS 0 messages are refused with
// ErrLate at far fewer records in flight than the count budget, while QoS 1 messages are still taken up to it:
// QoS 0 is shed, QoS 1 waits.
func TestLaneQoS0BudgetAgainstSlowKafka(t *testing.T) {
	m := newMux(t)
	o, err := New(m, 1, LaneRecords(4096), LaneDelay(0), LaneQoS0Delay(2*time.Millisecond), LaneMinRecords(8))
	if err != nil {
		t.Fatal(err)
	}
	lane := o.Lane(0)
	rec := newRecorder(t)
	id := 0
	publish := func(qos byte) error {
		id++
		mm := msg(fmt.Sprintf("t/%d", id%7), 10)
		mm.QoS = qos
		return lane.TryPublish(mm, rec.done(id))
	}
	c := m.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(30 * time.Millisecond) })
		return nil, nil, false
	})
	deadline := time.Now().Add(5 * time.Second)
	late := 0
	for time.Now().Before(deadline) && late == 0 {
		if err := publish(0); errors.Is(err, ErrLate) {
			late++
		} else if err != nil {
			t.Fatalf("QoS 0 publish: %v, want nil or ErrLate", err)
		}
		if id%20 == 0 {
			time.Sleep(time.Millisecond) // about 20,000/s at most: the lane fills by time, not by count
		}
	}
	s := o.Stats()
	if late == 0 || s.Late == 0 {
		t.Fatalf("no QoS 0 message refused after 5 s of 30 ms produces (stats %+v)", s)
	}
	if s.LimitQoS0 >= 4096 || s.InFlightRecords >= 4096 {
		t.Fatalf("QoS 0 refused at %d records in flight, QoS 0 budget %d: want well under the count budget 4096", s.InFlightRecords, s.LimitQoS0)
	}
	// QoS 1 is taken until the count budget is spent: at least 4096 − (records in flight then) publishes, as
	// completions only lower the count meanwhile.
	taken := 0
	for {
		err := publish(1)
		if err == nil {
			taken++
			continue
		}
		if !errors.Is(err, ErrFull) || errors.Is(err, ErrLate) {
			t.Fatalf("QoS 1 publish after %d taken: err = %v, want nil until ErrFull", taken, err)
		}
		break
	}
	if taken < 4096-s.InFlightRecords {
		t.Fatalf("QoS 1 refused after %d publishes with %d records in flight before them, want the count budget 4096 spent", taken, s.InFlightRecords)
	}
	t.Logf("QoS 0 refused at %d records in flight (QoS 0 budget %d, count budget 4096)", s.InFlightRecords, s.LimitQoS0)
}

// HoldQoS0 answers as take would for a QoS 0 message, takes nothing, and a "late" answer makes the lane call
// OnSpace once, when its records in flight fall to the QoS 0 budget's resume mark.
func TestLaneHoldQoS0(t *testing.T) {
	l := newQoS0Lane()
	l.qos0Recs = 400
	spaces := 0
	l.onSpace = func() { spaces++ }
	if l.HoldQoS0() {
		t.Fatal("HoldQoS0 on an idle lane: want false")
	}
	if err := l.take(400, 400*100, true); err != nil {
		t.Fatalf("take 400 records within a budget of 400: %v", err)
	}
	if !l.HoldQoS0() {
		t.Fatal("HoldQoS0 at the QoS 0 budget: want true (take would answer ErrLate)")
	}
	if l.recs != 400 {
		t.Fatalf("HoldQoS0 took records: %d in flight, want 400", l.recs)
	}
	l.release(50, 50*100, false, time.Millisecond) // 350 in flight: above the resume mark (300)
	if spaces != 0 {
		t.Fatalf("OnSpace called %d times above the resume mark", spaces)
	}
	l.release(50, 50*100, false, time.Millisecond) // 300: at the mark
	if spaces != 1 {
		t.Fatalf("OnSpace called %d times at the resume mark, want 1", spaces)
	}
	l.release(300, 300*100, false, time.Millisecond)
	if spaces != 1 {
		t.Fatalf("OnSpace called %d times, want 1 per held episode", spaces)
	}
	if l.HoldQoS0() {
		t.Fatal("HoldQoS0 on a drained lane: want false")
	}
}
