package server

import (
	"github.com/ferrymq/ferry/mqttcodec"
)

// A task is one-off work handed back to a connection's loop from another goroutine (a Kafka callback, the
// sessions reader, the password pool, a drain): posted with loop.post and run by loop.service, in posting
// order, with the acks and deliveries of the same run. The frequent kinds carry their arguments in the task
// itself, so posting one allocates nothing once the loop's task list has grown; taskRun carries a function for
// the rare steps (a CONNECT's decision, a held SUBACK, a password check's answer) whose state is too varied to
// spell out here.
type task struct {
	c      *conn
	kind   taskKind
	reason mqttcodec.ReasonCode // taskKick
	pid    uint16               // taskPUBCOMP
	sess   *session             // taskPUBCOMP: the session the packet id belongs to
	err    error                // taskPUBCOMP: why the release could not be stored
	fn     func()               // taskRun
}

type taskKind uint8

const (
	taskRun      taskKind = iota // run fn
	taskKick                     // end c: its session moved on (reason)
	taskShutDown                 // end c: the server stops
	taskPUBCOMP                  // a QoS 2 release is stored (err nil) or could not be (qos2.go)
	taskEnd                      // end c's session: its socket closed during a write (OnClose)
)

// post hands t to its connection's loop. Runs on any goroutine; never blocks.
func (l *loop) post(t task) {
	l.mu.Lock()
	l.tasks = append(l.tasks, t)
	l.wake()
}

// run does t's work. Runs on the loop (service).
func (t *task) run() {
	switch t.kind {
	case taskRun:
		t.fn()
	case taskKick:
		t.c.kicked(t.reason)
	case taskShutDown:
		t.c.shutDownNow()
	case taskPUBCOMP:
		t.c.pubcompStored(t.sess, t.pid, t.err)
	case taskEnd:
		t.c.endSession()
	default:
		panic("BUG: unknown loop task kind")
	}
}

// runOnLoop runs fn on c's event loop. Runs on any goroutine.
func (c *conn) runOnLoop(fn func()) { c.l.post(task{c: c, kind: taskRun, fn: fn}) }
