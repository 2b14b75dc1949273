package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ferrymq/ferry/internal/throttle"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server/transport"
)

// Server is one Ferry instance's MQTT side.
type Server struct {
	gnet.BuiltinEventEngine

	cfg        cfg
	off        *offload.Offload
	specs      []transport.Spec  // the parsed listeners, in configuration order
	transports *transport.Shared // what the listeners' transports share: limits, PROXY trust, TLS certificates

	trie     *trie
	retained retainedStore
	metrics  Metrics

	regMu    sync.Mutex
	sessions map[string]*session

	loopMu sync.Mutex
	loops  map[gnet.EventLoop]*loop
	order  []*loop

	// reader-side scratch for folding matches, and the reader's position; guarded by matchMu
	matchMu    sync.Mutex
	scratch    []subEntry
	agg        []aggDelivery
	wakeRec    wakeBatch // the connections one record's fan-out wakes (deliver.go)
	lag        readLag   // how far the shared reader trails Kafka (readlag.go); written by the reader only
	gen        uint64
	readPos    map[tp]int64 // topic-partition → next offset the shared reader hands on (tp: routing.go)
	held       heldRecs     // records held for their schema id, and their partitions (contract_hold.go)
	topicBegin map[tp]int64 // routed topic-partition → offset the shared reader began it at

	rt *routing // topic routing (routing.go); nil without route rules

	shares shareRegistry // shared subscriptions (share.go)
	pw     pwPool        // password checks off the event loops (authz_password.go)

	store     *store                      // the sessions topic
	willHook  atomic.Pointer[func() bool] // tests: runs before a will due at once is published; true = killed there
	connRate  *connRateTable              // --max-connection-rate; nil = off (limits.go)
	draining  atomic.Bool
	stopSaver context.CancelFunc
	runCtx    context.Context // ends when Stop begins; set in Start before any will can be due

	eng       gnet.Engine
	procsHeld int // Ps reserved for the loops while they run (procs.go)
	booted    chan struct{}
	stopped   chan error
	warnLim   throttle.Limiter // warn: one line per message per 10 s
	events    throttle.Limiter // debug: connection-event lines, eventBurst per kind per second
}

// New builds a Server that hands messages to off. Call Start to listen.
func New(off *offload.Offload, opts ...Opt) (*Server, error) {
	s := &Server{off: off, trie: newTrie(), sessions: make(map[string]*session), readPos: make(map[tp]int64),
		loops: make(map[gnet.EventLoop]*loop), booted: make(chan struct{}), stopped: make(chan error, 1)}
	s.cfg.defaults()
	for _, o := range opts {
		o.apply(&s.cfg)
	}
	if err := s.cfg.validate(); err != nil {
		return nil, err
	}
	s.lag.limit = int64(s.cfg.readLagLimit)
	if off == nil {
		return nil, errors.New("invalid server configuration: nil offload")
	}
	if n := off.Lanes(); s.cfg.eventLoops > n {
		// Each loop owns one lane (loop.go): a loop without one would index past the lanes at its first OnBoot.
		return nil, fmt.Errorf("invalid server configuration: %d event loops but the offload has %d lanes; "+
			"build it with offload.New(mux, loops) for at least as many loops", s.cfg.eventLoops, n)
	}
	for _, l := range s.cfg.listeners {
		ls, _ := transport.ParseListener(l) // validate checked it
		s.specs = append(s.specs, ls)
	}
	var err error
	s.transports, err = transport.NewShared(s.specs, transport.Options{MaxPacketSize: s.cfg.maxPacketSize,
		ProxyTrusted: s.cfg.proxyTrusted, TLS: s.cfg.tlsFiles(), HandshakeFailed: func(err error) {
			s.metrics.transportErrors.Add(1)
			s.debug("TLS handshake failed", "err", err)
		}})
	if err != nil {
		return nil, err
	}
	s.warnLim.Window = 10 * time.Second
	s.events.Window, s.events.Burst = time.Second, eventBurst
	s.metrics.initListeners(s.cfg.listeners)
	s.store = newStore(s)
	if len(s.cfg.routes) > 0 {
		rt, err := newRouting(&s.cfg, off.RetainedTopic(), off.SessionsTopic(), off.CreatesTopics())
		if err != nil {
			return nil, err
		}
		s.rt = rt
	}
	if s.cfg.connRate > 0 {
		s.connRate = newConnRateTable(s.cfg.connRate, s.cfg.connBurst, &s.metrics.limits)
	}
	return s, nil
}

// Start follows the messages topic and the retained topic and starts the event loops; it returns once the
// listeners accept connections, or with the error that kept them from starting. It does not wait for the
// retained messages to load (see retained.go and RetainedReady).
func (s *Server) Start() error {
	// One call, so the first fetch reads every topic; the retained one loads in the background
	// (retained.go); sessions must be known before the first CONNECT is answered, so Start waits for them.
	sessionsLoaded := make(chan struct{})
	specs := []offload.FollowSpec{
		{Topic: s.cfg.messagesTopic, Handler: s.onRecord, Started: s.initReadPos},
		s.retainedFollow(),
		{Topic: s.off.SessionsTopic(), Start: offload.FromStart,
			Raw:      s.store.onRaw,
			CaughtUp: func() { close(sessionsLoaded) }},
	}
	var routed []offload.FollowSpec
	if s.rt != nil {
		var err error
		if routed, err = s.routedFollowSpecs(); err != nil { // routing.go
			return fmt.Errorf("cannot prepare routed Kafka topics: %w", err)
		}
		specs = append(specs, routed...)
	}
	s.resolveShareMode() // share_group.go
	if err := s.off.FollowAll(specs...); err != nil {
		return fmt.Errorf("cannot follow Kafka topics: %w", err)
	}
	if s.rt != nil {
		s.rt.markReady(routed)
		go s.discoverLoop()
	}
	t0 := time.Now()
	select {
	case <-sessionsLoaded:
		s.cfg.log.Info("sessions loaded from Kafka", "sessions", s.store.count(), "took", time.Since(t0))
	case <-time.After(s.cfg.loadTimeout):
		return fmt.Errorf("cannot load sessions from Kafka topic %s within %v", s.off.SessionsTopic(), s.cfg.loadTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopSaver, s.runCtx = cancel, ctx // before ready: a will due at once reads runCtx
	s.store.mu.Lock()
	s.store.ready = true // from now on, end records decide wills (see wills.go)
	s.store.mu.Unlock()
	s.recoverOwnConnections(time.Now())
	go s.saver(ctx, s.cfg.saveEvery)
	go s.heartbeats(ctx)
	go s.processor(ctx)
	addrs := make([]string, len(s.specs))
	for i := range s.specs {
		addrs[i] = s.specs[i].Addr()
	}
	// Each loop waits in epoll_wait holding a P: reserve one more per loop, so Go's network poller (Kafka's
	// connections) always has one (procs.go).
	procs.reserve(s.cfg.eventLoops)
	s.procsHeld = s.cfg.eventLoops
	go func() {
		s.stopped <- gnet.Rotate(s, addrs,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.eventLoops),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTicker(true),
			gnet.WithReadBufferCap(64<<10),
			gnet.WithLogger(gnetLogger{s.cfg.log}),
		)
	}()
	select {
	case <-s.booted:
		return nil
	case err := <-s.stopped:
		s.releaseProcs()
		if err == nil {
			err = errors.New("event loops stopped at once")
		}
		return fmt.Errorf("cannot listen for MQTT on %v: %w", s.cfg.listeners, err)
	}
}

// Stop closes the listeners and every connection, and waits for the loops to end.
func (s *Server) Stop(ctx context.Context) error {
	s.metrics.stopping.Store(true)
	if s.stopSaver != nil {
		s.stopSaver()
	}
	if s.rt != nil {
		s.rt.cancel()
	}
	if err := s.eng.Stop(ctx); err != nil {
		return fmt.Errorf("cannot stop the event loops: %w", err)
	}
	select {
	case <-s.stopped:
		s.releaseProcs()
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// releaseProcs gives back the Ps reserved for the loops once they have ended (procs.go).
func (s *Server) releaseProcs() {
	procs.release(s.procsHeld)
	s.procsHeld = 0
}

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return &s.metrics }

// OnBoot runs once when gnet is listening.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.booted)
	return gnet.None
}

// OnTick runs on gnet's ticker goroutine once a second; the work itself is done on each loop.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.loopMu.Lock()
	loops := s.order
	s.loopMu.Unlock()
	now := time.Now().UnixNano()
	for _, l := range loops {
		l.lag.tickAt.CompareAndSwap(0, now) // the tick measures how long it waited for the loop (loop lag)
		_ = l.el.Execute(context.Background(), l.tickFn)
	}
	return time.Second, gnet.None
}

// loopOf returns Ferry's state for a gnet event loop, creating it on the loop's first connection.
func (s *Server) loopOf(el gnet.EventLoop) *loop {
	s.loopMu.Lock()
	defer s.loopMu.Unlock()
	l := s.loops[el]
	if l == nil {
		l = newLoop(s, len(s.order), el)
		s.loops[el] = l
		s.order = append(s.order, l)
	}
	return l
}

// sendWillWith publishes a will message into Kafka and tombstones the sessions record named done (the will's
// pending or stored record; "" none) with it: with transactions in the same one, so a kill leaves both or
// neither; without, once Kafka acknowledged the will (a kill in between publishes it again: at least once).
// A will the route rules or the payload contract refuse is not published and its record is tombstoned all the
// same. A will Kafka fails keeps its record: it is published again by this instance's next run (wills.go,
// recoverOwnConnections) or a processor. It may run on any goroutine (lanes are safe to call from any): it
// uses the first lane, and retries while the lane is full.
func (s *Server) sendWillWith(m *offload.Message, done string) {
	tomb := func() {
		if done != "" {
			s.store.write(done, nil)
		}
	}
	var rt offload.Route
	if s.rt != nil { // a will follows the route rules like any publish (routing.go)
		var reason int
		var ok bool
		if rt, reason, ok = s.routeFor(m.Topic); !ok {
			s.metrics.routeRefused[reason].Add(1)
			s.warn("will message not published: its topic is not routed", "topic", m.Topic, "reason", RouteRefusedNames[reason])
			tomb()
			return
		}
	}
	if s.cfg.payload != nil {
		var ok bool
		if m, ok = s.checkWill(m); !ok { // contract.go
			tomb()
			return
		}
	}
	s.metrics.willsSent.Add(1)
	with := "" // the tombstone in the will's transaction
	if s.off.Transactional() {
		with = done
	}
	var try func()
	try = func() {
		err := s.off.Lane(0).TryPublishRouted(m, rt, with, nil, func(err error) {
			if err != nil {
				s.warn("will message not written to Kafka", "topic", m.Topic, "err", err)
				return
			}
			if with == "" {
				tomb()
			}
		})
		if errors.Is(err, offload.ErrFull) {
			time.AfterFunc(100*time.Millisecond, try)
		}
	}
	try()
}

// debug logs a connection event (connect, disconnect with its reason, refusal, authentication failure,
// transport error) at debug level — on with --log-level debug. A flood of one kind of event cannot flood the
// log: at most eventBurst lines per kind (the message) per second get through, and the first line of the next
// second says how many were left out.
func (s *Server) debug(msg string, args ...any) {
	if !s.debugOn() {
		return
	}
	if ok, n := s.events.Allow(msg); ok {
		if n > 0 {
			args = append(args, "suppressed_before", n)
		}
		s.cfg.log.Debug(msg, args...)
	}
}

// debugOn reports whether debug lines are logged; callers check it before building costly arguments.
func (s *Server) debugOn() bool { return s.cfg.log.Enabled(context.Background(), slog.LevelDebug) }

// eventBurst is how many connection-event lines of one kind debug lets through per second.
const eventBurst = 50

// warn logs at warning level, at most once per period for the same message so a misbehaving fleet cannot
// flood the log.
func (s *Server) warn(msg string, args ...any) {
	if ok, _ := s.warnLim.Allow(msg); ok {
		s.cfg.log.Warn(msg, args...)
	}
}

// gnetLogger sends gnet's own log lines to slog, its chatter at debug level.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }

// initReadPos records where the shared reader starts in each partition of the messages topic, so resumes
// know the reader's position before its first record. Runs before any record is handed on.
func (s *Server) initReadPos(begin map[int32]int64) { s.initTopicPos(0, begin) }
