package kafkamux

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Opt configures a Mux. Options are applied in order over the defaults; the
// last one of a kind wins.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	brokers      []string
	embeddedAddr string
	advertised   string
	dataDir      string

	topicMessages string
	topicRetained string
	topicSessions string
	partitions    int32
	msgPartitions int32 // messages and routed topics; 0: partitions
	replication   int16
	createTopics  bool

	clientID        string
	logger          *slog.Logger
	linger          time.Duration
	maxBufBytes     int
	maxBufRecords   int
	deliveryTimeout time.Duration
	dialTimeout     time.Duration
	closeTimeout    time.Duration
	partRefresh     time.Duration
	fetchMaxWait    time.Duration
	compression     []kgo.CompressionCodec // nil: by cluster kind, see ProduceCompression
	extra           []kgo.Opt
	recentBytes     int
	healthTimeout   time.Duration

	txnID        string        // "": no transactions (txn.go)
	qos0Acks     int16         // -1 (all, the default): QoS 0 shares the main producer; 0 or 1: a second producer
	txnTimeout   time.Duration // Kafka aborts a transaction left open this long
	sasl         *saslCfg      // nil: no SASL (security.go)
	tls          *tls.Config   // nil: plaintext
	batchBytes   int32         // 0: franz-go's default, 1,000,012
	topicConfigs []topicConfig

	embedded       bool          // no brokers: New starts kfake (set by New)
	retention      time.Duration // embedded messages topic's retention.ms; 0: none (retention.go)
	retentionBytes int64         // embedded messages topic's bytes, all partitions; 0: none
	cleanEvery     time.Duration // embedded retention interval (cleaner.go)
	compactDirty   int64         // embedded compacted topics' growth that calls for a compaction (cleaner.go)
}

// topicConfig is one extra config of the topics New creates; role "" = all three.
type topicConfig struct{ role, key, value string }

func defaults() cfg {
	return cfg{
		embeddedAddr:    "127.0.0.1:9092",
		dataDir:         "./data",
		topicMessages:   "mqtt-messages",
		topicRetained:   "mqtt-retained",
		topicSessions:   "mqtt-sessions",
		partitions:      6,
		replication:     -1,
		createTopics:    true,
		clientID:        "ferry",
		logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		linger:          0,
		maxBufBytes:     1 << 30,
		maxBufRecords:   1 << 20,
		deliveryTimeout: 30 * time.Second,
		dialTimeout:     10 * time.Second,
		closeTimeout:    10 * time.Second,
		partRefresh:     30 * time.Second,
		fetchMaxWait:    500 * time.Millisecond,
		recentBytes:     64 << 20,
		txnTimeout:      10 * time.Second,
		qos0Acks:        -1,
		healthTimeout:   10 * time.Second,
		retention:       DefaultEmbeddedRetention,
		retentionBytes:  DefaultEmbeddedRetentionBytes,
		cleanEvery:      DefaultEmbeddedCleanInterval,
		compactDirty:    compactDirtyBytes,
	}
}

func (c *cfg) validate() error {
	if len(c.brokers) == 0 {
		if _, _, err := net.SplitHostPort(c.embeddedAddr); err != nil {
			return fmt.Errorf("invalid embedded Kafka address %q: %w", c.embeddedAddr, err)
		}
		if c.advertised != "" {
			if h, _, err := net.SplitHostPort(c.advertised); err != nil || h == "" {
				return fmt.Errorf("invalid embedded Kafka advertised address %q: want host:port", c.advertised)
			}
		}
	}
	for _, b := range c.brokers {
		if b == "" {
			return errors.New("invalid Kafka broker address: empty")
		}
	}
	if len(c.brokers) == 0 && c.sasl != nil {
		return errors.New("invalid SASL configuration: the embedded Kafka has no users; SASL needs external brokers")
	}
	if len(c.brokers) == 0 && c.tls != nil {
		return errors.New("invalid TLS configuration: the embedded Kafka listens in plaintext; TLS needs external brokers")
	}
	if c.sasl != nil {
		if err := c.sasl.validate(); err != nil {
			return err
		}
	}
	if err := c.validateRetention(); err != nil {
		return err
	}
	for _, tc := range c.topicConfigs {
		if err := tc.validate(); err != nil {
			return err
		}
	}
	for _, t := range []struct{ role, name string }{
		{"messages", c.topicMessages}, {"retained", c.topicRetained}, {"sessions", c.topicSessions},
	} {
		if err := validTopicName(t.name); err != nil {
			return fmt.Errorf("invalid %s topic %q: %w", t.role, t.name, err)
		}
	}
	if c.topicMessages == c.topicRetained || c.topicMessages == c.topicSessions || c.topicRetained == c.topicSessions {
		return fmt.Errorf("invalid topics: messages %q, retained %q and sessions %q must be distinct",
			c.topicMessages, c.topicRetained, c.topicSessions)
	}
	switch {
	case c.partitions < 1:
		return fmt.Errorf("invalid partition count %d: must be at least 1", c.partitions)
	case c.msgPartitions < 0:
		return fmt.Errorf("invalid messages topic partition count %d: must be 0 (the partition count) or more", c.msgPartitions)
	case c.replication == 0 || c.replication < -1:
		return fmt.Errorf("invalid replication factor %d: must be -1 (broker default) or at least 1", c.replication)
	case c.clientID == "":
		return errors.New("invalid client id: empty")
	case c.logger == nil:
		return errors.New("invalid logger: nil")
	case c.linger < 0:
		return fmt.Errorf("invalid produce linger %v: negative", c.linger)
	case c.maxBufBytes < 1:
		return fmt.Errorf("invalid max buffered bytes %d: must be positive", c.maxBufBytes)
	case c.maxBufRecords < 1:
		return fmt.Errorf("invalid max buffered records %d: must be positive", c.maxBufRecords)
	case c.deliveryTimeout < time.Second:
		return fmt.Errorf("invalid record delivery timeout %v: must be at least 1s", c.deliveryTimeout)
	case c.qos0Acks < -1 || c.qos0Acks > 1:
		return fmt.Errorf("invalid QoS 0 acks %d: want -1 (all), 0 or 1", c.qos0Acks)
	case c.txnID != "" && c.txnTimeout < time.Second:
		return fmt.Errorf("invalid transaction timeout %v: must be at least 1s", c.txnTimeout)
	case c.dialTimeout < 100*time.Millisecond:
		return fmt.Errorf("invalid dial timeout %v: must be at least 100ms", c.dialTimeout)
	case c.closeTimeout < 0:
		return fmt.Errorf("invalid close timeout %v: negative", c.closeTimeout)
	case c.partRefresh < 100*time.Millisecond:
		return fmt.Errorf("invalid partition refresh interval %v: must be at least 100ms", c.partRefresh)
	case c.compression != nil && len(c.compression) == 0:
		return errors.New("invalid produce compression: no codec")
	case c.fetchMaxWait < 10*time.Millisecond:
		return fmt.Errorf("invalid fetch max wait %v: must be at least 10ms", c.fetchMaxWait)
	case c.healthTimeout < 100*time.Millisecond:
		return fmt.Errorf("invalid health timeout %v: must be at least 100ms", c.healthTimeout)
	case c.batchBytes != 0 && (c.batchBytes < 1024 || c.batchBytes > 1<<30):
		return fmt.Errorf("invalid produce batch max bytes %d: must be 1024 to 1073741824", c.batchBytes)
	}
	return nil
}

// validTopicName checks a Kafka topic name the way Kafka does: 1 to 249
// characters of ASCII letters, digits, '.', '_' and '-', and not "." or "..".
func validTopicName(t string) error {
	if t == "" {
		return errors.New("empty")
	}
	if len(t) > 249 {
		return errors.New("longer than 249 characters")
	}
	if t == "." || t == ".." {
		return errors.New("reserved name")
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// Brokers sets the seed brokers (host:port) of a real Kafka cluster. Default:
// none, which starts an embedded, in-process Kafka (kfake) instead.
func Brokers(addrs ...string) Opt {
	return opt(func(c *cfg) { c.brokers = append([]string(nil), addrs...) })
}

// EmbeddedAddr sets the host:port the embedded Kafka listens on and
// advertises, so Kafka tools (kcat, kafka-console-consumer) can reach it.
// The embedded cluster has one broker. Port 0 picks a free port (see
// [Mux.Addr]). Default "127.0.0.1:9092". Ignored with [Brokers].
func EmbeddedAddr(hostport string) Opt {
	return opt(func(c *cfg) { c.embeddedAddr = hostport })
}

// EmbeddedAdvertisedAddr sets the host:port the embedded Kafka tells clients
// to connect to, for when it listens on a wildcard address and Kafka tools
// on other machines must reach it; port 0 means the listening port. Default:
// the listening address, with a wildcard host advertised as 127.0.0.1.
func EmbeddedAdvertisedAddr(hostport string) Opt {
	return opt(func(c *cfg) { c.advertised = hostport })
}

// DataDir sets the directory the embedded Kafka persists its log and state
// to, reloaded on the next start. "" keeps everything in memory (tests).
// Default "./data". Ignored with [Brokers].
func DataDir(dir string) Opt {
	return opt(func(c *cfg) { c.dataDir = dir })
}

// Topics sets the Kafka topic names of the three roles. Defaults
// "mqtt-messages", "mqtt-retained", "mqtt-sessions".
func Topics(messages, retained, sessions string) Opt {
	return opt(func(c *cfg) { c.topicMessages, c.topicRetained, c.topicSessions = messages, retained, sessions })
}

// Partitions sets the partition count of topics that New creates. Existing
// topics are left alone. Default 6.
func Partitions(n int32) Opt {
	return opt(func(c *cfg) { c.partitions = n })
}

// MessagesPartitions sets the partition count of the messages topic and of
// the routed topics that New and the routes create, in place of
// [Partitions] (the retained and sessions topics keep that). Existing topics
// are left alone. 0, the default, means [Partitions].
//
// On one broker, as the embedded Kafka is, one partition serves latency
// best: a produce request then carries every waiting record in one batch,
// which the broker appends with one write, and a fetch answers one
// partition (docs/architecture.md, "The messages topic's partitions").
func MessagesPartitions(n int32) Opt {
	return opt(func(c *cfg) { c.msgPartitions = n })
}

// messagesPartitions is the partition count of the messages topic and the
// routed topics Ferry creates.
func (c *cfg) messagesPartitions() int32 {
	if c.msgPartitions > 0 {
		return c.msgPartitions
	}
	return c.partitions
}

// ReplicationFactor sets the replication factor of topics that New creates.
// Default -1: the broker's default.replication.factor.
func ReplicationFactor(n int16) Opt {
	return opt(func(c *cfg) { c.replication = n })
}

// CreateTopics sets whether New creates missing topics. With false, a
// missing topic makes New fail. Default true.
func CreateTopics(create bool) Opt {
	return opt(func(c *cfg) { c.createTopics = create })
}

// ClientID sets the Kafka client id sent with every request (visible in
// broker logs and quotas). Default "ferry".
func ClientID(id string) Opt {
	return opt(func(c *cfg) { c.clientID = id })
}

// Logger sets the logger. Default: discard everything.
func Logger(l *slog.Logger) Opt {
	return opt(func(c *cfg) { c.logger = l })
}

// ProduceLinger sets how long the producer waits to fill a batch before
// sending it. Default 0: franz-go still batches whatever accumulates while a
// produce request is in flight, which keeps latency low under light load and
// batches well under heavy load.
func ProduceLinger(d time.Duration) Opt {
	return opt(func(c *cfg) { c.linger = d })
}

// MaxBufferedBytes bounds the bytes (keys, values and headers) of records
// buffered in the producer and not yet acknowledged; beyond it [Mux.Produce]
// fails the record at once with kgo.ErrMaxBuffered. It is a safety net: the
// budget that applies is offload's per-loop one, whose total must fit in it
// (8 MiB × loops by default). Default 1 GiB.
func MaxBufferedBytes(n int) Opt {
	return opt(func(c *cfg) { c.maxBufBytes = n })
}

// MaxBufferedRecords bounds the number of records buffered in the producer
// and not yet acknowledged, like [MaxBufferedBytes]. Default 1,048,576.
func MaxBufferedRecords(n int) Opt {
	return opt(func(c *cfg) { c.maxBufRecords = n })
}

// RecordDeliveryTimeout bounds how long a produced record may wait for
// Kafka's acknowledgement, retries included, before its callback gets an
// error. Default 30s, minimum 1s.
func RecordDeliveryTimeout(d time.Duration) Opt {
	return opt(func(c *cfg) { c.deliveryTimeout = d })
}

// DialTimeout bounds both a single TCP dial to a broker and the first
// contact New makes with the cluster: an unreachable cluster fails New after
// about this long. Default 10s.
func DialTimeout(d time.Duration) Opt {
	return opt(func(c *cfg) { c.dialTimeout = d })
}

// CloseTimeout bounds how long Close waits for buffered records to be
// acknowledged before failing them. Default 10s.
func CloseTimeout(d time.Duration) Opt {
	return opt(func(c *cfg) { c.closeTimeout = d })
}

// PartitionRefresh sets how often followed topics are checked for new
// partitions (which are then read from their start). Default 30s.
func PartitionRefresh(d time.Duration) Opt {
	return opt(func(c *cfg) { c.partRefresh = d })
}

// FetchMaxWait sets how long the broker may hold a fetch open waiting for new
// records. It does not add latency (a fetch returns as soon as a record
// arrives) but bounds how fast newly followed partitions start being read.
// Default 500ms.
func FetchMaxWait(d time.Duration) Opt {
	return opt(func(c *cfg) { c.fetchMaxWait = d })
}

// ProduceCompression sets the codecs produced batches may use, in order of
// preference (franz-go falls back along the list for old brokers). Default:
// none with the embedded Kafka (loopback: compressing only costs CPU), and
// snappy, then none, with real brokers.
func ProduceCompression(codecs ...kgo.CompressionCodec) Opt {
	return opt(func(c *cfg) { c.compression = append([]kgo.CompressionCodec(nil), codecs...) })
}

// ProduceBatchMaxBytes bounds the bytes of one record batch (one partition's
// records in a produce request) before compression. A single record larger
// than this fails with kerr.MessageTooLarge, so keep it above the largest
// MQTT packet accepted plus its headers; keep it at or below the brokers'
// message.max.bytes (and the topics' max.message.bytes). Larger batches
// compress better and cost fewer requests under load. Default 0: franz-go's
// 1,000,012 bytes, which mirrors Kafka's default; 1024 to 1 GiB otherwise.
func ProduceBatchMaxBytes(n int32) Opt {
	return opt(func(c *cfg) { c.batchBytes = n })
}

// TopicConfig adds a topic config (such as retention.ms=86400000 or
// min.insync.replicas=2) to the topics New creates: role "messages",
// "retained" or "sessions", or "" for all three. Applied only when New
// creates a topic; existing topics are left alone (use kafka-configs).
// cleanup.policy is set by the role and cannot be given. Repeatable; for
// one key and role the last value wins, a role's own value wins over "".
func TopicConfig(role, key, value string) Opt {
	return opt(func(c *cfg) { c.topicConfigs = append(c.topicConfigs, topicConfig{role, key, value}) })
}

func (tc topicConfig) validate() error {
	switch {
	case tc.role != "" && tc.role != "messages" && tc.role != "retained" && tc.role != "sessions":
		return fmt.Errorf("invalid topic config %s=%s: role %q, want messages, retained or sessions", tc.key, tc.value, tc.role)
	case tc.key == "":
		return fmt.Errorf("invalid topic config =%s: empty key", tc.value)
	case tc.key == "cleanup.policy":
		return errors.New("invalid topic config cleanup.policy: Ferry sets it by role (messages delete, retained and sessions compact)")
	}
	return nil
}

// ExtraKgoOpts appends franz-go options to the client's, after Ferry's own
// (so they win): SASL, TLS, test hooks. Options that change the consuming
// mode (groups, regex) break Follow.
func ExtraKgoOpts(o ...kgo.Opt) Opt {
	return opt(func(c *cfg) { c.extra = append(c.extra, o...) })
}

// Transactions makes every record the Mux produces part of a Kafka transaction with this transactional id
// (see txn.go): records handed over together with [Mux.ProduceTogether] commit or abort together, which is
// what stores a QoS 2 message and its session state exactly once. The id must be unique per instance and the
// same across its restarts. Empty (the default) turns transactions off.
func Transactions(id string) Opt { return opt(func(c *cfg) { c.txnID = id }) }

// TransactionTimeout is how long Kafka lets a transaction stay open before aborting it: the longest a dead
// instance's open transaction can hold back read_committed readers. Default 10 s; it must be within the
// brokers' transaction.max.timeout.ms.
func TransactionTimeout(d time.Duration) Opt { return opt(func(c *cfg) { c.txnTimeout = d }) }

// QoS0Acks sets the acks level of QoS 0 messages' records: -1 (all, the default) writes them with every other
// record on the main idempotent (or transactional) producer; 1 (the partition leader) or 0 (none) writes them
// on a second producer client with that level, outside transactions. That client opens its own connections (a
// produce connection per broker it writes to, and one for metadata): the instance's Kafka connections stay a
// constant of its configuration, but go past the 3-per-broker budget by up to 2, so it is an explicit choice.
func QoS0Acks(n int16) Opt { return opt(func(c *cfg) { c.qos0Acks = n }) }
