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
	loops[1].scheduled = false // as if that run had taken the list but not yet serviced waiting
	loops[1].ready = loops[1].ready[:0]
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
