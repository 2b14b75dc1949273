package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
)

// kafkaConfig holds the settings of Ferry's Kafka client (security, producer, topic creation). Like every
// setting, each is a flag, a YAML key and a FERRY_<NAME> variable.
type kafkaConfig struct {
	saslMechanism    string
	saslUser         string
	saslPassword     string
	saslPasswordFile string
	tls              bool
	tlsCA            string
	tlsCert          string
	tlsKey           string
	tlsServerName    string
	compression      string
	linger           time.Duration
	batchBytes       int
	qos0Acks         string
	clientID         string
	createTopics     bool
	replication      int
	topicConfig      listFlag

	// Loaded by validate: the password (from the flag or its file) and the TLS configuration.
	password string
	tlsConf  *tls.Config
}

func addKafkaFlags(fs *flag.FlagSet, k *kafkaConfig) {
	fs.StringVar(&k.saslMechanism, "kafka-sasl-mechanism", "", "SASL towards Kafka: plain, scram-sha-256 or scram-sha-512 (empty = none)")
	fs.StringVar(&k.saslUser, "kafka-sasl-user", "", "SASL user")
	fs.StringVar(&k.saslPassword, "kafka-sasl-password", "", "SASL password; prefer FERRY_KAFKA_SASL_PASSWORD or --kafka-sasl-password-file, as command lines show in ps")
	fs.StringVar(&k.saslPasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password (one trailing newline is ignored)")
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to Kafka over TLS")
	fs.StringVar(&k.tlsCA, "kafka-tls-ca", "", "PEM file of the CA that signed the brokers' certificates (empty = system roots)")
	fs.StringVar(&k.tlsCert, "kafka-tls-cert", "", "PEM client certificate for brokers that require mutual TLS (with --kafka-tls-key)")
	fs.StringVar(&k.tlsKey, "kafka-tls-key", "", "PEM key of --kafka-tls-cert")
	fs.StringVar(&k.tlsServerName, "kafka-tls-server-name", "", "name the brokers' certificates must carry (empty = the host dialed)")
	fs.StringVar(&k.compression, "kafka-compression", "auto", "produce compression: auto (none embedded, snappy external), none, gzip, snappy, lz4 or zstd")
	fs.DurationVar(&k.linger, "kafka-linger", 0, "how long the producer waits to fill a batch (0 = send at once; batches still form under load)")
	fs.IntVar(&k.batchBytes, "kafka-batch-bytes", 0, "max bytes of one record batch before compression (0 = 1000012); must exceed the largest record")
	fs.StringVar(&k.qos0Acks, "kafka-qos0-acks", "all", "Kafka acks for QoS 0 records: all (with every other record), 1 (leader) or 0 (none) on a second producer client with up to 2 more connections per broker (docs/operations.md)")
	fs.StringVar(&k.clientID, "kafka-client-id", "ferry", "Kafka client id (broker logs, quotas, ACL audit)")
	fs.BoolVar(&k.createTopics, "kafka-create-topics", true, "create missing topics at start; false = a missing topic is an error")
	fs.IntVar(&k.replication, "kafka-replication-factor", -1, "replication factor of the topics Ferry creates (-1 = the brokers' default)")
	fs.Var(&k.topicConfig, "kafka-topic-config", "config of the topics Ferry creates, [messages:|retained:|sessions:]key=value, repeatable (e.g. retention.ms=86400000)")
}

var codecs = map[string]kgo.CompressionCodec{
	"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
	"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
}

// validate checks the Kafka settings, reads the password file and loads the TLS files. external says whether
// --kafka-brokers names a real cluster. Errors are one line naming the flag.
func (k *kafkaConfig) validate(external bool) error {
	mech := strings.ToUpper(k.saslMechanism)
	switch {
	case mech != "" && mech != kafkamux.SASLPlain && mech != kafkamux.SASLScramSHA256 && mech != kafkamux.SASLScramSHA512:
		return fmt.Errorf("invalid --kafka-sasl-mechanism %s: want plain, scram-sha-256 or scram-sha-512", k.saslMechanism)
	case mech != "" && !external:
		return fmt.Errorf("invalid --kafka-sasl-mechanism %s: needs --kafka-brokers (the embedded Kafka has no users)", k.saslMechanism)
	case mech == "" && (k.saslUser != "" || k.saslPassword != "" || k.saslPasswordFile != ""):
		return fmt.Errorf("invalid --kafka-sasl-user/--kafka-sasl-password: needs --kafka-sasl-mechanism")
	case mech != "" && k.saslUser == "":
		return fmt.Errorf("invalid --kafka-sasl-user: empty, want the SASL user for --kafka-sasl-mechanism %s", k.saslMechanism)
	case k.saslPassword != "" && k.saslPasswordFile != "":
		return fmt.Errorf("invalid --kafka-sasl-password-file %s: --kafka-sasl-password is set too; give one", k.saslPasswordFile)
	}
	k.password = k.saslPassword
	if k.saslPasswordFile != "" {
		b, err := os.ReadFile(k.saslPasswordFile)
		if err != nil {
			return fmt.Errorf("invalid --kafka-sasl-password-file: %w", err)
		}
		k.password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	if mech != "" && k.password == "" {
		return fmt.Errorf("invalid --kafka-sasl-password: empty, want it (or --kafka-sasl-password-file, FERRY_KAFKA_SASL_PASSWORD) for --kafka-sasl-mechanism %s", k.saslMechanism)
	}

	for _, f := range []struct{ name, val string }{
		{"kafka-tls-ca", k.tlsCA}, {"kafka-tls-cert", k.tlsCert}, {"kafka-tls-key", k.tlsKey}, {"kafka-tls-server-name", k.tlsServerName},
	} {
		if f.val != "" && !k.tls {
			return fmt.Errorf("invalid --%s %s: needs --kafka-tls", f.name, f.val)
		}
	}
	switch {
	case k.tls && !external:
		return fmt.Errorf("invalid --kafka-tls: needs --kafka-brokers (the embedded Kafka listens in plaintext)")
	case (k.tlsCert == "") != (k.tlsKey == ""):
		return fmt.Errorf("invalid --kafka-tls-cert/--kafka-tls-key: give both or neither")
	}
	if k.tls {
		conf, err := kafkamux.LoadTLSConfig(k.tlsCA, k.tlsCert, k.tlsKey, k.tlsServerName)
		if err != nil {
			return fmt.Errorf("invalid --kafka-tls-ca/--kafka-tls-cert/--kafka-tls-key: %w", err)
		}
		k.tlsConf = conf
	}

	if _, ok := codecs[k.compression]; !ok && k.compression != "auto" {
		return fmt.Errorf("invalid --kafka-compression %s: want auto, none, gzip, snappy, lz4 or zstd", k.compression)
	}
	switch {
	case k.linger < 0 || k.linger > time.Minute:
		return fmt.Errorf("invalid --kafka-linger %v: want 0 to 1m", k.linger)
	case k.batchBytes != 0 && (k.batchBytes < 1024 || k.batchBytes > 1<<30):
		return fmt.Errorf("invalid --kafka-batch-bytes %d: want 0 (franz-go's 1000012) or 1024 to 1073741824", k.batchBytes)
	case k.qos0Acks != "all" && k.qos0Acks != "1" && k.qos0Acks != "0":
		// One idempotent producer (acks=all, which idempotence and transactions require) writes every record;
		// franz-go sets acks per client, so 1 or 0 for QoS 0 means a second producer client: up to two more
		// connections per broker, past the budget of three (DESIGN §6) — the operator's explicit choice.
		return fmt.Errorf("invalid --kafka-qos0-acks %s: want all, 1 or 0", k.qos0Acks)
	case k.clientID == "":
		return fmt.Errorf("invalid --kafka-client-id: empty")
	case k.replication == 0 || k.replication < -1 || k.replication > 32767:
		return fmt.Errorf("invalid --kafka-replication-factor %d: want -1 (the brokers' default) or 1 to 32767", k.replication)
	case k.replication > 1 && !external:
		return fmt.Errorf("invalid --kafka-replication-factor %d: the embedded Kafka has one broker; needs --kafka-brokers", k.replication)
	}
	for _, tc := range k.topicConfig.vals {
		if _, _, _, err := parseTopicConfig(tc); err != nil {
			return fmt.Errorf("invalid --kafka-topic-config %s: %w", tc, err)
		}
	}
	return nil
}

// parseTopicConfig splits [role:]key=value.
func parseTopicConfig(s string) (role, key, value string, err error) {
	kv := s
	if r, rest, ok := strings.Cut(s, ":"); ok && (r == "messages" || r == "retained" || r == "sessions") {
		role, kv = r, rest
	}
	key, value, ok := strings.Cut(kv, "=")
	switch {
	case !ok || key == "":
		return "", "", "", fmt.Errorf("want [messages:|retained:|sessions:]key=value")
	case key == "cleanup.policy":
		return "", "", "", fmt.Errorf("cleanup.policy is set by Ferry (messages delete, retained and sessions compact)")
	}
	return role, key, value, nil
}

// kafkaOpts turns the validated settings into kafkamux options.
func (k *kafkaConfig) kafkaOpts() []kafkamux.Opt {
	o := []kafkamux.Opt{
		kafkamux.ClientID(k.clientID),
		kafkamux.ProduceLinger(k.linger),
		kafkamux.ProduceBatchMaxBytes(int32(k.batchBytes)),
		kafkamux.CreateTopics(k.createTopics),
		kafkamux.ReplicationFactor(int16(k.replication)),
	}
	if c, ok := codecs[k.compression]; ok {
		o = append(o, kafkamux.ProduceCompression(c))
	}
	switch k.qos0Acks {
	case "1":
		o = append(o, kafkamux.QoS0Acks(1))
	case "0":
		o = append(o, kafkamux.QoS0Acks(0))
	}
	if k.saslMechanism != "" {
		o = append(o, kafkamux.SASL(k.saslMechanism, k.saslUser, k.password))
	}
	if k.tlsConf != nil {
		o = append(o, kafkamux.TLS(k.tlsConf))
	}
	for _, s := range k.topicConfig.vals {
		role, key, value, _ := parseTopicConfig(s) // validated
		o = append(o, kafkamux.TopicConfig(role, key, value))
	}
	return o
}
