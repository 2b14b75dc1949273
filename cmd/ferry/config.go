package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ferrymq/ferry/server/route"
)

// config holds every setting of the binary. Each one is a flag, a YAML key of the same name in --config, and an
// environment variable FERRY_<NAME> (upper case, '-' → '_'). Precedence: flags > environment > file > defaults.
type config struct {
	mqtt              listFlag
	kafkaBrokers      string
	embeddedKafkaAddr string
	dataDir           string
	topicMessages     string
	topicRetained     string
	topicSessions     string
	partitions        int
	msgPartitions     int // --messages-partitions; 0: by Kafka (messagesPartitions)
	admin             string
	pprof             bool
	kafkaReadyTimeout time.Duration
	maxConnections    int
	eventLoops        int
	maxPacketSize     int
	receiveMaximum    int
	maxQoS            int
	serverKeepAlive   int
	connectTimeout    time.Duration
	sessionQueue      int
	maxSubscriptions  int
	maxShareGroups    int
	shareMode         string        // --shared-subscriptions (server/share/sharegroup.go)
	shareDelivLimit   int           // --share-delivery-limit
	shareHold         time.Duration // --share-hold
	v3SessionExpiry   time.Duration
	maxSessionExpiry  time.Duration
	saveEvery         time.Duration
	qos2StateGap      time.Duration
	sessionsReadWait  time.Duration
	heartbeatEvery    time.Duration
	deadAfter         time.Duration
	chaosWillHold     time.Duration
	logUnthrottled    bool
	outboundBudget    int
	outAliases        int
	outAliasBytes     int
	lingerTimeout     time.Duration
	lingerBytes       int
	maxLingering      int
	laneBytes         int
	laneRecords       int
	laneDelay         time.Duration
	laneQoS0Delay     time.Duration
	readLagLimit      time.Duration
	qos0Hold          bool
	logLevel          string
	logFormat         string
	shutdownTimeout   time.Duration
	configFile        string
	kafkaTxn          string
	kafkaTxnID        string
	instanceID        string
	recentCacheBytes  int
	memoryLimit       int64 // --memory-limit (memlimit.go)
	proxyTrusted      listFlag
	route             listFlag // route rules, in order (server/route)
	routeUnrouted     string
	proxyNets         []netip.Prefix    // parsed by validate
	sources           map[string]string // setting name → where its value came from (see explain)
	kafka             kafkaConfig       // --kafka-* client settings (kafka.go)
	auth              authConfig        // --auth-* authentication and authorization (auth.go)
	edge              edgeConfig        // rate limits and redirect (edge.go)
	tls               tlsConfig         // --tls-* certificates of tls:// and wss:// listeners (tls.go)
	embedded          embeddedConfig    // --embedded-* bounds of the embedded Kafka (embedded.go)
	payload           payloadConfig     // --payload rules and --schema-registry-* (payload.go)
}

// defaultListener is the listener of a Ferry started without --mqtt: loopback only, so that the first command
// of the README does not open an unauthenticated broker to the network (as Mosquitto 2.0 does).
const defaultListener = "tcp://127.0.0.1:1883"

// usage heads `ferry --help`, before the flags.
const usage = `usage: ferry [flags]                 run the broker; every flag is also a YAML key (--config) and a FERRY_<NAME> variable
       ferry check-config [flags]    check the settings and the files they name, without starting anything
       ferry passwd [--cost N] [--roles a,b] [--delete] FILE USER
                                     add, replace or delete a user of an --auth-passwords file (password on stdin)
       ferry version                 print the version

flags:
`

// listFlag is a repeatable string flag.
type listFlag struct {
	vals []string
	set  bool // values came from a source other than the default: the next Set starts a new list
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }
func (l *listFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			l.vals = append(l.vals, p)
		}
	}
	return nil
}

func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry", flag.ContinueOnError)
	c.mqtt.vals = []string{defaultListener}
	fs.Var(&c.mqtt, "mqtt", "MQTT listener URL, repeatable: tcp://host:port (host:port alone means tcp://), tls://host:port, ws://host:port/path, wss://host:port/path, optionally ?proxy=true. The default listens on loopback only; a listener on another address needs authentication (--auth-passwords, --auth-jwt-key, --auth-jwks) or --auth-anonymous")
	c.proxyTrusted.vals = []string{"127.0.0.0/8", "::1/128"}
	fs.Var(&c.proxyTrusted, "proxy-trusted", "networks (CIDR, comma-separated or repeated) whose peers may send PROXY protocol headers on ?proxy=true listeners")
	fs.Var(&c.route, "route", "route rule FILTER>KAFKA_TOPIC[@{capture}], repeatable, first match wins: e.g. 'place/{site}/device/{dev}/#>devices-{site}@{dev}' sends those topics to devices-<site>, partitioned by <dev> (no commas inside a rule: they separate rules)")
	fs.StringVar(&c.routeUnrouted, "route-unrouted", "accept", "publishes no --route rule matches: accept (to the messages topic) or refuse (v5 PUBACK/PUBREC 0x90)")
	fs.StringVar(&c.kafkaBrokers, "kafka-brokers", "", "comma-separated Kafka bootstrap brokers; empty = start the embedded Kafka")
	fs.StringVar(&c.embeddedKafkaAddr, "embedded-kafka-addr", "127.0.0.1:9092", "address the embedded Kafka listens on (for kcat and other Kafka tools)")
	fs.StringVar(&c.dataDir, "data-dir", "./data", "directory the embedded Kafka persists to")
	fs.StringVar(&c.topicMessages, "topic-messages", "mqtt-messages", "Kafka topic of every MQTT message (delete policy)")
	fs.StringVar(&c.topicRetained, "topic-retained", "mqtt-retained", "Kafka topic of retained messages (compacted)")
	fs.StringVar(&c.topicSessions, "topic-sessions", "mqtt-sessions", "Kafka topic of sessions (compacted)")
	fs.IntVar(&c.partitions, "partitions", 6, "partitions of the topics Ferry creates")
	fs.IntVar(&c.msgPartitions, "messages-partitions", 0, "partitions of the messages topic and routed topics Ferry creates, in place of --partitions (0 = 1 with the embedded Kafka, --partitions with --kafka-brokers)")
	fs.StringVar(&c.admin, "admin", "", "admin HTTP address for /healthz, /readyz, /metrics (empty = off)")
	fs.BoolVar(&c.pprof, "pprof", false, "serve /debug/pprof on the admin address")
	fs.DurationVar(&c.kafkaReadyTimeout, "kafka-ready-timeout", 10*time.Second, "/readyz fails when Kafka leaves Ferry's requests unanswered this long")
	fs.IntVar(&c.maxConnections, "max-connections", 0, "maximum concurrent MQTT connections (0 = unlimited)")
	fs.IntVar(&c.eventLoops, "event-loops", 0, "gnet event loops (0 = one per CPU)")
	fs.IntVar(&c.maxPacketSize, "max-packet-size", 1<<20, "largest MQTT packet accepted, in bytes")
	fs.IntVar(&c.receiveMaximum, "receive-maximum", 1024, "QoS 1/2 publishes a client may have unacknowledged")
	fs.IntVar(&c.maxQoS, "max-qos", 2, "highest QoS accepted and granted")
	fs.IntVar(&c.serverKeepAlive, "server-keep-alive", 0, "keep-alive in seconds imposed on v5 clients (0 = the client's)")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "time a new socket has to send CONNECT")
	fs.IntVar(&c.sessionQueue, "session-queue", 10000, "messages queued per session")
	fs.IntVar(&c.maxSubscriptions, "max-subscriptions", 1000, "subscriptions per session; more get SUBACK 0x97 (v3: 0x80)")
	fs.IntVar(&c.maxShareGroups, "max-share-groups", 100, "shared subscription groups ($share/name/filter) one instance serves at once, each a Kafka consumer group or share group member with its own client (about 3 connections per broker); 0 turns shared subscriptions off")
	fs.StringVar(&c.shareMode, "shared-subscriptions", "auto", "how shared subscriptions use Kafka: share-group (KIP-932 share groups, Kafka 4.2+), consumer-group (one consumer group per share group, split by partition) or auto (share-group when the brokers advertise the share group APIs)")
	fs.IntVar(&c.shareDelivLimit, "share-delivery-limit", 4, "share-group mode: deliveries after which a record is rejected as poison (1-9; the group's share.delivery.count.limit is set one above)")
	fs.DurationVar(&c.shareHold, "share-hold", 20*time.Second, "share-group mode: how long a record may wait for its member's acknowledgement before it is released for another (keep below group.share.record.lock.duration.ms)")
	fs.DurationVar(&c.v3SessionExpiry, "v3-session-expiry", 2*time.Hour, "how long a v3 CleanSession=0 session outlives its connection")
	fs.DurationVar(&c.maxSessionExpiry, "max-session-expiry", 7*24*time.Hour, "cap on a v5 client's Session Expiry Interval")
	fs.DurationVar(&c.saveEvery, "save-every", 2*time.Second, "how often delivery offsets of connected persistent sessions are written to Kafka")
	fs.DurationVar(&c.qos2StateGap, "qos2-state-gap", 10*time.Millisecond, "least time between two records of a persistent session's outbound QoS 2 state: steps held meanwhile wait for the next, which carries them all (0 = one per Kafka round trip)")
	fs.DurationVar(&c.sessionsReadWait, "sessions-read-wait", 5*time.Second, "how long a CONNECT may wait to read its client's sessions partition; after it, CONNACK 0x88 (v3: 3)")
	fs.DurationVar(&c.heartbeatEvery, "heartbeat-every", 2*time.Second, "how often the instance writes its heartbeat and processes its sessions partitions")
	fs.DurationVar(&c.deadAfter, "dead-after", 6*time.Second, "an instance silent this long is dead: its connections are ended within dead-after + heartbeat-every")
	fs.DurationVar(&c.chaosWillHold, "chaos-will-hold", 0, "fault testing only: a will due at once waits this long after its claim won before it is published, so that a kill can hit the window (scripts/sessions-check.sh)")
	fs.BoolVar(&c.logUnthrottled, "log-unthrottled", false, "fault testing and debugging: log every debug and warning line, without the per-kind rate limit (scripts/sessions-check.sh with LOG_LEVEL=debug)")
	fs.IntVar(&c.outboundBudget, "outbound-budget", 1<<20, "bytes buffered towards one client before deliveries wait")
	fs.IntVar(&c.outAliases, "outbound-topic-aliases", 16, "topic aliases used towards one v5 client that announces a Topic Alias Maximum, least recently used replaced first (0 = none)")
	fs.IntVar(&c.outAliasBytes, "outbound-topic-alias-bytes", 2048, "memory of one connection's outbound topic alias table: 32 bytes per alias plus its topic")
	fs.DurationVar(&c.lingerTimeout, "linger-timeout", 2*time.Second, "after a DISCONNECT or CONNACK refusal, how long the socket is half-closed and read (and discarded) so the client can read the reason instead of a reset (0 = close at once)")
	fs.IntVar(&c.lingerBytes, "linger-bytes", 64<<10, "bytes a lingering socket may read before it is closed")
	fs.IntVar(&c.maxLingering, "max-lingering", 1024, "sockets lingering at once; past it a connection closes at once")
	fs.IntVar(&c.laneBytes, "inflight-bytes", 8<<20, "bytes in flight to Kafka per event loop")
	fs.IntVar(&c.laneRecords, "inflight-records", 8192, "records in flight to Kafka per event loop")
	fs.DurationVar(&c.laneDelay, "inflight-delay", 10*time.Millisecond, "when Kafka falls behind, records in flight per event loop are also limited to what Kafka completes in this time (0 = count and bytes only)")
	fs.DurationVar(&c.laneQoS0Delay, "inflight-qos0-delay", 5*time.Millisecond, "while an event loop's records wait longer than this for Kafka, QoS 0 publishes beyond what Kafka completes in this time are dropped at ingest instead of queued; QoS 1/2 are never dropped (0 = off)")
	fs.DurationVar(&c.readLagLimit, "read-lag-limit", 10*time.Millisecond, "while the shared reader trails Kafka by more than this (with at least 256 records behind it in its partition), each event loop drops a share of its QoS 0 publishes at ingest that grows with the lag and falls back once the reader keeps up, so deliveries stay near this late when the instance is at its limit; QoS 1/2 are never dropped (0 = off)")
	fs.BoolVar(&c.qos0Hold, "qos0-hold", true, "when a QoS 0 publish would be dropped for being late (--inflight-qos0-delay, --read-lag-limit), first stop reading its connection until it would not be, so a client that waits for the server's answers is slowed, not dropped; a connection with more than 64 KiB of input buffered is read and its late QoS 0 publishes dropped; QoS 1/2 are never held by it (false: drop only)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "time allowed for a graceful stop")
	fs.StringVar(&c.configFile, "config", "", "YAML file with any of these settings")
	fs.StringVar(&c.kafkaTxn, "kafka-transactions", "auto", "write every record in Kafka transactions, so a QoS 2 message and its session state are stored exactly once (readers use read_committed): true, false, or auto = true with --kafka-brokers, false with the embedded Kafka (see docs/sessions.md)")
	fs.StringVar(&c.kafkaTxnID, "kafka-transactional-id", "", "transactional id, unique per instance and stable across its restarts (empty = ferry-<host name>-<first MQTT port>)")
	fs.IntVar(&c.recentCacheBytes, "recent-cache-bytes", 64<<20, "memory for recently read messages kept decoded, so resuming sessions need no Kafka fetch (0 = off)")
	fs.StringVar(&c.instanceID, "instance-id", "", "this instance's id in the sessions topic, unique per instance and stable across restarts: clients of a crashed run resume at once after a restart (empty = ferry-<host name>-<first MQTT port>)")
	addKafkaFlags(fs, &c.kafka)
	addAuthFlags(fs, &c.auth)
	addEdgeFlags(fs, &c.edge)
	addTLSFlags(fs, &c.tls)
	addEmbeddedFlags(fs, &c.embedded)
	addMemoryLimitFlag(fs, &c.memoryLimit)
	addPayloadFlags(fs, &c.payload)
	return fs
}

// loadConfig parses args, the environment and the --config file into a config. Errors are one line that names
// the setting (and the file line for YAML).
func loadConfig(args []string, env func(string) string) (*config, error) {
	c := &config{}
	fs := newFlagSet(c)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Fprint(os.Stdout, usage)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, unknownFlagHint(err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (settings are flags: ferry --help)", fs.Arg(0))
	}
	fromFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fromFlags[f.Name] = true })
	flagVals := map[string]string{}
	fs.Visit(func(f *flag.Flag) { flagVals[f.Name] = f.Value.String() })

	// Re-apply in precedence order: file, then environment, then the flags given.
	fresh := &config{}
	fs = newFlagSet(fresh)
	cfgFile := c.configFile
	if cfgFile == "" {
		cfgFile = env("FERRY_CONFIG")
	}
	src := map[string]string{}
	if cfgFile != "" {
		if err := applyFile(fs, cfgFile, src); err != nil {
			return nil, err
		}
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	for _, n := range names {
		key := envName(n)
		if v := env(key); v != "" && !fromFlags[n] {
			src[n] = key
			if l, ok := fs.Lookup(n).Value.(*listFlag); ok {
				l.set = false // the environment replaces the file's list
			}
			if err := fs.Set(n, v); err != nil {
				return nil, fmt.Errorf("invalid environment variable %s=%q: %w", key, v, err)
			}
		}
	}
	for n, v := range flagVals {
		if l, ok := fs.Lookup(n).Value.(*listFlag); ok {
			l.set = false
		}
		if err := fs.Set(n, v); err != nil {
			return nil, fmt.Errorf("invalid flag --%s=%q: %w", n, v, err)
		}
		src[n] = "--" + n
	}
	fresh.configFile = cfgFile
	fresh.sources = src
	return fresh, fresh.explain(fresh.validate())
}

// applyFile sets flags from a YAML mapping of setting names to values, and records in src the file and line of
// each (path:line). Unknown keys and wrong types are errors naming the key, the file and the line.
func applyFile(fs *flag.FlagSet, path string, src map[string]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("cannot parse config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of setting names to values", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		f := fs.Lookup(k.Value)
		if f == nil || k.Value == "config" {
			return fmt.Errorf("%s:%d: unknown setting %q", path, k.Line, k.Value)
		}
		var vals []string
		switch v.Kind {
		case yaml.ScalarNode:
			vals = []string{v.Value}
		case yaml.SequenceNode:
			if _, ok := f.Value.(*listFlag); !ok {
				return fmt.Errorf("%s:%d: %s takes one value, not a list", path, v.Line, k.Value)
			}
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return fmt.Errorf("%s:%d: %s: list entries must be plain values", path, e.Line, k.Value)
				}
				vals = append(vals, e.Value)
			}
		default:
			return fmt.Errorf("%s:%d: %s: want a plain value", path, v.Line, k.Value)
		}
		for _, s := range vals {
			if err := fs.Set(k.Value, s); err != nil {
				return fmt.Errorf("%s:%d: %s: invalid value %q: %w", path, v.Line, k.Value, s, err)
			}
		}
		src[k.Value] = fmt.Sprintf("%s:%d", path, k.Line)
	}
	return nil
}

func (c *config) validate() error {
	if err := c.validateListeners(); err != nil {
		return err
	}
	checks := []struct {
		ok   bool
		name string
		val  any
		want string
	}{
		{len(c.mqtt.vals) > 0, "mqtt", "", "at least one listener"},
		{c.partitions >= 1, "partitions", c.partitions, "at least 1"},
		{c.msgPartitions >= 0, "messages-partitions", c.msgPartitions, "0 (by Kafka) or more"},
		{c.maxConnections >= 0, "max-connections", c.maxConnections, "0 or more"},
		{c.eventLoops >= 0, "event-loops", c.eventLoops, "0 or more"},
		{c.receiveMaximum >= 1 && c.receiveMaximum <= 65535, "receive-maximum", c.receiveMaximum, "1 to 65535"},
		{c.maxQoS >= 0 && c.maxQoS <= 2, "max-qos", c.maxQoS, "0, 1 or 2"},
		{c.serverKeepAlive >= 0 && c.serverKeepAlive <= 65535, "server-keep-alive", c.serverKeepAlive, "0 to 65535"},
		{c.connectTimeout > 0, "connect-timeout", c.connectTimeout, "positive"},
		{c.shutdownTimeout > 0, "shutdown-timeout", c.shutdownTimeout, "positive"},
		{c.kafkaReadyTimeout >= 100*time.Millisecond, "kafka-ready-timeout", c.kafkaReadyTimeout, "at least 100ms"},
		{c.v3SessionExpiry >= time.Second && c.v3SessionExpiry.Seconds() < 1<<32, "v3-session-expiry", c.v3SessionExpiry, "1s to 136 years"},
		{c.maxSessionExpiry >= time.Second && c.maxSessionExpiry.Seconds() < 1<<32, "max-session-expiry", c.maxSessionExpiry, "1s to 136 years"},
		{c.saveEvery >= 100*time.Millisecond, "save-every", c.saveEvery, "at least 100ms"},
		{c.qos2StateGap >= 0, "qos2-state-gap", c.qos2StateGap, "0 or positive"},
		{c.laneDelay >= 0, "inflight-delay", c.laneDelay, "0 (off) or positive"},
		{c.laneQoS0Delay >= 0, "inflight-qos0-delay", c.laneQoS0Delay, "0 (off) or positive"},
		{c.readLagLimit >= 0, "read-lag-limit", c.readLagLimit, "0 (off) or positive"},
		{c.sessionsReadWait >= 100*time.Millisecond, "sessions-read-wait", c.sessionsReadWait, "at least 100ms"},
		{c.heartbeatEvery >= 100*time.Millisecond, "heartbeat-every", c.heartbeatEvery, "at least 100ms"},
		{c.deadAfter >= 2*c.heartbeatEvery, "dead-after", c.deadAfter, "at least two heartbeat intervals"},
		{c.chaosWillHold >= 0, "chaos-will-hold", c.chaosWillHold, "0 (off) or positive"},
		{c.outAliases >= 0 && c.outAliases <= 65535, "outbound-topic-aliases", c.outAliases, "0 to 65535"},
		{c.outAliasBytes >= 0, "outbound-topic-alias-bytes", c.outAliasBytes, "0 or more"},
		{c.lingerTimeout >= 0, "linger-timeout", c.lingerTimeout, "0 (off) or positive"},
		{c.lingerBytes >= 0, "linger-bytes", c.lingerBytes, "0 or more"},
		{c.maxLingering >= 0, "max-lingering", c.maxLingering, "0 or more"},
		{c.logFormat == "text" || c.logFormat == "json", "log-format", c.logFormat, "text or json"},
		{validLevel(c.logLevel), "log-level", c.logLevel, "debug, info, warn or error"},
	}
	for _, ch := range checks {
		if !ch.ok {
			return fmt.Errorf("invalid --%s %v: want %s", ch.name, ch.val, ch.want)
		}
	}
	if c.routeUnrouted != "accept" && c.routeUnrouted != "refuse" {
		return fmt.Errorf("invalid --route-unrouted %q: want accept or refuse", c.routeUnrouted)
	}
	for _, r := range c.route.vals {
		if _, err := route.Parse(r); err != nil {
			return fmt.Errorf("invalid --route %q: %w", r, err)
		}
	}
	switch c.kafkaTxn {
	case "auto", "true", "false":
	default:
		return fmt.Errorf("invalid --kafka-transactions %q: want auto, true or false", c.kafkaTxn)
	}
	if c.recentCacheBytes < 0 {
		return fmt.Errorf("invalid --recent-cache-bytes %d: want 0 (off) or more", c.recentCacheBytes)
	}
	c.proxyNets = c.proxyNets[:0]
	for _, v := range c.proxyTrusted.vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			if a, aerr := netip.ParseAddr(v); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return fmt.Errorf("invalid --proxy-trusted %q: want a network such as 10.0.0.0/8 or an address", v)
			}
		}
		c.proxyNets = append(c.proxyNets, p.Masked())
	}
	if err := c.auth.validate(); err != nil {
		return err
	}
	if err := c.edge.validate(); err != nil {
		return err
	}
	if err := c.tls.validate(); err != nil {
		return err
	}
	if err := c.embedded.validate(c.messagesPartitions()); err != nil {
		return err
	}
	if err := validMemoryLimit(c.memoryLimit); err != nil {
		return err
	}
	if err := c.payload.validate(); err != nil {
		return err
	}
	return c.kafka.validate(c.kafkaBrokers != "")
}

func validLevel(s string) bool {
	switch s {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

// settingNames lists every setting, for documentation tests.
func settingNames() []string {
	var names []string
	newFlagSet(&config{}).VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	return names
}

// messagesPartitions is the partition count of the messages topic and the routed topics Ferry creates. With the
// embedded Kafka it is 1 unless set: on one broker that serves latency best (a produce request carries every
// waiting record in one batch, a fetch answers one partition; docs/architecture.md, "The messages topic's
// partitions"); on a cluster it is --partitions, which spreads the topic over the brokers.
func (c *config) messagesPartitions() int {
	switch {
	case c.msgPartitions > 0:
		return c.msgPartitions
	case c.kafkaBrokers == "":
		return 1
	}
	return c.partitions
}
