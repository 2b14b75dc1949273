package kafkamux_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/kafkamux/kafkatest"
)

// roundTrip produces one message through m and reads it back through m's own reader.
func roundTrip(t *testing.T, m *kafkamux.Mux) {
	t.Helper()
	got := make(chan *kafkamux.Message, 1)
	if err := m.Follow(m.MessagesTopic(), func(_ int32, _ int64, msg *kafkamux.Message) {
		select {
		case got <- msg:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	msg := &kafkamux.Message{Topic: "secure/1", Payload: []byte("hello"), QoS: 1}
	m.Produce(context.Background(), msg.Record(m.MessagesTopic()), func(_ *kgo.Record, err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no produce ack within 15s")
	}
	select {
	case r := <-got:
		if r.Topic != "secure/1" || string(r.Payload) != "hello" {
			t.Fatalf("read %s %q", r.Topic, r.Payload)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("record not read back within 15s")
	}
	if n := m.Connections(); n > 3 {
		t.Fatalf("%d Kafka connections, budget is 3", n)
	}
}

func newSecureMux(t *testing.T, c *kfake.Cluster, opts ...kafkamux.Opt) (*kafkamux.Mux, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := []kafkamux.Opt{kafkamux.Brokers(c.ListenAddrs()...), kafkamux.Partitions(2), kafkamux.DialTimeout(3 * time.Second)}
	m, err := kafkamux.New(ctx, append(base, opts...)...)
	if err == nil {
		t.Cleanup(m.Close)
	}
	return m, err
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{kafkamux.SASLPlain, kafkamux.SASLScramSHA256, kafkamux.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := kafkatest.Cluster(t, kfake.EnableSASL(), kfake.Superuser(mech, "ferry", "s3cret"))
			m, err := newSecureMux(t, c, kafkamux.SASL(strings.ToLower(mech), "ferry", "s3cret"))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			roundTrip(t, m)

			// A wrong password, or no SASL at all, fails New quickly with an error saying why.
			for name, o := range map[string]kafkamux.Opt{
				"wrong password": kafkamux.SASL(mech, "ferry", "wrong"),
				"wrong user":     kafkamux.SASL(mech, "nobody", "s3cret"),
			} {
				start := time.Now()
				_, err := newSecureMux(t, c, o)
				took := time.Since(start)
				if err == nil {
					t.Fatalf("%s: New succeeded", name)
				}
				t.Logf("%s: after %v: %v", name, took.Round(time.Millisecond), err)
				if !strings.Contains(err.Error(), "SASL "+mech+" authentication as user") {
					t.Errorf("%s: error %q does not say SASL authentication failed", name, err)
				}
				if strings.Contains(err.Error(), "no answer within") {
					t.Errorf("%s: New waited out its dial timeout instead of failing on the broker's refusal", name)
				}
			}
		})
	}
}

func TestTLS(t *testing.T) {
	pki := kafkatest.NewPKI(t)
	t.Run("server certificate", func(t *testing.T) {
		c := kafkatest.Cluster(t, kfake.TLS(pki.ServerTLS(false)))
		conf, err := kafkamux.LoadTLSConfig(pki.CAFile, "", "", "")
		if err != nil {
			t.Fatal(err)
		}
		m, err := newSecureMux(t, c, kafkamux.TLS(conf))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		roundTrip(t, m)

		// A name the certificate carries, other than the address dialed.
		conf, _ = kafkamux.LoadTLSConfig(pki.CAFile, "", "", "kafka.test")
		if _, err := newSecureMux(t, c, kafkamux.TLS(conf)); err != nil {
			t.Fatalf("server name kafka.test: %v", err)
		}
		// A name it does not carry, and a CA that did not sign it: refused, promptly.
		conf, _ = kafkamux.LoadTLSConfig(pki.CAFile, "", "", "other.test")
		expectFail(t, "wrong server name", "certificate", func() error { _, err := newSecureMux(t, c, kafkamux.TLS(conf)); return err })
		other := kafkatest.NewPKI(t)
		conf, _ = kafkamux.LoadTLSConfig(other.CAFile, "", "", "")
		expectFail(t, "unknown CA", "certificate", func() error { _, err := newSecureMux(t, c, kafkamux.TLS(conf)); return err })
	})
	t.Run("mutual", func(t *testing.T) {
		c := kafkatest.Cluster(t, kfake.TLS(pki.ServerTLS(true)), kfake.EnableSASL(),
			kfake.Superuser(kafkamux.SASLScramSHA512, "ferry", "s3cret"))
		conf, err := kafkamux.LoadTLSConfig(pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile, "")
		if err != nil {
			t.Fatal(err)
		}
		m, err := newSecureMux(t, c, kafkamux.TLS(conf), kafkamux.SASL("scram-sha-512", "ferry", "s3cret"))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		roundTrip(t, m)

		conf, _ = kafkamux.LoadTLSConfig(pki.CAFile, "", "", "")
		expectFail(t, "no client certificate", "cannot reach Kafka", func() error {
			_, err := newSecureMux(t, c, kafkamux.TLS(conf), kafkamux.SASL("scram-sha-512", "ferry", "s3cret"))
			return err
		})
	})
}

func expectFail(t *testing.T, name, want string, fn func() error) {
	t.Helper()
	start := time.Now()
	err := fn()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("%s: New succeeded", name)
	}
	t.Logf("%s: after %v: %v", name, took.Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q does not mention %q", name, err, want)
	}
	if strings.Contains(err.Error(), "no answer within") {
		t.Errorf("%s: New waited out its dial timeout instead of failing on the TLS error", name)
	}
}

func TestLoadTLSConfigErrors(t *testing.T) {
	pki := kafkatest.NewPKI(t)
	for _, tc := range []struct {
		ca, cert, key, want string
	}{
		{"/no/such/ca.pem", "", "", "cannot read Kafka TLS CA file"},
		{pki.ClientKeyFile, "", "", "no PEM certificate"},
		{pki.CAFile, pki.ClientCertFile, "", "a certificate and its key go together"},
		{pki.CAFile, pki.ClientCertFile, pki.CAFile, "cannot load Kafka TLS client certificate"},
	} {
		if _, err := kafkamux.LoadTLSConfig(tc.ca, tc.cert, tc.key, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTLSConfig(%q, %q, %q): %v, want %q", tc.ca, tc.cert, tc.key, err, tc.want)
		}
	}
}

func TestSecurityNeedsBrokers(t *testing.T) {
	for _, tc := range []struct {
		opt  kafkamux.Opt
		want string
	}{
		{kafkamux.SASL("PLAIN", "u", "p"), "SASL needs external brokers"},
		{kafkamux.TLS(&tls.Config{}), "TLS needs external brokers"},
	} {
		_, err := kafkamux.New(context.Background(), kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	for _, tc := range []struct {
		opt  kafkamux.Opt
		want string
	}{
		{kafkamux.SASL("GSSAPI", "u", "p"), `invalid SASL mechanism "GSSAPI"`},
		{kafkamux.SASL("plain", "", "p"), "empty user"},
		{kafkamux.SASL("scram-sha-256", "u", ""), "empty password"},
	} {
		_, err := kafkamux.New(context.Background(), kafkamux.Brokers("127.0.0.1:1"), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
