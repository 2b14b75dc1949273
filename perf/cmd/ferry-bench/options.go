package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ferrymq/ferry/perf/internal/load"
	"github.com/ferrymq/ferry/perf/internal/stats"
)

type options struct {
	scenario   string
	args       []string
	target     string
	wsPath     string // --target ws://host:port/path: MQTT over WebSocket at this path
	tls        bool   // --target tls://host:port or wss://: TLS on every connection
	tlsCA      string // --tls-ca: PEM CA file that verifies the server ("" = no verification)
	tlsResume  bool   // --tls-resume: session tickets kept and offered
	tlsGroups  string // --tls-groups: key exchange groups offered
	serverPids []int
	echo       bool
	workers    int
	srcIPs     int
	jsonOut    string
	md         bool
	plotDir    string
	label      string
	targetName string
	smoke      bool
	progress   time.Duration
	keepAlive  int
	connRate   float64
	connPar    int
	connTO     int
	settle     time.Duration
	username   string
	persistent bool
	will       bool
	password   string

	conns       int
	subsPerConn int
	hold        time.Duration

	pubs, subs  int
	qos, subQoS int
	window      int
	payload     int
	jsonPayload bool
	duration    time.Duration
	rate        float64
	drain       time.Duration
	batch       int
	topic       string
	filter      string

	kafka      string
	kafkaTopic string
	metricsURL string
	pubSndBuf  int
	minSentNs  int64
	qos0Flow   bool
	subRx      string // load.SubRxEpoll or "" (goroutine per connection), resolved from --sub-rx
}

// smokeDefaults are the small counts --smoke uses for flags not given.
var smokeDefaults = map[string]map[string]string{
	"idle":         {"conns": "200", "hold": "2s", "subs-per-conn": "2", "settle": "300ms"},
	"fanin":        {"pubs": "10", "subs": "2", "duration": "3s", "drain": "1s", "settle": "200ms"},
	"fanout":       {"subs": "20", "rate": "200", "duration": "3s", "drain": "1s", "settle": "200ms"},
	"kafka-ingest": {"pubs": "10", "duration": "3s", "drain": "3s", "settle": "200ms"},
}

func parseOptions(scenario string, args []string) (*options, error) {
	o := &options{scenario: scenario, args: args}
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	var pids string
	fs.StringVar(&o.target, "target", "127.0.0.1:1883", "MQTT broker host:port, or ws://host:port/path for MQTT over WebSocket")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "with a tls:// or wss:// target: PEM CA file to verify the server's certificate (empty = not verified)")
	fs.BoolVar(&o.tlsResume, "tls-resume", false, "with a tls:// or wss:// target: keep the server's session tickets and resume with them (each worker's first connections do a full handshake)")
	fs.StringVar(&o.tlsGroups, "tls-groups", "", "with a tls:// or wss:// target: key exchange groups the clients offer, comma separated, e.g. X25519,CurveP256 as an OpenSSL 3.0 or mbedTLS device (empty = Go's default: X25519MLKEM768 first)")
	fs.StringVar(&pids, "server-pid", "", "broker process id(s), comma separated, for RSS and CPU (e.g. mosquitto,bridge,kfake)")
	fs.BoolVar(&o.echo, "echo", false, "measure the generator itself: run the trivial in-harness sink and target it")
	fs.IntVar(&o.workers, "workers", 0, "worker processes (0 = max(2, connections/6000))")
	fs.IntVar(&o.srcIPs, "src-ips", 1, "source addresses 127.0.0.x per worker (loopback targets only; 0 = let the kernel choose)")
	fs.StringVar(&o.jsonOut, "json", "", "write the result as JSON to this file")
	fs.BoolVar(&o.md, "md", false, "print the result as a Markdown table on stdout")
	fs.StringVar(&o.plotDir, "plot", "", "write PNG charts (latency distribution, throughput over time) to this directory")
	fs.StringVar(&o.label, "label", "", "row label for summaries (default: scenario)")
	fs.StringVar(&o.targetName, "target-name", "", "column name for summaries (e.g. mosquitto)")
	fs.BoolVar(&o.smoke, "smoke", false, "a few seconds with small counts; exit 1 if anything failed or was lost")
	fs.DurationVar(&o.progress, "progress", 5*time.Second, "interval of the progress line on stderr (0 = none)")
	fs.IntVar(&o.keepAlive, "keepalive", 60, "MQTT keep-alive in seconds; PINGREQ after half of it without traffic")
	fs.Float64Var(&o.connRate, "conn-rate", 2000, "new connections per second, all workers together (0 = unbounded)")
	fs.IntVar(&o.connPar, "conn-par", 256, "handshakes in progress at once, all workers together")
	fs.IntVar(&o.connTO, "conn-timeout", 15, "seconds allowed for TCP connect + CONNECT→CONNACK (+ SUBSCRIBE→SUBACK)")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "wait before reading server memory after a phase")
	fs.StringVar(&o.username, "username", "", "MQTT username")
	fs.BoolVar(&o.persistent, "persistent", false, "CONNECT with CleanSession=0 (persistent sessions: Ferry stores each in Kafka) instead of 1")
	fs.StringVar(&o.password, "password", "", "MQTT password")
	fs.BoolVar(&o.will, "will", false, "CONNECT with a will (QoS 0, topic wills/<client id>): Ferry records such a connection in Kafka whatever its session")

	fs.IntVar(&o.conns, "conns", 15000, "idle: connections")
	fs.IntVar(&o.subsPerConn, "subs-per-conn", 0, "idle: subscriptions per connection (unique topics)")
	fs.DurationVar(&o.hold, "hold", 30*time.Second, "idle: how long to hold the connections")

	defPubs, defSubs, defQoS, defRate := 100, 1, 0, 0.0
	switch scenario {
	case "fanout":
		defPubs, defSubs, defQoS, defRate = 1, 1000, 1, 100
	case "kafka-ingest":
		defSubs, defQoS = 0, 1
	}
	fs.IntVar(&o.pubs, "pubs", defPubs, "publishers (fanout: always 1)")
	fs.IntVar(&o.subs, "subs", defSubs, "subscribers")
	fs.IntVar(&o.qos, "qos", defQoS, "publish QoS 0, 1 or 2")
	fs.IntVar(&o.subQoS, "sub-qos", -1, "subscription QoS (-1 = same as --qos)")
	fs.IntVar(&o.window, "window", 16, "in-flight PUBLISHes per publisher at QoS >= 1")
	fs.IntVar(&o.payload, "payload", 64, "payload bytes (at least 22: the stamp)")
	fs.BoolVar(&o.jsonPayload, "json-payload", false, "payloads are JSON documents {\"device\",\"temp\",\"seq\",\"sent\"} padded to --payload (at least 96), for brokers that check payloads; only acknowledgements are measured (use --subs 0)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measurement window")
	fs.Float64Var(&o.rate, "rate", defRate, "total publish rate in msg/s (0 = as fast as acks / TCP allow)")
	fs.DurationVar(&o.drain, "drain", 3*time.Second, "after the window, how long subscribers (and the Kafka reader) keep receiving")
	fs.IntVar(&o.batch, "batch", 32, "PUBLISHes per socket write at most")
	fs.IntVar(&o.pubSndBuf, "pub-sndbuf", -1, "SO_SNDBUF of publisher sockets in bytes (-1 = 64 KiB at QoS 0, kernel default otherwise; 0 = kernel default)")
	fs.BoolVar(&o.qos0Flow, "qos0-flow", true, "QoS 0: at most --window unconfirmed messages per publisher (PINGREQ after each batch, tokens back on PINGRESP); false = as fast as TCP allows")
	subRx := fs.String("sub-rx", "auto", "how subscribers are read: epoll (plain TCP: one epoll receiver per worker, deliveries timed at the kernel's receive time, the time read by the generator reported too), goroutine (one per connection, timed when read), auto (epoll for fanout, goroutine otherwise)")
	fs.StringVar(&o.topic, "topic", "", "publish topic; {i} = publisher id (default bench/{i}; fanout bench/fanout)")
	fs.StringVar(&o.filter, "filter", "", "subscription filter (default bench/#; fanout: the topic)")
	fs.StringVar(&o.kafka, "kafka", "", "Kafka bootstrap host:port (kafka-ingest: required; idle: count the server's Kafka connections)")
	fs.StringVar(&o.kafkaTopic, "kafka-topic", "mqtt-messages", "Kafka topic the broker writes MQTT messages to")
	fs.StringVar(&o.metricsURL, "metrics", "", "Ferry's /metrics URL: report its own latency stages over the load window next to the harness's view")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ferry-bench %s --target host:port [flags]\n", scenario)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for k, v := range smokeDefaults[scenario] {
			if !set[k] {
				if err := fs.Set(k, v); err != nil {
					return nil, err
				}
			}
		}
		if !set["progress"] {
			o.progress = 0
		}
	}
	var err error
	if o.serverPids, err = parsePids(pids); err != nil {
		return nil, err
	}
	switch {
	case o.qos < 0 || o.qos > 2:
		return nil, fmt.Errorf("bad --qos %d: want 0, 1 or 2", o.qos)
	case o.subQoS > 2:
		return nil, fmt.Errorf("bad --sub-qos %d", o.subQoS)
	case o.window < 1 || o.window > 65535:
		return nil, fmt.Errorf("bad --window %d: want 1..65535", o.window)
	case o.payload < stats.PayloadHeader:
		return nil, fmt.Errorf("--payload %d too small: the stamp needs %d bytes", o.payload, stats.PayloadHeader)
	case o.jsonPayload && o.payload < stats.JSONStampSize:
		return nil, fmt.Errorf("--payload %d too small for --json-payload: want at least %d", o.payload, stats.JSONStampSize)
	case o.jsonPayload && (o.subs > 0 || scenario == "kafka-ingest"):
		return nil, fmt.Errorf("--json-payload: stamps are not read back; use it with --subs 0 and not with kafka-ingest")
	case scenario == "kafka-ingest" && o.kafka == "":
		return nil, fmt.Errorf("kafka-ingest needs --kafka host:port")
	case o.batch < 1:
		return nil, fmt.Errorf("bad --batch %d", o.batch)
	}
	if o.subQoS < 0 {
		o.subQoS = o.qos
	}
	switch *subRx {
	case "auto", "epoll", "goroutine":
	default:
		return nil, fmt.Errorf("bad --sub-rx %q: want epoll, goroutine or auto", *subRx)
	}
	if o.pubSndBuf < 0 {
		o.pubSndBuf = 0
		if o.qos == 0 {
			o.pubSndBuf = 64 << 10
		}
	}
	if scenario == "fanout" {
		o.pubs = 1
	}
	if scenario == "kafka-ingest" && o.qos == 0 {
		fmt.Fprintln(os.Stderr, "warning: kafka-ingest at QoS 0: loss is not an error")
	}
	for _, p := range []string{"tls://", "ssl://", "mqtts://"} {
		if rest, ok := strings.CutPrefix(o.target, p); ok {
			o.target, o.tls = rest, true
		}
	}
	if rest, ok := strings.CutPrefix(o.target, "wss://"); ok {
		o.target, o.tls = "ws://"+rest, true
	}
	if _, err := load.ParseTLSGroups(o.tlsGroups); err != nil {
		return nil, err // one line, checked before any worker starts
	}
	if rest, ok := strings.CutPrefix(o.target, "ws://"); ok {
		host, path, _ := strings.Cut(rest, "/")
		o.target, o.wsPath = host, "/"+path
	}
	if o.topic == "" {
		o.topic = "bench/{i}"
		if scenario == "fanout" {
			o.topic = "bench/fanout"
		}
	}
	plainTCP := !o.tls && o.wsPath == ""
	switch {
	case *subRx == "epoll" && !plainTCP:
		return nil, fmt.Errorf("--sub-rx epoll reads plain TCP only, not a TLS or WebSocket target")
	case *subRx == "epoll", *subRx == "auto" && scenario == "fanout" && plainTCP:
		o.subRx = load.SubRxEpoll
	}
	if o.filter == "" {
		o.filter = "bench/#"
		if scenario == "fanout" {
			o.filter = strings.ReplaceAll(o.topic, "{i}", "0")
		}
	}
	return o, nil
}

func (o *options) totalConns() int {
	if o.scenario == "idle" {
		return o.conns
	}
	return o.pubs + o.subs
}

// loopback reports whether host:port names a 127.0.0.0/8 address.
func loopback(target string) bool {
	h, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback() && ip.To4() != nil
}

func (o *options) command() string {
	return "ferry-bench " + o.scenario + " " + strings.Join(o.args, " ")
}
