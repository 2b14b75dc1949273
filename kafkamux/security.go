package kafkamux

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanisms accepted by [SASL].
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

type saslCfg struct {
	mechanism string // one of the SASL* constants, upper case
	user      string
	pass      string
}

// SASL authenticates every connection to the brokers with mechanism ("PLAIN",
// "SCRAM-SHA-256" or "SCRAM-SHA-512", case-insensitive), user and password.
// SASL runs inside each of the (at most three per broker) connections: it
// adds none. Use PLAIN only over TLS: it sends the password as it is. Needs
// [Brokers]: the embedded Kafka has no users. Default: no SASL.
func SASL(mechanism, user, password string) Opt {
	return opt(func(c *cfg) {
		c.sasl = &saslCfg{mechanism: strings.ToUpper(mechanism), user: user, pass: password}
	})
}

// TLS dials the brokers with TLS using conf, cloned per connection (a nil
// conf means TLS with the system roots). An empty ServerName is set to the
// host of the broker dialed. Needs [Brokers]. Default: plaintext. See
// [LoadTLSConfig] for a conf built from PEM files.
func TLS(conf *tls.Config) Opt {
	return opt(func(c *cfg) {
		if conf == nil {
			conf = &tls.Config{}
		}
		c.tls = conf
	})
}

// LoadTLSConfig builds the TLS configuration of Kafka connections from PEM
// files: caFile ("" = the system roots) verifies the brokers' certificates;
// certFile and keyFile, both or neither, are the client certificate that
// brokers requiring mutual TLS (ssl.client.auth=required) check; serverName
// ("" = the host of each broker dialed) is the name the brokers'
// certificates must carry. The files are read once, here.
func LoadTLSConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read Kafka TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cannot load Kafka TLS CA file %s: no PEM certificate in it", caFile)
		}
		conf.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load Kafka TLS client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, errors.New("cannot load Kafka TLS client certificate: a certificate and its key go together")
	}
	return conf, nil
}

func (s *saslCfg) validate() error {
	switch {
	case s.mechanism != SASLPlain && s.mechanism != SASLScramSHA256 && s.mechanism != SASLScramSHA512:
		return fmt.Errorf("invalid SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.mechanism)
	case s.user == "":
		return fmt.Errorf("invalid SASL %s configuration: empty user", s.mechanism)
	case s.pass == "":
		return fmt.Errorf("invalid SASL %s configuration: empty password", s.mechanism)
	}
	return nil
}

func (s *saslCfg) mech() sasl.Mechanism {
	switch s.mechanism {
	case SASLPlain:
		return plain.Auth{User: s.user, Pass: s.pass}.AsMechanism()
	case SASLScramSHA256:
		return scram.Auth{User: s.user, Pass: s.pass}.AsSha256Mechanism()
	case SASLScramSHA512:
		return scram.Auth{User: s.user, Pass: s.pass}.AsSha512Mechanism()
	}
	panic("BUG: unvalidated SASL mechanism " + s.mechanism)
}

// securityOpts returns the franz-go options for TLS and SASL.
func (c *cfg) securityOpts() []kgo.Opt {
	var o []kgo.Opt
	if c.tls != nil {
		o = append(o, kgo.DialTLSConfig(c.tls))
	}
	if c.sasl != nil {
		o = append(o, kgo.SASL(c.sasl.mech()))
	}
	return o
}

// saslWatch notes a failed SASL exchange on the setup client, so that New
// can say why it cannot reach Kafka: brokers that refuse the credentials
// answer SASLAuthenticate with SASL_AUTHENTICATION_FAILED, but some (older
// ones, kfake) just close the connection, which franz-go reports as EOF.
type saslWatch struct{ failed atomic.Bool }

var _ kgo.HookBrokerRead = (*saslWatch)(nil)

// OnBrokerRead runs on a franz-go goroutine.
func (w *saslWatch) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && (key == int16(kmsg.SASLAuthenticate) || key == int16(kmsg.SASLHandshake)) {
		w.failed.Store(true)
	}
}
