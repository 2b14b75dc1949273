// Command floor is the fan-out floor: the least an event-loop broker on gnet must do to fan one publisher's
// messages out to many subscribers on this machine, against which Ferry's fan-out latency is read.
//
// It speaks just enough MQTT 3.1.1 for ferry-bench's fanout scenario: CONNECT gets a CONNACK, SUBSCRIBE a
// SUBACK granting what was asked (every subscriber takes every message, whatever its filter), a QoS 1 PUBLISH
// a PUBACK, PINGREQ a PINGRESP; PUBACKs from subscribers are read and dropped. For each PUBLISH it builds one
// QoS 1 PUBLISH (same topic and payload, one packet id for all) and writes it to every subscriber, one write
// per subscriber as Ferry does: the publisher's loop hands the bytes to every other loop first (gnet's
// Execute, the way Ferry's shared reader wakes its loops) and then writes to its own subscribers. No Kafka,
// no sessions, no queues, no packet-id table, no retries: whatever latency it shows is the machine's
// (loopback TCP beside the load generator), not a broker's.
//
// It runs on as many gnet event loops as Ferry (--event-loops, default one per CPU) with Ferry's gnet
// options and GOMAXPROCS (the runtime's default plus one P per loop). --hand-off picks how a record reaches the
// loops (inline as above, as a task on every loop, or through a reader goroutine as Ferry's records do);
// --puback-last writes the PUBACK after the publisher loop's writes instead of before them. On
// SIGTERM it prints, for the PUBLISHes ferry-bench stamped, the time from the stamp to the floor's read, and
// the time one loop took to write a record to all of its subscribers.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ferrymq/ferry/perf/internal/wire"
)

type floor struct {
	gnet.BuiltinEventEngine
	eng gnet.Engine

	mu    sync.Mutex
	loops map[gnet.EventLoop]*loop
	order []*loop
	pid   uint16 // under mu: the packet id of the next fanned-out PUBLISH

	// under mu, printed on exit: per PUBLISH stamped by ferry-bench, its stamp → read by the floor; per record
	// and loop, the loop's writes of it, first to last (ns)
	arrived, wrote []int64

	pubackLast bool        // --puback-last: the PUBACK after the fan-out's writes on this loop
	mode       int         // handInline, handTask or handReader (--hand-off)
	reader     chan []byte // handReader: records for the reader goroutine
}

// How the publisher's loop hands a record to the loops that write it (--hand-off).
const (
	handInline = iota // its own subscribers inline, the other loops by Execute
	handTask          // every loop by Execute, its own too: written after the events of this loop turn
	handReader        // to a goroutine (Ferry's shared reader) that hands it to every loop by Execute
)

// loop is the floor's state for one gnet event loop; subs is touched only on the loop.
type loop struct {
	el   gnet.EventLoop
	subs []gnet.Conn
	most int // the most subscribers it had at once
}

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	loops := flag.Int("event-loops", runtime.NumCPU(), "gnet event loops (Ferry's default: one per CPU)")
	reusePort := flag.Bool("reuse-port", true, "each loop listens with SO_REUSEPORT and accepts its own connections, as Ferry's (false: gnet's accepting reactor hands them to the loops)")
	handOff := flag.String("hand-off", "inline", "how a PUBLISH reaches the loops that write it: inline (the publisher's loop writes its own subscribers at once and hands the record to the others), task (every loop by gnet's Execute, its own too), reader (through a goroutine that hands it to every loop, as Ferry's shared reader)")
	pubackLast := flag.Bool("puback-last", false, "write a PUBLISH's PUBACK after the publisher's loop has written the record to its subscribers (Ferry's PUBACK waits for Kafka), not before")
	flag.Parse()
	if *loops < 1 {
		fmt.Fprintf(os.Stderr, "floor: --event-loops must be at least 1, not %d\n", *loops)
		os.Exit(2)
	}
	// As Ferry (internal/procs): each loop waits in epoll_wait holding a P, so one more P per loop.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + *loops)
	f := &floor{loops: map[gnet.EventLoop]*loop{}, reader: make(chan []byte, 1024)}
	f.pubackLast = *pubackLast
	switch *handOff {
	case "inline":
		f.mode = handInline
	case "task":
		f.mode = handTask
	case "reader":
		f.mode = handReader
		go f.read()
	default:
		fmt.Fprintf(os.Stderr, "floor: --hand-off %q: want inline, task or reader\n", *handOff)
		os.Exit(2)
	}
	done := make(chan error, 1)
	go func() {
		done <- gnet.Run(f, "tcp://"+*addr,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(*loops),
			gnet.WithReuseAddr(true),
			gnet.WithReusePort(*reusePort),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithReadBufferCap(64<<10),
		)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-done:
		log.Fatalf("cannot serve on %s: %v", *addr, err)
	case <-sig:
		f.report()
		_ = f.eng.Stop(context.Background())
	}
}

// OnBoot runs once when gnet is listening.
func (f *floor) OnBoot(eng gnet.Engine) gnet.Action {
	f.eng = eng
	return gnet.None
}

// loopOf returns the floor's state for el, creating it on the loop's first connection.
func (f *floor) loopOf(el gnet.EventLoop) *loop {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.loops[el]
	if l == nil {
		l = &loop{el: el}
		f.loops[el] = l
		f.order = append(f.order, l)
	}
	return l
}

// OnClose runs on c's loop.
func (f *floor) OnClose(c gnet.Conn, _ error) gnet.Action {
	l := f.loopOf(c.EventLoop())
	for i, s := range l.subs {
		if s == c {
			l.subs = append(l.subs[:i], l.subs[i+1:]...)
			break
		}
	}
	return gnet.None
}

// OnTraffic runs on c's loop: it handles every whole frame c has sent.
func (f *floor) OnTraffic(c gnet.Conn) gnet.Action {
	b, _ := c.Peek(-1)
	off := 0
	for {
		fr, n, err := wire.Split(b[off:])
		if errors.Is(err, wire.ErrIncomplete) {
			break
		}
		if err != nil || !f.handle(c, fr) {
			return gnet.Close
		}
		off += n
	}
	_, _ = c.Discard(off)
	return gnet.None
}

// handle answers one frame. Runs on c's loop.
func (f *floor) handle(c gnet.Conn, fr wire.Frame) bool {
	switch fr.Type {
	case wire.CONNECT:
		_, _ = c.Write([]byte{wire.CONNACK << 4, 2, 0, 0})
	case wire.SUBSCRIBE:
		body := fr.Body
		if len(body) < 2 {
			return false
		}
		ack := []byte{wire.SUBACK << 4, 0, body[0], body[1]}
		for r := body[2:]; len(r) >= 3; {
			n := int(r[0])<<8 | int(r[1])
			if len(r) < 3+n {
				return false
			}
			ack = append(ack, r[2+n]&3)
			r = r[3+n:]
		}
		if len(ack)-2 > 127 {
			return false // more filters than ferry-bench sends, and than one length byte holds
		}
		ack[1] = byte(len(ack) - 2)
		l := f.loopOf(c.EventLoop())
		l.subs = append(l.subs, c)
		l.most = max(l.most, len(l.subs))
		_, _ = c.Write(ack)
	case wire.PUBLISH:
		p, err := wire.ParsePublish(fr)
		if err != nil {
			return false
		}
		f.publish(c, p)
	case wire.PINGREQ:
		_, _ = c.Write([]byte{wire.PINGRESP << 4, 0})
	case wire.DISCONNECT:
		return false
	}
	return true // PUBACKs of deliveries and anything else: read and dropped
}

// publish acknowledges one PUBLISH and fans it out (--hand-off). Runs on the publisher's loop.
func (f *floor) publish(c gnet.Conn, p wire.Publish) {
	if len(p.Payload) >= 10 && p.Payload[0] == 0xFB && p.Payload[1] == 0x01 { // ferry-bench's stamp (perf/internal/stats)
		sent := int64(binary.BigEndian.Uint64(p.Payload[2:10]))
		f.note(&f.arrived, time.Now().UnixNano()-sent)
	}
	if p.QoS == 1 && !f.pubackLast {
		_, _ = c.Write(wire.AppendAck(nil, wire.PUBACK, p.PID))
	}
	if p.QoS == 1 && f.pubackLast {
		defer c.Write(wire.AppendAck(nil, wire.PUBACK, p.PID)) //nolint:errcheck // gnet closes the connection on a failed write
	}

	f.mu.Lock()
	f.pid++
	if f.pid == 0 {
		f.pid = 1
	}
	id := f.pid
	loops := f.order
	f.mu.Unlock()
	pkt := wire.AppendPublish(nil, string(p.Topic), 1, false, false, id, p.Payload)

	switch f.mode {
	case handInline:
		own := c.EventLoop()
		f.handOff(loops, pkt, own)
		f.loopOf(own).write(f, pkt)
	case handTask:
		f.handOff(loops, pkt, nil)
	case handReader:
		f.reader <- pkt
	}
}

// handOff queues pkt's writes on every loop but skip, waking each (gnet's Execute).
func (f *floor) handOff(loops []*loop, pkt []byte, skip gnet.EventLoop) {
	for _, l := range loops {
		if l.el != skip {
			_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
				l.write(f, pkt)
				return nil
			}))
		}
	}
}

// read is the reader of --hand-off reader: it takes each record from the publisher's loop and hands it to
// every loop, as Ferry's shared reader does with what it reads from Kafka.
func (f *floor) read() {
	for pkt := range f.reader {
		f.mu.Lock()
		loops := f.order
		f.mu.Unlock()
		f.handOff(loops, pkt, nil)
	}
}

// write writes pkt to every subscriber of the loop, one write each. Runs on the loop.
func (l *loop) write(f *floor, pkt []byte) {
	t0 := time.Now()
	for _, s := range l.subs {
		_, _ = s.Write(pkt)
	}
	f.note(&f.wrote, int64(time.Since(t0)))
}

func (f *floor) note(to *[]int64, ns int64) {
	f.mu.Lock()
	*to = append(*to, ns)
	f.mu.Unlock()
}

// report prints the percentiles of what note gathered.
func (f *floor) report() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range []struct {
		name string
		ns   []int64
	}{{"stamp → PUBLISH read by the floor", f.arrived}, {"one loop's writes of a record, first to last", f.wrote}} {
		if len(h.ns) == 0 {
			continue
		}
		slices.Sort(h.ns)
		at := func(q float64) time.Duration { return time.Duration(h.ns[int(q*float64(len(h.ns)-1))]) }
		log.Printf("%s: n=%d p50 %v p90 %v p99 %v max %v", h.name, len(h.ns), at(0.5), at(0.9), at(0.99), at(1))
	}
	for i, l := range f.order {
		log.Printf("loop %d: at most %d subscribers", i, l.most) // read off the loop, once the run is over
	}
}
