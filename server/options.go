package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/ferrymq/ferry/server/auth"
	"github.com/ferrymq/ferry/server/payload"
	"github.com/ferrymq/ferry/server/route"
	"github.com/ferrymq/ferry/server/share"
	"github.com/ferrymq/ferry/server/transport"
)

// Opt configures a Server. Options follow franz-go's style (as offload's and kafkamux's do): an interface
// over an unexported config that has defaults() and validate(), so only this package can make one.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	listeners        []string       // tcp://host:port, ws://host:port/path, tls://, wss://; repeatable
	eventLoops       int            // gnet event loops; default runtime.NumCPU()
	maxConnections   int            // 0 = unlimited
	maxPacketSize    int            // bytes; inbound limit advertised in CONNACK
	receiveMaximum   uint16         // inbound QoS>0 in flight per client, advertised in CONNACK
	topicAliasMax    uint16         // inbound topic aliases per client, advertised in CONNACK
	maxQoS           byte           // highest QoS the server accepts
	serverKeepAlive  uint16         // seconds; 0 = accept the client's keep-alive
	connectTimeout   time.Duration  // a socket must send CONNECT within this
	sessionQueue     int            // messages queued per session before QoS 0 drops / QoS>0 quota disconnect
	readLagLimit     time.Duration  // how far the shared reader may trail Kafka before a share of QoS 0 publishes is dropped (readlag.go); 0 = off
	qos0Hold         bool           // a QoS 0 publish that would be late is not read until it would not be (readlag_hold.go)
	outboundBudget   int            // bytes buffered towards one client before deliveries wait
	maxSessionExpiry uint32         // seconds; caps the client's Session Expiry Interval
	v3SessionExpiry  uint32         // seconds; expiry of a v3 CleanSession=0 session
	allowEmptyV3ID   bool           // accept an empty client id from v3.1.1 clients with CleanSession=1
	messagesTopic    string         // Kafka topic the shared reader follows
	reasonStrings    bool           // send Reason String properties to v5 clients
	handoffTimeout   time.Duration  // how long a CONNECT waits for another instance to hand a session over
	sessionsWait     time.Duration  // how long a CONNECT waits to read its client's sessions partition (consistency.go)
	saveEvery        time.Duration  // how often delivery offsets of connected persistent sessions are written
	heldSaveGap      time.Duration  // least time between two of a session's records that hold QoS 2 steps (persist.go)
	loadTimeout      time.Duration  // how long Start waits for the sessions topic to be read
	maxSubs          int            // subscriptions per session
	aliasBytes       int            // bytes of topic names one connection may hold as inbound topic aliases
	outAliasMax      int            // outbound topic aliases per connection (alias_out.go); 0 = none sent
	outAliasBytes    int            // bytes one connection's outbound alias table may hold
	lingerTimeout    time.Duration  // how long a closed connection's socket is read and discarded (linger.go); 0 = off
	lingerBytes      int            // bytes a lingering socket may read before it is closed
	lingerMax        int            // sockets lingering at once, per instance
	heartbeatEvery   time.Duration  // how often the instance writes its heartbeat to the sessions topic
	deadAfter        time.Duration  // an instance silent this long is dead: its clients' wills and sessions move on
	willHold         time.Duration  // testing: a will due at once waits this long after its claim won (WillHold)
	logUnthrottled   bool           // debugging: no per-kind rate limit on debug and warning lines (LogUnthrottled)
	proxyTrusted     []netip.Prefix // peers allowed to send PROXY protocol headers
	instanceID       string         // stable id of this instance in the sessions topic; "" = random per start

	// Rate limits and redirect (limits.go, redirect.go); zero values are off.
	connRate   float64       // CONNECTs per second per source address
	connBurst  int           // 0 = one second's worth
	pubRate    float64       // PUBLISHes per second per connection
	pubBurst   int           // 0 = one second's worth
	pubGrace   time.Duration // how long a connection may stay over pubRate before 0x96; 0 = 5 s
	redirectBy string        // "", "client-id" or "identity"
	advertise  string        // host:port clients use to reach this instance
	log        *slog.Logger

	auth *auth.Authority // authentication and topic authorization (authz.go); nil = off

	share []share.Opt // shared subscriptions (server/share)

	routes         []string // route rules, in order (routing.go); none = every message to messagesTopic
	refuseUnrouted bool     // refuse publishes no rule matches

	payload             *payload.Set // payload contracts (contract.go); nil = none
	payloadV3Disconnect bool         // a v3 client's invalid payload closes its connection

	tlsCert       string // PEM certificate chain of tls:// and wss:// listeners (server/transport/tls.go)
	tlsKey        string // its PEM private key
	tlsClientCA   string // PEM CAs that sign client certificates; "" = none asked for
	tlsClientAuth string // TLSClientCertRequire or TLSClientCertVerifyGiven
	tlsHandshakes int    // TLS handshakes in progress at once; 0 = no bound

	tlsGroups []tls.CurveID // key exchanges in order of preference; nil = Go's default
}

func (c *cfg) defaults() {
	c.eventLoops = runtime.NumCPU()
	c.maxPacketSize = 1 << 20
	c.receiveMaximum = 1024
	c.topicAliasMax = 64
	c.maxQoS = 2
	c.connectTimeout = 10 * time.Second
	c.sessionQueue = 10000
	c.readLagLimit = 10 * time.Millisecond
	c.outboundBudget = 1 << 20
	c.maxSessionExpiry = 7 * 24 * 3600
	c.v3SessionExpiry = 2 * 3600
	c.allowEmptyV3ID = true
	c.messagesTopic = "mqtt-messages"
	c.reasonStrings = true
	c.handoffTimeout = 3 * time.Second
	c.sessionsWait = 5 * time.Second
	c.saveEvery = 2 * time.Second
	c.heldSaveGap = 10 * time.Millisecond
	c.loadTimeout = 60 * time.Second
	c.maxSubs = 1000
	c.aliasBytes = 16 << 10
	c.outAliasMax = 16
	c.outAliasBytes = 2 << 10
	c.lingerTimeout = 2 * time.Second
	c.lingerBytes = 64 << 10
	c.lingerMax = 1024
	c.heartbeatEvery = 2 * time.Second
	c.deadAfter = 6 * time.Second
	c.tlsClientAuth = TLSClientCertRequire
	c.tlsHandshakes = 4096
	c.proxyTrusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	c.log = slog.Default()
}

func (c *cfg) validate() error {
	if len(c.listeners) == 0 {
		return errors.New("no MQTT listener configured (use --mqtt tcp://host:port)")
	}
	if len(c.listeners) > 256 {
		return fmt.Errorf("%d MQTT listeners: at most 256", len(c.listeners))
	}
	for _, l := range c.listeners {
		ls, err := transport.ParseListener(l)
		if err != nil {
			return err
		}
		if len(c.listeners) > 1 && strings.HasSuffix(ls.Addr(), ":0") {
			// A connection is matched to its listener by its local address: a random port cannot be told apart.
			return fmt.Errorf("invalid MQTT listener %q: port 0 is allowed only with a single listener", l)
		}
		if ls.TLS() && (c.tlsCert == "" || c.tlsKey == "") {
			return fmt.Errorf("invalid MQTT listener %q: TLS needs a certificate and its key (--tls-cert and --tls-key)", l)
		}
	}
	if c.tlsClientAuth != TLSClientCertRequire && c.tlsClientAuth != TLSClientCertVerifyGiven {
		return fmt.Errorf("TLS client authentication must be %s or %s, not %q", TLSClientCertRequire, TLSClientCertVerifyGiven, c.tlsClientAuth)
	}
	if c.tlsHandshakes < 0 {
		return fmt.Errorf("TLS handshakes in progress must be 0 (no bound) or more, not %d", c.tlsHandshakes)
	}
	switch {
	case c.eventLoops < 1:
		return fmt.Errorf("event loops must be at least 1, not %d", c.eventLoops)
	case c.maxPacketSize < 64 || c.maxPacketSize > 268435460:
		return fmt.Errorf("max packet size must be between 64 and 268435460 bytes, not %d", c.maxPacketSize)
	case c.receiveMaximum == 0:
		return errors.New("receive maximum must be at least 1")
	case c.maxQoS > 2:
		return fmt.Errorf("maximum QoS must be 0, 1 or 2, not %d", c.maxQoS)
	case c.connectTimeout <= 0:
		return errors.New("connect timeout must be positive")
	case c.sessionsWait <= 0:
		return errors.New("sessions read wait must be positive")
	case c.sessionQueue < 1:
		return fmt.Errorf("session queue must hold at least 1 message, not %d", c.sessionQueue)
	case c.readLagLimit < 0:
		return fmt.Errorf("read lag limit must be 0 (off) or positive, not %v", c.readLagLimit)
	case c.outboundBudget < 1024:
		return fmt.Errorf("outbound budget must be at least 1024 bytes, not %d", c.outboundBudget)
	case c.willHold < 0:
		return fmt.Errorf("invalid will hold %v: want 0 or more", c.willHold)
	case c.heldSaveGap < 0:
		return fmt.Errorf("invalid QoS 2 state gap %v: want 0 or more", c.heldSaveGap)
	case c.heartbeatEvery <= 0 || c.deadAfter < 2*c.heartbeatEvery:
		return fmt.Errorf("heartbeats every %v with death after %v: want a positive interval and at least two of them before death", c.heartbeatEvery, c.deadAfter)
	case c.maxSubs < 1:
		return fmt.Errorf("max subscriptions must be at least 1, not %d", c.maxSubs)
	case c.outAliasMax < 0 || c.outAliasMax > 65535:
		return fmt.Errorf("outbound topic aliases must be between 0 and 65535, not %d", c.outAliasMax)
	case c.outAliasBytes < 0:
		return fmt.Errorf("outbound topic alias bytes must not be negative, not %d", c.outAliasBytes)
	case c.lingerTimeout < 0 || c.lingerBytes < 0 || c.lingerMax < 0:
		return fmt.Errorf("lingering close: timeout %v, bytes %d and sockets %d must not be negative", c.lingerTimeout, c.lingerBytes, c.lingerMax)
	case c.maxConnections < 0:
		return fmt.Errorf("max connections must not be negative, not %d", c.maxConnections)
	}
	if len(c.routes) > 0 {
		if _, err := route.NewTable(c.routes, c.messagesTopic, c.refuseUnrouted); err != nil {
			return fmt.Errorf("invalid %w", err)
		}
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	return share.CheckOptions(c.share...)
}

// Listen adds an MQTT listener: tcp://host:port, tls://host:port, ws://host:port/path or wss://host:port/path,
// each optionally with ?proxy=true (connections start with a PROXY protocol header from a trusted load
// balancer). Repeatable; at least one is required.
func Listen(addr string) Opt { return opt(func(c *cfg) { c.listeners = append(c.listeners, addr) }) }

// InstanceID names this instance in the sessions topic (owner records, heartbeats). With the same id across
// restarts, a restarted instance knows its previous run's connections are gone: their clients resume at once
// instead of waiting HandoffTimeout for a dead owner, and their wills are published (recoverOwnConnections).
// Each running instance needs its own. Default: random per start.
func InstanceID(id string) Opt { return opt(func(c *cfg) { c.instanceID = id }) }

// ProxyTrusted lists the networks whose peers may send PROXY protocol headers on ?proxy=true listeners; a
// connection from anywhere else is refused there. Default: loopback only.
func ProxyTrusted(p []netip.Prefix) Opt { return opt(func(c *cfg) { c.proxyTrusted = p }) }

// TLSFiles names the PEM files of tls:// and wss:// listeners: the server's certificate chain, its private
// key and, if clientCA is not "", the CAs whose client certificates are accepted (mutual TLS; see
// TLSClientAuth). A verified client certificate's Subject Common Name is the connection's identity. The files
// are read by New and again by ReloadTLS. Default: none (TLS listeners then refuse to start).
func TLSFiles(cert, key, clientCA string) Opt {
	return opt(func(c *cfg) { c.tlsCert, c.tlsKey, c.tlsClientCA = cert, key, clientCA })
}

// TLSClientAuth sets what a TLS listener with client CAs asks of clients: TLSClientCertRequire ("require", the
// default: no handshake without a valid certificate) or TLSClientCertVerifyGiven ("verify-if-given": a
// certificate is optional, but a client that sends one must send a valid one).
func TLSClientAuth(mode string) Opt { return opt(func(c *cfg) { c.tlsClientAuth = mode }) }

// TLSMaxHandshakes bounds the TLS handshakes in progress at once; more connections wait their turn, in order,
// within the connect timeout. Each costs a goroutine and its crypto state until the client answers.
// Default 4096; 0 = no bound.
func TLSMaxHandshakes(n int) Opt { return opt(func(c *cfg) { c.tlsHandshakes = n }) }

// TLSKeyExchanges sets the key exchange groups TLS listeners accept, in order of preference (names as
// ParseTLSKeyExchanges reads them). Default nil: Go's default, the hybrid post-quantum X25519MLKEM768 first.
func TLSKeyExchanges(groups []tls.CurveID) Opt { return opt(func(c *cfg) { c.tlsGroups = groups }) }

// ParseTLSKeyExchanges reads a comma-separated list of key exchange groups for TLSKeyExchanges, e.g.
// "X25519,CurveP256"; "" gives nil (Go's default).
func ParseTLSKeyExchanges(s string) ([]tls.CurveID, error) { return transport.ParseKeyExchanges(s) }

// EventLoops sets the number of gnet event loops. Default: one per CPU.
func EventLoops(n int) Opt { return opt(func(c *cfg) { c.eventLoops = n }) }

// MaxConnections caps concurrent MQTT connections; further ones get CONNACK 0x97 (v5) / 3 (v3). Default 0 =
// unlimited (the process's file-descriptor limit still applies).
func MaxConnections(n int) Opt { return opt(func(c *cfg) { c.maxConnections = n }) }

// MaxPacketSize is the largest packet accepted from a client, in bytes, advertised in CONNACK. Default 1 MiB.
func MaxPacketSize(n int) Opt { return opt(func(c *cfg) { c.maxPacketSize = n }) }

// ReceiveMaximum is how many QoS 1/2 PUBLISHes a client may have unacknowledged towards the server.
// Default 1024.
func ReceiveMaximum(n uint16) Opt { return opt(func(c *cfg) { c.receiveMaximum = n }) }

// TopicAliasMaximum is how many inbound topic aliases a v5 client may set. Default 64; 0 disables them.
func TopicAliasMaximum(n uint16) Opt { return opt(func(c *cfg) { c.topicAliasMax = n }) }

// MaximumQoS is the highest QoS accepted on PUBLISH and granted on SUBSCRIBE. Default 2.
func MaximumQoS(q byte) Opt { return opt(func(c *cfg) { c.maxQoS = q }) }

// ServerKeepAlive, when non-zero, overrides the client's keep-alive (seconds) and is sent in CONNACK.
// Default 0 (the client's value is used).
func ServerKeepAlive(sec uint16) Opt { return opt(func(c *cfg) { c.serverKeepAlive = sec }) }

// ConnectTimeout closes sockets that do not complete CONNECT in time. Default 10 s.
func ConnectTimeout(d time.Duration) Opt { return opt(func(c *cfg) { c.connectTimeout = d }) }

// SessionQueue bounds the messages queued for one session (connected but behind, or offline). Beyond it QoS 0
// messages are dropped and counted, and a connected client falling behind at QoS 1/2 is disconnected with
// 0x97 Quota Exceeded. Default 10,000.
func SessionQueue(n int) Opt { return opt(func(c *cfg) { c.sessionQueue = n }) }

// ReadLagLimit bounds how late, in time, the shared reader may receive records: while the records it receives
// (with a backlog of at least 256 records behind them in their partition) all waited longer than d since their
// hand-off to Kafka, each loop drops a growing share of its QoS 0 publishes at ingest (counted, reason
// read_lag), and a falling one once the lag is under d, down to none (readlag.go). QoS 1 and 2 are never
// dropped. 0 turns it off. Default 10 ms.
func ReadLagLimit(d time.Duration) Opt { return opt(func(c *cfg) { c.readLagLimit = d }) }

// QoS0Hold makes a loop, when a QoS 0 PUBLISH would be dropped for being late (the loop's records wait for
// Kafka past offload.LaneQoS0Delay, or the shared reader lags past ReadLagLimit), stop reading its connection
// instead until it would not be, so that a client pacing itself on the server's answers is slowed rather than
// dropped. A connection with more than 64 KiB of input buffered is read and its late QoS 0 publishes dropped
// as without it (readlag_hold.go). QoS 1 and 2 publishes are never held by it. Default false here: drop only;
// the ferry binary turns it on (--qos0-hold, default true: at the instance's limit holding delivered more with
// almost no drops and a shorter tail in every quiet hold measured; docs/operations.md).
func QoS0Hold(on bool) Opt { return opt(func(c *cfg) { c.qos0Hold = on }) }

// OutboundBudget bounds the bytes buffered in the socket's outbound buffer for one client; past it,
// deliveries stay queued until the client reads. Default 1 MiB.
func OutboundBudget(n int) Opt { return opt(func(c *cfg) { c.outboundBudget = n }) }

// MaxSessionExpiry caps a v5 client's Session Expiry Interval (seconds). Default 7 days.
func MaxSessionExpiry(sec uint32) Opt { return opt(func(c *cfg) { c.maxSessionExpiry = sec }) }

// V3SessionExpiry is how long a v3.1/v3.1.1 CleanSession=0 session outlives its connection (seconds).
// Default 2 hours.
func V3SessionExpiry(sec uint32) Opt { return opt(func(c *cfg) { c.v3SessionExpiry = sec }) }

// MessagesTopic is the Kafka topic whose records are delivered to subscribers. Default "mqtt-messages".
func MessagesTopic(t string) Opt { return opt(func(c *cfg) { c.messagesTopic = t }) }

// HandoffTimeout bounds how long a CONNECT waits for the instance that held the client to hand its session
// over (write its final offsets); after it the session resumes from the last stored state. Default 3 s.
func HandoffTimeout(d time.Duration) Opt { return opt(func(c *cfg) { c.handoffTimeout = d }) }

// SessionsReadWait bounds how long a CONNECT waits until this instance has read the client's sessions
// partition up to the CONNECT's own owner record, so that nothing about the session is decided on a partial
// view (docs/sessions.md, "Consistency"). A CONNECT that cannot be answered within it gets CONNACK 0x88
// Server Unavailable (v3: return code 3). Default 5 s.
func SessionsReadWait(d time.Duration) Opt { return opt(func(c *cfg) { c.sessionsWait = d }) }

// SaveEvery is how often the delivery offsets of connected persistent sessions are written to Kafka, coalescing
// every acknowledgement in between; they are also written when a connection ends. Default 2 s.
func SaveEvery(d time.Duration) Opt { return opt(func(c *cfg) { c.saveEvery = d }) }

// QoS2StateGap bounds how often a persistent session writes the records that hold its outbound QoS 2 steps:
// a QoS 2 PUBLISH or PUBREL to a persistent session goes out only once Kafka holds its packet id, so a stream
// of them writes the session's delivery record (its whole in-flight list) again and again. At most two such
// records start within any d; steps held meanwhile wait for the next, which carries them all. A message alone
// (none within d before it) does not wait; from 1/d messages a second per session on, its steps wait up to d
// plus a Kafka round trip. 0
// writes one as soon as the last is acknowledged (one per round trip under a stream: thousands per second
// per session on the embedded Kafka). Default 10 ms; never negative.
func QoS2StateGap(d time.Duration) Opt { return opt(func(c *cfg) { c.heldSaveGap = d }) }

// Heartbeats sets how often the instance announces itself in the sessions topic (and processes its sessions
// partitions) and after how much silence another instance counts as dead, so that the wills and expiries of
// its clients are processed elsewhere. Defaults 2 s and 6 s. The ends of a dead instance's connections are
// claimed within deadAfter + every of its death (8 s by default; docs/sessions.md, "Instance death"), its
// clients' wills go out that long plus their Will Delay Interval after it, and its clients can connect
// elsewhere at once (the CONNACK waits at most HandoffTimeout).
func Heartbeats(every, deadAfter time.Duration) Opt {
	return opt(func(c *cfg) { c.heartbeatEvery, c.deadAfter = every, deadAfter })
}

// WillHold is for fault testing only: a will due at once waits d after its claim was read back as the winner
// before it is published, which widens the window in which a killed instance leaves a claimed will
// unpublished, so that the history checker's kills can hit it (docs/sessions.md, "Pending wills"). Default
// 0; never negative.
func WillHold(d time.Duration) Opt { return opt(func(c *cfg) { c.willHold = d }) }

// LogUnthrottled is for fault testing and debugging: every debug and warning line of the server is logged,
// none held back by the per-kind rate limit (a fault run's failures are read from the debug log, and a
// limited log drops the lines of the moment that matters). Default off.
func LogUnthrottled(on bool) Opt { return opt(func(c *cfg) { c.logUnthrottled = on }) }

// MaxSubscriptions caps the subscriptions of one session; SUBSCRIBE beyond it gets 0x97 Quota Exceeded (v3:
// 0x80) for the extra filters. Default 1000.
func MaxSubscriptions(n int) Opt { return opt(func(c *cfg) { c.maxSubs = n }) }

// TopicAliasBytes caps the bytes of topic names one connection may hold as inbound topic aliases (each
// alias can name a 65,535-byte topic); a client going past it is disconnected with 0x97. Default 16 KiB.
func TopicAliasBytes(n int) Opt { return opt(func(c *cfg) { c.aliasBytes = n }) }

// OutboundTopicAliases caps the topic aliases Ferry uses towards one v5 client that announces a Topic Alias
// Maximum: the table holds min(the client's maximum, n) aliases, replaced least recently used first
// (alias_out.go). 0 turns outbound aliases off. Default 16.
func OutboundTopicAliases(n int) Opt { return opt(func(c *cfg) { c.outAliasMax = n }) }

// OutboundTopicAliasBytes caps the memory of one connection's outbound alias table: 32 bytes per alias plus
// the bytes of its topic name. The table is allocated on the first aliased PUBLISH, so idle connections pay
// nothing. Default 2 KiB.
func OutboundTopicAliasBytes(n int) Opt { return opt(func(c *cfg) { c.outAliasBytes = n }) }

// Linger sets the lingering close (linger.go): after Ferry writes a DISCONNECT or a CONNACK refusal, it
// shuts the socket's write side and reads and discards what the client still sends for up to timeout and
// bytes, so the client can read the reason instead of a connection reset; at most sockets connections
// linger at once (past it they close at once). timeout 0 turns it off. Defaults 2 s, 64 KiB, 1024.
func Linger(timeout time.Duration, bytes, sockets int) Opt {
	return opt(func(c *cfg) { c.lingerTimeout, c.lingerBytes, c.lingerMax = timeout, bytes, sockets })
}

// Logger sets the structured logger. Default slog.Default().
func Logger(l *slog.Logger) Opt { return opt(func(c *cfg) { c.log = l }) }

// tlsFiles are the TLS settings for server/transport.
func (c *cfg) tlsFiles() transport.TLSFiles {
	return transport.TLSFiles{Cert: c.tlsCert, Key: c.tlsKey, ClientCA: c.tlsClientCA, ClientAuth: c.tlsClientAuth,
		MaxHandshakes: c.tlsHandshakes, KeyExchanges: c.tlsGroups}
}

// CheckOptions validates options without building a Server, so a command can refuse bad settings before it
// starts anything.
func CheckOptions(opts ...Opt) error {
	var c cfg
	c.defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(); err != nil {
		return err
	}
	for _, l := range c.listeners {
		if ls, _ := transport.ParseListener(l); ls.TLS() {
			if err := transport.CheckTLS(c.tlsFiles()); err != nil { // the files must be usable
				return fmt.Errorf("invalid MQTT listener %q: %w", l, err)
			}
			break
		}
	}
	return nil
}
