package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// countingLoop stands in for a gnet event loop: it counts the tasks queued on it and runs none.
type countingLoop struct{ executed int }

func (e *countingLoop) Register(context.Context, net.Addr) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (e *countingLoop) Enroll(context.Context, net.Conn) (<-chan gnet.RegisteredResult, error) {
	return nil, nil
}
func (e *countingLoop) Execute(context.Context, gnet.Runnable) error { e.executed++; return nil }
func (e *countingLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return nil
}
func (e *countingLoop) Close(gnet.Conn) error { return nil }

// One record delivered to many sessions wakes each of their loops once, with all of its connections ready, in
// the order the fan-out found them; a connection already waiting for its loop is not listed twice.
func TestWakeBatchOneWakeUpPerLoop(t *testing.T) {
	els := []*countingLoop{{}, {}}
	loops := []*loop{{idx: 0, el: els[0]}, {idx: 1, el: els[1]}}
	const n = 1000
	conns := make([]*conn, n)
	for i := range conns {
		conns[i] = &conn{l: loops[i%2]}
	}
	waiting := conns[3] // already in its loop's ready list from an earlier notify
	loops[1].notify(waiting)
	if els[1].executed != 1 {
		t.Fatalf("notify queued %d runs, want 1", els[1].executed)
	}
	loops[1].mu.Lock()
	if len(loops[1].urgent) != 1 || loops[1].urgent[0] != waiting {
		t.Fatal("a connection notified alone is not on its loop's urgent list")
	}
	loops[1].scheduled = false // as if that run had taken the list but not yet serviced waiting
	loops[1].urgent = loops[1].urgent[:0]
	loops[1].mu.Unlock()
	els[1].executed = 0

	var b wakeBatch
	for _, c := range conns {
		b.add(c)
		if els[0].executed+els[1].executed != 0 {
			t.Fatal("a loop was woken during the fan-out")
		}
	}
	b.add(conns[0]) // a second subscription of the same session's connection
	b.flush()
	for i, l := range loops {
		if els[i].executed != 1 {
			t.Fatalf("loop %d woken %d times for %d deliveries, want once", i, els[i].executed, n/2)
		}
		var want []*conn
		for j := i; j < n; j += 2 {
			if conns[j] != waiting {
				want = append(want, conns[j])
			}
		}
		if len(l.ready) != len(want) {
			t.Fatalf("loop %d: %d connections ready, want %d", i, len(l.ready), len(want))
		}
		for j := range want {
			if l.ready[j] != want[j] {
				t.Fatalf("loop %d: ready[%d] is not the connection the fan-out found %d-th", i, j, j)
			}
		}
	}

	// A flush with nothing added wakes nobody.
	b.flush()
	if els[0].executed != 1 || els[1].executed != 1 {
		t.Fatal("an empty flush woke a loop")
	}
}

// A connection notified alone (a publisher whose PUBACK Kafka completed) is serviced before the connections of
// a fan-out that were ready before it, and one notified while the loop works through a fan-out is serviced
// within serviceUrgentEvery connections, not after all of them.
func TestServiceUrgentBeforeFanOut(t *testing.T) {
	el := &countingLoop{}
	l := &loop{el: el}
	fan := make([]*conn, 200)
	for i := range fan {
		fan[i] = &conn{l: l}
		fan[i].notified.Store(true) // as wakeBatch.add leaves them
	}
	l.notifyAll(fan)
	early, late := &conn{l: l}, &conn{l: l}
	l.notify(early)

	var order []*conn
	l.serviced = func(c *conn) {
		order = append(order, c)
		if c == fan[100] {
			l.notify(late) // Kafka completes a publish while the fan-out is being written
		}
		if c.notified.Load() {
			t.Fatal("a connection is serviced while still marked notified")
		}
	}
	if err := l.service(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(order) != len(fan)+2 {
		t.Fatalf("serviced %d connections, want %d", len(order), len(fan)+2)
	}
	if order[0] != early {
		t.Fatal("the urgent connection was not serviced first")
	}
	at := -1
	for i, c := range order {
		if c == late {
			at = i
		}
	}
	// late arrived after fan[100] (order index 101); the next look at the urgent list is after fan[127].
	if at < 102 || at > 102+serviceUrgentEvery {
		t.Fatalf("the connection notified during the fan-out was serviced at position %d, want within %d of 102", at, serviceUrgentEvery)
	}
	for i, c := range fan {
		if c.notified.Load() {
			t.Fatalf("fan-out connection %d still marked notified", i)
		}
	}
	if l.hasUrgent.Load() || len(l.urgent) != 0 || len(l.ready) != 0 {
		t.Fatal("service left connections listed")
	}
}
