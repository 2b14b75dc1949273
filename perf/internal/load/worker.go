package load

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ferrymq/ferry/perf/internal/procstat"
	"github.com/ferrymq/ferry/perf/internal/stats"
	"github.com/ferrymq/ferry/perf/internal/wire"
)

type worker struct {
	cfg WorkerConfig

	omu sync.Mutex
	out *json.Encoder

	cnt struct {
		connOK, connFail, subOK, subFail, published, acked, delivered, foreign,
		pings, pongs, disconnected, tlsResumed atomic.Int64
	}

	hmu                     sync.Mutex
	connH, subH, delH, ackH *hdrhistogram.Histogram
	delReadH                *hdrhistogram.Histogram // epoll path: stamp → read by the generator
	rx                      *rxLoop                 // epoll path: the subscribers' receiver
	emu                     sync.Mutex
	errs                    map[string]int
	cmu                     sync.Mutex
	idle, subs, pubs        []*client
	wg                      sync.WaitGroup // reader goroutines
	pendingSubs             atomic.Int64
	subsDone                chan struct{}
	stop                    chan struct{}
	pubWG                   sync.WaitGroup
	dialSeq                 atomic.Int64
	tlsConf                 tlsConfOnce // tls.go
}

// RunWorker is the body of a worker process: it reads Commands from in and
// writes Events to out until "close" or end of input.
func RunWorker(in io.Reader, out io.Writer) error {
	w := &worker{
		out:   json.NewEncoder(out),
		connH: stats.NewHist(), subH: stats.NewHist(), delH: stats.NewHist(), ackH: stats.NewHist(),
		delReadH: stats.NewHist(),
		errs:     map[string]int{},
		subsDone: make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	quit := make(chan struct{})
	defer close(quit)
	for sc.Scan() {
		var c Command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return fmt.Errorf("cannot decode command: %w", err)
		}
		switch c.Cmd {
		case "config":
			w.cfg = *c.Config
			if w.cfg.SubRx == SubRxEpoll && w.cfg.SubTo > w.cfg.SubFrom {
				var err error
				if w.rx, err = newRxLoop(w); err != nil {
					return err
				}
			}
			go w.progress(quit)
			if w.cfg.KeepAlive > 0 {
				go w.keepAlive(quit)
			}
			w.emit(Event{Ev: "ready"})
		case "connect":
			t := time.Now()
			w.connectAll()
			w.emit(Event{Ev: "connected", PhaseNs: int64(time.Since(t))})
		case "subscribe":
			t := time.Now()
			w.subscribeIdle()
			w.emit(Event{Ev: "subscribed", PhaseNs: int64(time.Since(t))})
		case "start":
			w.startPubs()
		case "stop":
			at := w.counters()
			acked := w.stopPubs()
			w.emit(Event{Ev: "stopped", AtStop: &at, Acked: acked})
		case "finish":
			res := w.finish(c.Acked)
			w.emit(Event{Ev: "result", Result: res})
		case "close":
			return nil
		default:
			return fmt.Errorf("unknown command %q", c.Cmd)
		}
	}
	return sc.Err()
}

func (w *worker) emit(e Event) {
	e.Worker = w.cfg.Worker
	e.Counters = w.counters()
	e.AtNs = stats.NowNs()
	w.omu.Lock()
	defer w.omu.Unlock()
	if err := w.out.Encode(e); err != nil {
		fmt.Fprintf(os.Stderr, "worker %d: cannot write event: %v\n", w.cfg.Worker, err)
		os.Exit(2)
	}
}

func (w *worker) counters() Counters {
	return Counters{
		ConnOK: w.cnt.connOK.Load(), ConnFail: w.cnt.connFail.Load(),
		SubOK: w.cnt.subOK.Load(), SubFail: w.cnt.subFail.Load(),
		Published: w.cnt.published.Load(), Acked: w.cnt.acked.Load(),
		Delivered: w.cnt.delivered.Load(), Foreign: w.cnt.foreign.Load(),
		Pings: w.cnt.pings.Load(), Pongs: w.cnt.pongs.Load(),
		Disconnected: w.cnt.disconnected.Load(), TLSResumed: w.cnt.tlsResumed.Load(),
	}
}

func (w *worker) progress(quit <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
			w.emit(Event{Ev: "progress"})
		}
	}
}

// noteErr counts an error by its text (texts are few: no client ids in them).
func (w *worker) noteErr(s string) {
	w.emu.Lock()
	if len(w.errs) < 50 || w.errs[s] > 0 {
		w.errs[s]++
	}
	w.emu.Unlock()
}

func (w *worker) recordConnect(d time.Duration) {
	w.hmu.Lock()
	stats.RecordNs(w.connH, int64(d))
	w.hmu.Unlock()
}

func (w *worker) recordSubscribe(d time.Duration, granted int) {
	w.cnt.subOK.Add(int64(granted))
	w.hmu.Lock()
	stats.RecordNs(w.subH, int64(d))
	w.hmu.Unlock()
}

// recordDeliveries records the deliveries of one read: their send stamps, when the bytes arrived and (epoll
// path, else 0) when the generator read them.
func (w *worker) recordDeliveries(sent []int64, arrival, readNs int64) {
	w.hmu.Lock()
	for _, ns := range sent {
		stats.RecordNs(w.delH, arrival-ns)
		if readNs != 0 {
			stats.RecordNs(w.delReadH, readNs-ns)
		}
	}
	w.hmu.Unlock()
}

func (w *worker) recordAcks(lat []int64) {
	w.hmu.Lock()
	for _, ns := range lat {
		stats.RecordNs(w.ackH, ns)
	}
	w.hmu.Unlock()
}

func (w *worker) subDone() {
	if w.pendingSubs.Add(-1) == 0 {
		select {
		case w.subsDone <- struct{}{}:
		default:
		}
	}
}

// pace runs fn(i) for i in [0, n) at most rate per second (0 = unbounded) with
// at most par calls in progress, and waits for all of them.
func pace(n int, rate float64, par int, fn func(i int)) {
	if par < 1 {
		par = 1
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

type spec struct {
	role role
	id   int
}

// connectAll opens subscribers first (so they are in place before any
// publisher), then publishers, then idle connections.
func (w *worker) connectAll() {
	cfg := &w.cfg
	var specs []spec
	for i := cfg.SubFrom; i < cfg.SubTo; i++ {
		specs = append(specs, spec{roleSub, i})
	}
	for i := cfg.PubFrom; i < cfg.PubTo; i++ {
		specs = append(specs, spec{rolePub, i})
	}
	for i := cfg.IdleFrom; i < cfg.IdleTo; i++ {
		specs = append(specs, spec{roleIdle, i})
	}
	nsubs := cfg.SubTo - cfg.SubFrom
	connect := func(i int) {
		s := specs[i]
		if c := w.open(s); c != nil {
			w.cmu.Lock()
			switch s.role {
			case roleSub:
				w.subs = append(w.subs, c)
			case rolePub:
				w.pubs = append(w.pubs, c)
			default:
				w.idle = append(w.idle, c)
			}
			w.cmu.Unlock()
		}
	}
	// Subscribers complete before publishers begin.
	pace(nsubs, cfg.ConnRate, cfg.ConnPar, connect)
	rest := specs[nsubs:]
	pace(len(rest), cfg.ConnRate, cfg.ConnPar, func(i int) { connect(nsubs + i) })
}

func (w *worker) open(s spec) *client {
	cfg := &w.cfg
	c := &client{w: w, id: s.id, role: s.role, doneCh: make(chan struct{})}
	size := 512
	switch s.role {
	case roleSub:
		size = 64 << 10
		c.trackers = make([]*stats.SeqTracker, cfg.TotalPubs)
	case rolePub:
		size = 4 << 10
	}
	c.rbuf = make([]byte, size)
	nc, err := w.dial(int(w.dialSeq.Add(1)))
	if err != nil {
		w.cnt.connFail.Add(1)
		w.noteErr("dial: " + errText(err))
		return nil
	}
	c.nc = nc
	if s.role == rolePub && cfg.PubSndBuf > 0 {
		_ = nc.SetWriteBuffer(cfg.PubSndBuf)
	}
	if cfg.TLS {
		if c.nc, err = w.tlsClient(nc); err != nil {
			w.cnt.connFail.Add(1)
			w.noteErr(errText(err))
			_ = nc.Close()
			return nil
		}
	}
	if cfg.WSPath != "" {
		if c.nc, err = wsUpgrade(c.nc, cfg.Target, cfg.WSPath, time.Duration(cfg.ConnTimeout)*time.Second); err != nil {
			w.cnt.connFail.Add(1)
			w.noteErr(errText(err))
			_ = nc.Close()
			return nil
		}
	}
	tag := [...]string{roleIdle: "i", roleSub: "s", rolePub: "p"}[s.role]
	if err := c.handshake(cfg.ClientPrefix + tag + strconv.Itoa(s.id)); err != nil {
		w.cnt.connFail.Add(1)
		w.noteErr(errText(err))
		_ = nc.Close()
		return nil
	}
	w.cnt.connOK.Add(1)
	if s.role == rolePub {
		c.pub = newPubState(c, s.id, cfg)
	}
	w.wg.Add(1)
	if s.role == roleSub && w.rx != nil {
		if err := w.rx.take(c); err != nil {
			w.wg.Done()
			w.cnt.connOK.Add(-1)
			w.cnt.connFail.Add(1)
			w.noteErr(err.Error())
			return nil
		}
		return c
	}
	go c.readLoop()
	return c
}

// subscribeIdle sends one SUBSCRIBE with SubsPerConn unique filters on every
// idle connection and waits (60 s at most) for the SUBACKs.
func (w *worker) subscribeIdle() {
	cfg := &w.cfg
	if cfg.SubsPerConn <= 0 || len(w.idle) == 0 {
		return
	}
	w.pendingSubs.Store(int64(len(w.idle)))
	filters := make([]string, cfg.SubsPerConn)
	var mu sync.Mutex
	pace(len(w.idle), cfg.ConnRate, cfg.ConnPar, func(i int) {
		c := w.idle[i]
		mu.Lock()
		for k := range filters {
			filters[k] = "bench/idle/" + cfg.ClientPrefix + strconv.Itoa(c.id) + "/" + strconv.Itoa(k)
		}
		pkt := wire.AppendSubscribe(nil, 2, cfg.IdleSubQoS, filters...)
		mu.Unlock()
		c.subSent.Store(time.Now().UnixNano())
		if err := c.write(pkt); err != nil {
			w.noteErr("subscribe write: " + errText(err))
			w.cnt.subFail.Add(int64(cfg.SubsPerConn))
			w.subDone()
		}
	})
	select {
	case <-w.subsDone:
	case <-time.After(60 * time.Second):
		w.noteErr("timed out waiting for SUBACKs")
	}
}

// keepAlive sends PINGREQ on every connection that has written nothing for
// half the keep-alive interval. One goroutine for all connections.
func (w *worker) keepAlive(quit <-chan struct{}) {
	ka := time.Duration(w.cfg.KeepAlive) * time.Second
	tick := ka / 8
	if tick > time.Second {
		tick = time.Second
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	ping := wire.AppendPingreq(nil)
	var all []*client
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		w.cmu.Lock()
		// Publishers are busy while the load runs; their PINGRESPs would also
		// disturb QoS 0 flow control, so they get no keep-alive pings.
		all = append(append(all[:0], w.idle...), w.subs...)
		w.cmu.Unlock()
		cut := time.Now().Add(-ka / 2).UnixNano()
		for _, c := range all {
			if c.closing.Load() || c.lastWrite.Load() > cut {
				continue
			}
			if err := c.write(ping); err == nil {
				w.cnt.pings.Add(1)
			}
		}
	}
}

func (w *worker) startPubs() {
	start := time.Now()
	for _, c := range w.pubs {
		w.pubWG.Add(1)
		go func() {
			defer w.pubWG.Done()
			c.pub.run(start, w.stop)
		}()
	}
}

// stopPubs stops publishing and waits (StopGraceMs at most) for in-flight
// PUBLISHes to be acknowledged; returns each publisher's acked prefix.
func (w *worker) stopPubs() map[int]uint64 {
	close(w.stop)
	// A publisher blocked in a write (TCP backpressure) must not hold the
	// stop up: give it the grace period, then the write fails.
	for _, c := range w.pubs {
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Duration(w.cfg.StopGraceMs) * time.Millisecond))
	}
	w.pubWG.Wait()
	deadline := time.Now().Add(time.Duration(w.cfg.StopGraceMs) * time.Millisecond)
	for time.Now().Before(deadline) {
		var n int64
		for _, c := range w.pubs {
			select {
			case <-c.pub.failed:
			default:
				n += c.pub.inflight.Load()
			}
		}
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	acked := map[int]uint64{}
	for _, c := range w.pubs {
		if c.pub.qos == 0 {
			acked[c.pub.gid] = c.pub.seq // QoS 0: everything sent is "expected"
			continue
		}
	}
	// Close publishers so their readers stop, then read the trackers safely.
	for _, c := range w.pubs {
		w.closeClient(c)
	}
	for _, c := range w.pubs {
		if c.pub.qos > 0 {
			<-c.done()
			acked[c.pub.gid] = c.pub.acked.Prefix()
		}
	}
	return acked
}

func (w *worker) closeClient(c *client) {
	if c.closing.Swap(true) {
		return
	}
	_ = c.write(wire.AppendDisconnect(nil))
	c.close()
}

// finish closes every connection, waits for the readers and computes loss
// against the acked prefixes of all publishers.
func (w *worker) finish(acked map[int]uint64) *WorkerResult {
	for _, cs := range [][]*client{w.subs, w.pubs, w.idle} {
		for _, c := range cs {
			w.closeClient(c)
		}
	}
	w.wg.Wait()
	res := &WorkerResult{}
	ids := make([]int, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	empty := &stats.SeqTracker{}
	for _, c := range w.subs {
		for _, id := range ids {
			t := empty
			if id < len(c.trackers) && c.trackers[id] != nil {
				t = c.trackers[id]
			}
			res.Loss.Account(t, acked[id])
		}
	}
	w.hmu.Lock()
	res.Connect, res.Subscribe = w.connH.Export(), w.subH.Export()
	res.Delivery, res.Ack = w.delH.Export(), w.ackH.Export()
	if w.rx != nil {
		res.DeliveryRead = w.delReadH.Export()
	}
	w.hmu.Unlock()
	w.emu.Lock()
	res.Errors = w.errs
	w.emu.Unlock()
	res.CPUSec = procstat.SelfCPU()
	return res
}
