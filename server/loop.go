package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ferrymq/ferry/mqttcodec"
	"github.com/ferrymq/ferry/offload"
)

// loop is Ferry's state for one gnet event loop. Fields after mu are guarded by mu and touched by other
// goroutines (Kafka callbacks, readers); everything else is owned by the loop and touched only on it.
type loop struct {
	srv  *Server
	idx  int
	el   gnet.EventLoop
	lane *offload.Lane

	// service, bound once: queuing it allocates nothing. It is the only function Ferry queues on a loop
	// (wake): everything handed back to the loop waits in the fields below until it runs.
	serviceFn gnet.RunnableFunc

	mu         sync.Mutex
	ready      []*conn // connections a record's fan-out made ready (notifyAll), in the fan-out's order
	urgent     []*conn // connections notified one by one (notify): Kafka acks of their publishes, mostly
	tasks      []task  // one-off work for a connection, in the order it was posted (task.go)
	unblockDue bool    // the lane has room again (onSpace): retry the blocked connections
	tickDue    bool    // the one-second tick is due (Server.OnTick)
	holdLook   bool    // the hold timer fired: look at lateness again for the held connections (readlag_hold.go)
	scheduled  bool    // a run of service is queued on the loop
	// hasUrgent is set with an append to urgent; service looks at it between fan-out connections, so a
	// PUBACK does not wait for a fan-out's thousand writes (serviceUrgentEvery).
	hasUrgent atomic.Bool

	// loop-owned
	spare      []*conn
	spareU     []*conn
	spareTasks []task
	serviced   func(*conn) // tests only: called instead of conn.service
	out        []byte      // scratch for the packets one step writes; handed to gnet, which copies what it cannot send
	tscr       [2][]byte   // scratch for framing writes through a transport's layers (transport.writeBelow)
	now        int64       // unix seconds, refreshed on every event
	wheel      wheel
	blocked    []*conn     // connections holding publishes that the lane had no room for, retried on its onSpace
	freePQ     []*pubQueue // drained publish queues, for the next connection that publishes at QoS>0
	lingering  int         // sockets of this loop in a lingering close (linger.go)
	// publish rate limit (limits.go): the buckets of this loop's connections, and those paused by theirs
	pubLimits map[*conn]*pubLimit
	throttled []*conn
	lag       loopLag  // how late the one-second tick runs (metrics.go)
	shed      shedder  // the share of QoS 0 publishes dropped while the shared reader lags (readlag.go)
	hold      qos0Hold // QoS 0 publishers not read while deliveries are late (readlag_hold.go)
	dlag      readLag  // how late this loop writes the deliveries it reads back (readlag_hold.go)

	// decode targets reused for every packet on this loop (0 allocations per packet)
	pub   mqttcodec.Publish
	ack   mqttcodec.Ack
	sub   mqttcodec.Subscribe
	unsub mqttcodec.Unsubscribe
	disc  mqttcodec.Disconnect
	conn  mqttcodec.Connect
	// the CONNECT being handled, borrowed from the read buffer until handle returns
	connFH   mqttcodec.FixedHeader
	connBody []byte
	auth     mqttcodec.Auth
}

func newLoop(srv *Server, idx int, el gnet.EventLoop) *loop {
	l := &loop{srv: srv, idx: idx, el: el, lane: srv.off.Lane(idx)}
	l.now = time.Now().Unix()
	if srv.cfg.qos0Hold {
		l.dlag.limit = int64(srv.cfg.readLagLimit) // measured only for holding (readlag_hold.go): 0 notes nothing
	}
	l.wheel.init(l.now)
	l.serviceFn = l.service
	l.lane.OnSpace(l.onSpace)
	return l
}

// notify asks the loop to service c soon, before the connections of a fan-out that wait for it (service).
// It may be called from any goroutine and never blocks.
func (l *loop) notify(c *conn) {
	if c.notified.Swap(true) {
		return
	}
	l.mu.Lock()
	l.urgent = append(l.urgent, c)
	l.hasUrgent.Store(true)
	l.wake()
}

// notifyAll asks the loop to service every connection of cs soon, with one lock and at most one wake-up for
// all of them. Each was marked notified by its caller (wakeBatch.add). It may be called from any goroutine and
// never blocks.
func (l *loop) notifyAll(cs []*conn) {
	l.mu.Lock()
	l.ready = append(l.ready, cs...)
	l.wake()
}

// wake queues a run of service unless one is queued already. l.mu is held; wake releases it.
func (l *loop) wake() {
	sched := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if sched {
		if err := l.el.Execute(context.Background(), l.serviceFn); err != nil {
			// The engine is shutting down; connections are being closed anyway, and their tasks are moot.
			l.mu.Lock()
			l.scheduled = false
			clear(l.tasks)
			l.tasks = l.tasks[:0]
			l.mu.Unlock()
		}
	}
}

// wakeBatch gathers the connections one fan-out makes ready, by loop, and hands each loop all of its own at
// once (flush): one lock and at most one wake-up per loop for a record delivered to many sessions. Waking a
// loop per connection would take the loop's lock once per subscriber and start the loop while the fan-out is
// still running, so that the two chase each other through the same session locks. A batch is owned by one
// goroutine at a time (the shared reader's under Server.matchMu).
type wakeBatch struct {
	byLoop [][]*conn // by loop.idx
}

// add marks c to be woken by the next flush, unless it is already waiting to be serviced.
func (b *wakeBatch) add(c *conn) {
	if c.notified.Swap(true) {
		return // queued in its loop's ready list, or in this batch: serviced after this point either way
	}
	for len(b.byLoop) <= c.l.idx {
		b.byLoop = append(b.byLoop, nil)
	}
	b.byLoop[c.l.idx] = append(b.byLoop[c.l.idx], c)
}

// flush hands every loop the connections added for it and wakes it.
func (b *wakeBatch) flush() {
	for i, cs := range b.byLoop {
		if len(cs) == 0 {
			continue
		}
		cs[0].l.notifyAll(cs)
		clear(cs)
		b.byLoop[i] = cs[:0]
	}
}

// serviceUrgentEvery is how many fan-out connections service writes between two looks at the urgent list: a
// socket write costs a few µs, so a PUBACK that Kafka completes during a fan-out to 1,000 subscribers waits
// for about 32 writes instead of all of the loop's share.
const serviceUrgentEvery = 32

// service runs on the event loop and does everything handed back to it since its last run, in this order:
// the one-second tick, the posted tasks (in posting order), the retry of blocked publishers, and the acks and
// deliveries of the connections that asked for it: first those notified one by one (a publisher whose PUBACK
// Kafka has completed), then a fan-out's, looking at the urgent list again every serviceUrgentEvery of them
// (a fan-out writes to every matching subscriber in turn, and a PUBACK behind it waited for all the writes).
// It is the one way back onto a loop (docs/architecture.md): whatever the goroutine, work reaches a loop by
// being noted under l.mu and waking this function.
func (l *loop) service(context.Context) error {
	l.mu.Lock()
	ready, tasks := l.ready, l.tasks
	l.ready, l.tasks = l.spare[:0], l.spareTasks[:0]
	tick, unblock, look := l.tickDue, l.unblockDue, l.holdLook
	l.tickDue, l.unblockDue, l.holdLook, l.scheduled = false, false, false, false
	l.mu.Unlock()
	if tick {
		l.tick()
	} else {
		l.now = time.Now().Unix()
	}
	for i := range tasks {
		tasks[i].run()
		tasks[i] = task{} // the spare list keeps no connection or error reachable
	}
	l.spareTasks = tasks[:0]
	if unblock {
		l.unblock()
	}
	if look {
		l.releaseHeld()
	}
	l.serviceUrgent()
	for i, c := range ready {
		if i%serviceUrgentEvery == serviceUrgentEvery-1 && l.hasUrgent.Load() {
			l.serviceUrgent()
		}
		ready[i] = nil
		l.serviceOne(c)
	}
	l.spare = ready[:0]
	return nil
}

// serviceUrgent services the connections notified one by one so far. Runs on the event loop.
func (l *loop) serviceUrgent() {
	l.mu.Lock()
	urgent := l.urgent
	l.urgent = l.spareU[:0]
	l.hasUrgent.Store(false)
	l.mu.Unlock()
	for i, c := range urgent {
		urgent[i] = nil
		l.serviceOne(c)
	}
	l.spareU = urgent[:0]
}

func (l *loop) serviceOne(c *conn) {
	c.notified.Store(false)
	switch {
	case c.closed:
	case l.serviced != nil:
		l.serviced(c)
	default:
		c.service()
	}
}

// onSpace runs on a Kafka callback goroutine when the lane has room again: the loop retries blocked publishers.
// The lane alone owns "full": it calls onSpace once after each refusal episode, and only after the refusal, so
// every connection blocked on that refusal is on l.blocked when unblock runs (block runs on the loop, in the
// event that met the refusal, before the loop can run service). An episode in which nothing was blocked (a
// QoS 0 drop, a will) costs one empty unblock.
func (l *loop) onSpace() {
	l.mu.Lock()
	l.unblockDue = true
	l.wake()
}

// unblock runs on the event loop (service) and retries the publishes of connections the lane turned away, and
// reads again those held before a QoS 0 PUBLISH because the lane said it would be late (readlag_hold.go).
func (l *loop) unblock() {
	blocked := l.blocked
	l.blocked = nil
	for _, c := range blocked {
		c.blocked, c.q0Held = false, false // a QoS 0 publisher held for the lane's budget is read again too
		if !c.closed {
			c.service()
		}
	}
}

// block records that c holds publishes the lane refused (or that queue behind refused ones), to be retried on
// the lane's next onSpace. Runs on the event loop.
func (l *loop) block(c *conn) {
	if !c.blocked {
		c.blocked = true
		l.blocked = append(l.blocked, c)
	}
}

// tickSoon asks the loop to run its one-second tick. Runs on gnet's ticker goroutine; never blocks.
func (l *loop) tickSoon() {
	l.mu.Lock()
	l.tickDue = true
	l.wake()
}

// tick runs on the event loop (service) once a second: keep-alive and CONNECT timeouts, and reading again
// from connections paused by their publish rate.
func (l *loop) tick() {
	now := time.Now()
	l.now = now.Unix()
	l.srv.metrics.tickLag(l, now)
	l.wheel.advance(l.now, func(c *conn) { c.checkTimeout() })
	l.resumeThrottled()
}
