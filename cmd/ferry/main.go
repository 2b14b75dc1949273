// Command ferry runs the Ferry MQTT broker: MQTT on gnet event loops, every message a Kafka record.
//
//	ferry                      # MQTT on 127.0.0.1:1883, embedded Kafka persisted in ./data
//	ferry --help               # every setting; each is also a YAML key and a FERRY_<NAME> variable
//	ferry check-config --config ferry.yaml
//	ferry passwd FILE USER
//	ferry version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/offload"
	"github.com/ferrymq/ferry/server"
	"github.com/ferrymq/ferry/server/share"
)

// version is stamped by scripts/build.sh and the Dockerfile (-ldflags "-X main.version=…"); a plain `go build`
// in a git checkout gets the version Go derives from the tags instead (buildVersion, in init: -X only sets a
// variable initialised to a constant).
var version = "dev"

func init() { version = buildVersion(version) }

// buildVersion is the stamped version, or else the main module's version that the go command records from
// version control: the tag (v1.2.3) when the commit has one, a pseudo-version after the last tag
// (v1.2.4-0.20261206233958-f97f163abcde) otherwise, "+dirty" with local changes. "dev" when neither is known
// (go run, or a build outside a git checkout).
func buildVersion(stamped string) string {
	if stamped != "dev" {
		return stamped
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return stamped
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("ferry", version)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "check-config" {
		os.Exit(checkConfig(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "passwd" {
		os.Exit(passwd(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	cfg, err := loadProcessConfig(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		var ce errConfig
		if errors.As(err, &ce) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// loadProcessConfig is loadConfig over the process's environment, refusing FERRY_* variables that name no
// setting.
func loadProcessConfig(args []string) (*config, error) {
	cfg, err := loadConfig(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if envErr := checkEnvironment(os.Environ()); envErr != nil {
		return nil, envErr
	}
	return cfg, err
}

// newLogger writes the log to w in --log-format at --log-level. Durations are written as Go duration strings
// with their unit ("1.5s", "250ms") in both formats: slog's JSON handler would write integer nanoseconds.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.logLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.logFormat == "json" {
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serverOptions turns the settings into the server's options, with the number of event loops.
func serverOptions(cfg *config, log *slog.Logger) (int, []server.Opt) {
	loops := cfg.eventLoops
	if loops == 0 {
		loops = numCPU()
	}
	sopts := []server.Opt{
		server.InstanceID(instanceID(cfg)),
		server.ProxyTrusted(cfg.proxyNets),
		server.EventLoops(loops),
		server.MaxConnections(cfg.maxConnections),
		server.MaxPacketSize(cfg.maxPacketSize),
		server.ReceiveMaximum(uint16(cfg.receiveMaximum)),
		server.MaximumQoS(byte(cfg.maxQoS)),
		server.ServerKeepAlive(uint16(cfg.serverKeepAlive)),
		server.ConnectTimeout(cfg.connectTimeout),
		server.SessionQueue(cfg.sessionQueue),
		server.ReadLagLimit(cfg.readLagLimit),
		server.QoS0Hold(cfg.qos0Hold),
		server.MaxSubscriptions(cfg.maxSubscriptions),
		server.Share(share.MaxGroups(cfg.maxShareGroups), share.Enabled(cfg.maxShareGroups > 0),
			share.Mode(cfg.shareMode), share.DeliveryLimit(cfg.shareDelivLimit), share.Hold(cfg.shareHold)),
		server.V3SessionExpiry(uint32(cfg.v3SessionExpiry.Seconds())),
		server.MaxSessionExpiry(uint32(cfg.maxSessionExpiry.Seconds())),
		server.SaveEvery(cfg.saveEvery), server.QoS2StateGap(cfg.qos2StateGap),
		server.SessionsReadWait(cfg.sessionsReadWait),
		server.Heartbeats(cfg.heartbeatEvery, cfg.deadAfter), server.WillHold(cfg.chaosWillHold),
		server.LogUnthrottled(cfg.logUnthrottled),
		server.OutboundBudget(cfg.outboundBudget),
		server.OutboundTopicAliases(cfg.outAliases), server.OutboundTopicAliasBytes(cfg.outAliasBytes),
		server.Linger(cfg.lingerTimeout, cfg.lingerBytes, cfg.maxLingering),
		server.MessagesTopic(cfg.topicMessages),
		server.Routes(cfg.route.vals, cfg.routeUnrouted == "refuse"),
		server.Logger(log),
	}
	sopts = append(sopts, cfg.edge.serverOpts()...) // rate limits and redirect (edge.go)
	sopts = append(sopts, cfg.tls.serverOpts()...)  // certificates of TLS listeners (tls.go)
	for _, l := range cfg.mqtt.vals {
		sopts = append(sopts, server.Listen(l))
	}
	return loops, sopts
}

// checkConfig validates the settings (flags, FERRY_* variables, --config file) without starting anything:
// `ferry check-config --config ferry.yaml`.
func checkConfig(args []string) int {
	cfg, err := loadProcessConfig(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		_, sopts := serverOptions(cfg, slog.Default())
		err = server.CheckOptions(sopts...)
		if err == nil {
			_, err = cfg.auth.authority() // reads the key and rules files
		}
		if err == nil {
			_, err = cfg.payload.set(slog.Default()) // reads and compiles the schema files
		}
		err = cfg.explain(err)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		return 2
	}
	src := "flags and defaults"
	if cfg.configFile != "" {
		src = cfg.configFile
	}
	fmt.Println("ferry: configuration ok:", src)
	return 0
}

// errConfig marks an error in the settings: the process exits with status 2, like for a bad flag.
type errConfig struct{ error }

func run(cfg *config) error {
	log := newLogger(cfg, os.Stderr)
	slog.SetDefault(log)

	loops, sopts := serverOptions(cfg, log)
	if err := server.CheckOptions(sopts...); err != nil {
		return errConfig{cfg.explain(err)}
	}
	// SIGHUP runs every reloader (auth.go); each builds its new state fully and keeps the old one on error.
	var reloaders []reloader
	authority, err := cfg.auth.authority()
	if err != nil {
		return errConfig{cfg.explain(err)}
	}
	logAccess(log, cfg)
	if authority != nil {
		sopts = append(sopts, server.Auth(authority))
		reloaders = append(reloaders, reloader{name: "auth keys and rules", fn: cfg.auth.reloadFunc(authority)})
	}
	pset, err := cfg.payload.set(log)
	if err != nil {
		return errConfig{cfg.explain(err)}
	}
	if pset != nil {
		pset.Start() // registry schemas load in the background: their rules refuse publishes until then
		defer pset.Close()
		sopts = append(sopts, server.Payload(pset, cfg.payload.invalidV3 == "disconnect"))
	}
	raiseFileLimit(log)
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	gc := tuneGC(gcCtx, log) // gctune.go
	kopts := []kafkamux.Opt{
		kafkamux.Topics(cfg.topicMessages, cfg.topicRetained, cfg.topicSessions),
		kafkamux.Partitions(int32(cfg.partitions)),
		kafkamux.MessagesPartitions(int32(cfg.messagesPartitions())),
		kafkamux.Logger(log),
		kafkamux.HealthTimeout(cfg.kafkaReadyTimeout),
	}
	kopts = append(kopts, cfg.kafka.kafkaOpts()...)
	kopts = append(kopts, kafkamux.RecentCacheBytes(cfg.recentCacheBytes))
	if cfg.kafkaTxn == "true" || cfg.kafkaTxn == "auto" && cfg.kafkaBrokers != "" {
		kopts = append(kopts, kafkamux.Transactions(transactionalID(cfg)))
	}
	if cfg.kafkaBrokers != "" {
		kopts = append(kopts, kafkamux.Brokers(strings.Split(cfg.kafkaBrokers, ",")...))
	} else {
		kopts = append(kopts, kafkamux.EmbeddedAddr(cfg.embeddedKafkaAddr), kafkamux.DataDir(cfg.dataDir))
		kopts = append(kopts, cfg.embedded.opts()...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	mux, err := kafkamux.New(ctx, kopts...)
	cancel()
	if err != nil {
		return err
	}
	defer mux.Close()
	// The memory limit is set once the data dir is loaded: the load's transient peak (docs/operations.md,
	// "Restart") is not the running process's.
	ml := planMemoryLimit(cfg, loops, os.LookupEnv)
	if ml.source == "derived" {
		ml.others = othersIndexMemory(mux)
	}
	gc.limitMemory(ml)
	logMemoryLimit(log, ml)
	off, err := offload.New(mux, loops, offload.LaneBytes(cfg.laneBytes), offload.LaneRecords(cfg.laneRecords),
		offload.LaneDelay(cfg.laneDelay), offload.LaneQoS0Delay(cfg.laneQoS0Delay))
	if err != nil {
		return err
	}
	srv, err := server.New(off, mux, sopts...)
	if err != nil {
		return err
	}
	if cfg.tls.cert != "" {
		reloaders = append(reloaders, reloader{name: "TLS certificates", fn: srv.ReloadTLS})
	}
	if err := srv.Start(); err != nil {
		return err
	}
	log.Info("ferry is serving MQTT", "listeners", cfg.mqtt.vals, "kafka", mux.Addr(), "event_loops", loops, "version", version)

	var adminSrv *http.Server
	if cfg.admin != "" {
		ln, err := net.Listen("tcp", cfg.admin)
		if err != nil {
			return fmt.Errorf("cannot listen for admin HTTP on %s: %w", cfg.admin, err)
		}
		adminSrv = &http.Server{Handler: adminHandler(srv, off, mux, gc, cfg.pprof), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = adminSrv.Serve(ln) }()
		log.Info("admin HTTP listening", "addr", ln.Addr().String())
	}

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			reloadAll(log, reloaders) // SIGHUP must not stop the broker, as its default action would
		}
	}()
	s := <-sig
	log.Info("stopping", "signal", s.String())
	go func() {
		<-sig
		log.Warn("second signal: exiting at once")
		os.Exit(1)
	}()
	ctx, cancel = context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	// The admin listener stays up through the drain: /readyz answers 503 "draining" and /metrics shows the
	// connections leaving.
	if err := srv.Drain(ctx); err != nil {
		log.Warn("not every client left before the shutdown timeout", "err", err)
	}
	if err := srv.Stop(ctx); err != nil {
		log.Warn("event loops did not stop cleanly", "err", err)
	}
	if err := mux.Flush(ctx); err != nil {
		log.Warn("not every record reached Kafka before the stop", "err", err)
	}
	if adminSrv != nil {
		_ = adminSrv.Shutdown(ctx)
	}
	return nil
}

// transactionalID is --kafka-transactional-id, or one derived from the host name and the first MQTT port:
// stable across restarts, so a restarted instance fences its previous incarnation's open transaction at once,
// and distinct for instances sharing a host on different ports.
func transactionalID(cfg *config) string {
	if cfg.kafkaTxnID != "" {
		return cfg.kafkaTxnID
	}
	return defaultInstanceName(cfg)
}

// instanceID is --instance-id, or the same default as the transactional id.
func instanceID(cfg *config) string {
	if cfg.instanceID != "" {
		return cfg.instanceID
	}
	return defaultInstanceName(cfg)
}

// defaultInstanceName is ferry-<host name>-<first MQTT port>.
func defaultInstanceName(cfg *config) string {
	host, _ := os.Hostname()
	port := "1883"
	if len(cfg.mqtt.vals) > 0 {
		if u, err := url.Parse(cfg.mqtt.vals[0]); err == nil && u.Port() != "" {
			port = u.Port()
		}
	}
	return "ferry-" + host + "-" + port
}
