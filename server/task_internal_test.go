package server

import (
	"context"
	"errors"
	"testing"

	"github.com/ferrymq/ferry/mqttcodec"
)

// Everything handed back to a loop goes through one queued run of service: a tick, a lane's "room again",
// posted tasks and a connection's notify, from any goroutine, wake the loop once between two runs, and
// service does the tasks in the order they were posted.
func TestHandBackOneWakeUp(t *testing.T) {
	el := &countingLoop{}
	l := &loop{idx: 0, el: el}
	l.serviceFn = l.service
	var order []int
	l.tickSoon()
	l.onSpace()
	for i := range 3 {
		l.post(task{kind: taskRun, fn: func() { order = append(order, i) }})
	}
	l.notifyAll(nil)
	if el.executed != 1 {
		t.Fatalf("%d runs of service queued for a tick, a lane signal, 3 tasks and a notify, want 1", el.executed)
	}
	if !l.tickDue || !l.unblockDue || len(l.tasks) != 3 {
		t.Fatalf("tick due %v, unblock due %v, %d tasks: want all noted for service", l.tickDue, l.unblockDue, len(l.tasks))
	}
	l.tickDue = false // the tick needs a Server; what this test checks is the tasks
	if err := l.service(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(order) != 3 || order[0] != 0 || order[1] != 1 || order[2] != 2 {
		t.Fatalf("tasks ran in order %v, want [0 1 2]", order)
	}
	if l.scheduled || l.unblockDue || len(l.tasks) != 0 {
		t.Fatal("service left work noted")
	}
	for i := range l.spareTasks[:cap(l.spareTasks)] {
		if l.spareTasks[:cap(l.spareTasks)][i].fn != nil {
			t.Fatal("the spare task list keeps a function reachable")
		}
	}
	l.post(task{kind: taskRun, fn: func() {}})
	if el.executed != 2 {
		t.Fatalf("a post after service ran queued %d runs in all, want 2", el.executed)
	}
}

// Handing work back to a loop on its frequent paths allocates nothing once the loop's lists have grown: a
// lane's "room again", the tick, a connection's notify, and the typed tasks (a QoS 2 release stored, a
// takeover, a shutdown).
func TestHandBackAllocatesNothing(t *testing.T) {
	el := &countingLoop{}
	l := &loop{idx: 0, el: el}
	l.serviceFn = l.service
	c := &conn{l: l}
	sess := &session{}
	errKafka := errors.New("kafka")
	round := func() {
		l.onSpace()
		l.tickSoon()
		l.notify(c)
		l.post(task{c: c, kind: taskPUBCOMP, sess: sess, pid: 7, err: errKafka})
		l.post(task{c: c, kind: taskKick, reason: mqttcodec.SessionTakenOver})
		l.post(task{c: c, kind: taskShutDown})
		// what service takes, without running the tasks (they need a live connection)
		l.mu.Lock()
		clear(l.tasks)
		l.tasks, l.ready = l.tasks[:0], l.ready[:0]
		l.tickDue, l.unblockDue, l.scheduled = false, false, false
		l.mu.Unlock()
		c.notified.Store(false)
	}
	round() // grow the lists
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Fatalf("handing work back to a loop allocates %.1f times per round, want 0", n)
	}
}
