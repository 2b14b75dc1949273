package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/internal/procs"
	"github.com/ferrymq/ferry/internal/throttle"
	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server/auth"
	"github.com/ferrymq/ferry/server/payload"
	"github.com/ferrymq/ferry/server/ratelimit"
	"github.com/ferrymq/ferry/server/route"
	"github.com/ferrymq/ferry/server/sessions"
	"github.com/ferrymq/ferry/server/share"
	"github.com/ferrymq/ferry/server/transport"
	"github.com/panjf2000/gnet/v2"
)

// Server is one Ferry instance's MQTT side.
type Server struct {
	gnet.BuiltinEventEngine

	cfg        cfg
	off        *offload.Offload  // the loops' lanes: MQTT messages into Kafka, and back-pressure
	kafka      Kafka             // the rest of Kafka: reads, session records, groups, admin (kafka.go)
	specs      []transport.Spec  // the parsed listeners, in configuration order
	transports *transport.Shared // what the listeners' transports share: limits, PROXY trust, TLS certificates

	trie     *trie
	retained retainedStore
	metrics  Metrics

	regMu    sync.Mutex
	sessions map[string]*session
	deciding map[string][]*conn // recorded CONNECTs not yet answered, by client id (newest.go); under regMu

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
	readPos    map[tp]int64      // topic-partition → next offset the shared reader hands on (tp: routing.go)
	held       *payload.Held[tp] // deliver=json: records held for their schema id (contract.go); nil without --payload
	topicBegin map[tp]int64      // routed topic-partition → offset the shared reader began it at

	// The shared reader writes the fields above for every record (matchMu, gen); a loop reads rt below for
	// every PUBLISH. A cache line between them keeps a publish from missing on the reader's writes (with the
	// held records' state moved out to payload.Held, rt had come onto gen's line).
	_ [64]byte

	rt *routing // topic routing (routing.go); nil without route rules

	shares *share.Registry // shared subscriptions (share.go, server/share)
	pw     auth.CheckPool  // password checks off the event loops (authz_password.go)

	store     *sessions.Store             // the sessions topic (server/sessions; its host: store.go)
	lone      lone                        // whether no other instance is alive: unrecorded connections (alone.go)
	willHook  atomic.Pointer[func() bool] // tests: runs before a will due at once is published; true = killed there
	connRate  *ratelimit.ConnTable        // --max-connection-rate; nil = off (limits.go, server/ratelimit)
	draining  atomic.Bool
	stopSaver context.CancelFunc
	runCtx    context.Context // ends when Stop begins; set in Start before any will can be due

	reassertHook atomic.Pointer[func() bool] // tests: runs before an owner record is written again; true = killed there

	eng       gnet.Engine
	procsHeld int           // Ps reserved for the loops while they run (internal/procs)
	addrs     []string      // what the loops listen on, tcp://host:port (Start)
	listening chan struct{} // closed at the engine's first tick: every loop listens (OnTick)
	ticked    bool          // OnTick ran once; only the ticker goroutine touches it
	stopped   chan error
	warnLim   throttle.Limiter // warn: one line per message per 10 s
	events    throttle.Limiter // debug: connection-event lines, eventBurst per kind per second
}

// New builds a Server that hands MQTT messages to off's lanes and reaches the rest of Kafka through kafka (the
// *kafkamux.Mux off was built over). Call Start to listen.
func New(off *offload.Offload, kafka Kafka, opts ...Opt) (*Server, error) {
	srv := &Server{off: off, kafka: kafka, trie: newTrie(), sessions: make(map[string]*session), deciding: make(map[string][]*conn), readPos: make(map[tp]int64),
		loops: make(map[gnet.EventLoop]*loop), listening: make(chan struct{}), stopped: make(chan error, 1)}
	srv.cfg.defaults()
	for _, o := range opts {
		o.apply(&srv.cfg)
	}
	if err := srv.cfg.validate(); err != nil {
		return nil, err
	}
	srv.lag.limit = int64(srv.cfg.readLagLimit)
	if off == nil {
		return nil, errors.New("invalid server configuration: nil offload")
	}
	if kafka == nil {
		return nil, errors.New("invalid server configuration: nil Kafka")
	}
	if n := off.Lanes(); srv.cfg.eventLoops > n {
		// Each loop owns one lane (loop.go): a loop without one would index past the lanes at its first OnBoot.
		return nil, fmt.Errorf("invalid server configuration: %d event loops but the offload has %d lanes; "+
			"build it with offload.New(mux, loops) for at least as many loops", srv.cfg.eventLoops, n)
	}
	for _, l := range srv.cfg.listeners {
		ls, _ := transport.ParseListener(l) // validate checked it
		srv.specs = append(srv.specs, ls)
	}
	var err error
	srv.transports, err = transport.NewShared(srv.specs, transport.MaxPacketSize(srv.cfg.maxPacketSize),
		transport.ProxyTrusted(srv.cfg.proxyTrusted), transport.TLS(srv.cfg.tlsFiles()),
		transport.HandshakeFailed(func(err error) {
			srv.metrics.transportErrors.Add(1)
			srv.debug("TLS handshake failed", "err", err)
		}))
	if err != nil {
		return nil, err
	}
	if srv.shares, err = share.NewRegistry(shareHost{srv}, kafka, srv.cfg.share...); err != nil {
		return nil, err
	}
	off.OnRetainedWritten(srv.retainedWritten)
	srv.warnLim.Window = 10 * time.Second
	srv.events.Window, srv.events.Burst = time.Second, eventBurst
	if srv.cfg.logUnthrottled {
		srv.warnLim.Window, srv.events.Window = 0, 0 // the zero window lets every line through
	}
	srv.metrics.initListeners(srv.cfg.listeners)
	srv.store = sessions.NewStore(srv.cfg.instanceID, srv.cfg.deadAfter, kafka, storeHost{srv})
	if len(srv.cfg.routes) > 0 {
		rt, err := newRouting(srv, &srv.cfg, kafka)
		if err != nil {
			return nil, err
		}
		srv.rt = rt
	}
	if srv.cfg.payload != nil {
		srv.held = payload.NewHeld[tp](srv.cfg.payload, holdHost{srv})
	}
	if srv.cfg.connRate > 0 {
		srv.connRate = ratelimit.NewConnTable(srv.cfg.connRate, srv.cfg.connBurst, &srv.metrics.limits.rateEvictions)
	}
	return srv, nil
}

// Start follows the messages topic and the retained topic and starts the event loops; it returns once the
// listeners accept connections, or with the error that kept them from starting. It does not wait for the
// retained messages to load (see retained.go and RetainedReady).
func (srv *Server) Start() error {
	// One call, so the first fetch reads every topic; the retained one loads in the background
	// (retained.go); sessions must be known before the first CONNECT is answered, so Start waits for them.
	sessionsLoaded := make(chan struct{})
	specs := []kafkamux.FollowSpec{
		{Topic: srv.cfg.messagesTopic, Handler: srv.onRecord, Started: srv.initReadPos},
		srv.retainedFollow(),
		{Topic: srv.kafka.SessionsTopic(), Start: kafkamux.FromStart,
			Raw:      srv.store.OnRaw,
			CaughtUp: func() { close(sessionsLoaded) }},
	}
	var routed []route.Topic
	if srv.rt != nil {
		var err error
		if routed, err = srv.rt.topics.Start(); err != nil { // server/route/topics.go
			return fmt.Errorf("cannot prepare routed Kafka topics: %w", err)
		}
		specs = append(specs, srv.routedFollow(routed, kafkamux.FromEnd)...)
	}
	srv.resolveShareMode() // share.go
	if err := srv.kafka.FollowAll(specs...); err != nil {
		return fmt.Errorf("cannot follow Kafka topics: %w", err)
	}
	if srv.rt != nil {
		srv.rt.topics.Ready(routed)
		go srv.rt.topics.Run()
	}
	t0 := time.Now()
	select {
	case <-sessionsLoaded:
		srv.cfg.log.Info("sessions loaded from Kafka", "sessions", srv.store.Count(), "took", time.Since(t0))
	case <-time.After(srv.cfg.loadTimeout):
		return fmt.Errorf("cannot load sessions from Kafka topic %s within %v", srv.kafka.SessionsTopic(), srv.cfg.loadTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv.stopSaver, srv.runCtx = cancel, ctx // before ready: a will due at once reads runCtx
	srv.store.SetReady()                    // from now on, end records decide wills (see wills.go)
	srv.recoverOwnConnections(time.Now())
	go srv.saver(ctx, srv.cfg.saveEvery)
	go srv.heartbeats(ctx)
	go srv.processor(ctx)
	addrs := make([]string, len(srv.specs))
	for i := range srv.specs {
		addrs[i] = srv.specs[i].Addr()
	}
	srv.addrs = addrs
	reusePort, err := transport.ExclusiveReusePort(addrs) // server/transport/listen.go
	if err != nil {
		return fmt.Errorf("cannot listen for MQTT on %v: %w", srv.cfg.listeners, err)
	}
	// Each loop waits in epoll_wait holding a P: reserve one more per loop, so Go's network poller (Kafka's
	// connections) always has one (internal/procs).
	procs.Reserve(srv.cfg.eventLoops)
	srv.procsHeld = srv.cfg.eventLoops
	go func() {
		srv.stopped <- gnet.Rotate(srv, addrs,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(srv.cfg.eventLoops),
			gnet.WithReuseAddr(true),
			gnet.WithReusePort(reusePort),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithTicker(true),
			gnet.WithReadBufferCap(64<<10),
			gnet.WithLogger(gnetLogger{srv.cfg.log}),
		)
	}()
	select {
	case <-srv.listening:
		return nil
	case err := <-srv.stopped:
		srv.releaseProcs()
		if err == nil {
			err = errors.New("event loops stopped at once")
		}
		return fmt.Errorf("cannot listen for MQTT on %v: %w", srv.cfg.listeners, err)
	}
}

// Stop closes the listeners and every connection, and waits for the loops to end.
func (srv *Server) Stop(ctx context.Context) error {
	srv.metrics.stopping.Store(true)
	if srv.stopSaver != nil {
		srv.stopSaver()
	}
	if srv.rt != nil {
		srv.rt.topics.Close()
	}
	if err := srv.eng.Stop(ctx); err != nil {
		return fmt.Errorf("cannot stop the event loops: %w", err)
	}
	select {
	case <-srv.stopped:
		srv.releaseProcs()
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// releaseProcs gives back the Ps reserved for the loops once they have ended (internal/procs).
func (srv *Server) releaseProcs() {
	procs.Release(srv.procsHeld)
	srv.procsHeld = 0
}

// Metrics returns the server's counters.
func (srv *Server) Metrics() *Metrics { return &srv.metrics }

// OnBoot runs once when gnet is listening.
func (srv *Server) OnBoot(eng gnet.Engine) gnet.Action {
	srv.eng = eng
	return gnet.None
}

// OnTick runs on gnet's ticker goroutine once a second; the work itself is done on each loop. gnet starts
// the ticker once every loop listens: the first tick defers their accepts (server/transport/deferaccept_linux.go)
// and lets Start return.
func (srv *Server) OnTick() (time.Duration, gnet.Action) {
	if !srv.ticked {
		srv.ticked = true
		if n, err := transport.DeferAccept(srv.eng, srv.addrs); err != nil {
			srv.warn("cannot defer accepting connections until their first bytes; each connect costs its event loop one more wake-up",
				"err", err, "listening_sockets_deferred", n)
		}
		close(srv.listening)
	}
	srv.loopMu.Lock()
	loops := srv.order
	srv.loopMu.Unlock()
	now := time.Now().UnixNano()
	for _, l := range loops {
		l.lag.tickAt.CompareAndSwap(0, now) // the tick measures how long it waited for the loop (loop lag)
		l.tickSoon()
	}
	return time.Second, gnet.None
}

// loopOf returns Ferry's state for a gnet event loop, creating it on the loop's first connection.
func (srv *Server) loopOf(el gnet.EventLoop) *loop {
	srv.loopMu.Lock()
	defer srv.loopMu.Unlock()
	l := srv.loops[el]
	if l == nil {
		l = newLoop(srv, len(srv.order), el)
		srv.loops[el] = l
		srv.order = append(srv.order, l)
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
func (srv *Server) sendWillWith(m *kafkamux.Message, done string) {
	tomb := func() {
		if done != "" {
			srv.store.Write(done, nil)
		}
	}
	var rt offload.Route
	if srv.rt != nil { // a will follows the route rules like any publish (routing.go)
		var reason int
		var ok bool
		if rt, reason, ok = srv.routeFor(m.Topic); !ok {
			srv.metrics.routeRefused[reason].Add(1)
			srv.warn("will message not published: its topic is not routed", "topic", m.Topic, "reason", RouteRefusedNames[reason])
			tomb()
			return
		}
	}
	if srv.cfg.payload != nil {
		var ok bool
		if m, ok = srv.checkWill(m); !ok { // contract.go
			tomb()
			return
		}
	}
	srv.metrics.willsSent.Add(1)
	with := "" // the tombstone in the will's transaction
	if srv.kafka.Transactional() {
		with = done
	}
	var try func()
	try = func() {
		err := srv.off.Lane(0).TryPublishRouted(m, rt, with, nil, func(err error) {
			if err != nil {
				srv.warn("will message not written to Kafka", "topic", m.Topic, "err", err)
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
func (srv *Server) debug(msg string, args ...any) {
	if !srv.debugOn() {
		return
	}
	if ok, n := srv.events.Allow(msg); ok {
		if n > 0 {
			args = append(args, "suppressed_before", n)
		}
		srv.cfg.log.Debug(msg, args...)
	}
}

// debugOn reports whether debug lines are logged; callers check it before building costly arguments.
func (srv *Server) debugOn() bool { return srv.cfg.log.Enabled(context.Background(), slog.LevelDebug) }

// eventBurst is how many connection-event lines of one kind debug lets through per second.
const eventBurst = 50

// warn logs at warning level, at most once per period for the same message so a misbehaving fleet cannot
// flood the log.
func (srv *Server) warn(msg string, args ...any) {
	if ok, _ := srv.warnLim.Allow(msg); ok {
		srv.cfg.log.Warn(msg, args...)
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
func (srv *Server) initReadPos(begin map[int32]int64) { srv.initTopicPos(0, begin) }
