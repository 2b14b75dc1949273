package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/kafkamux/kafkatest"
)

// A Ferry whose Kafka requires SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) over TLS, or mutual TLS: a QoS 1
// PUBLISH is acknowledged and a Kafka application with the same credentials reads the record.
func TestKafkaSASLAndTLS(t *testing.T) {
	pki := kafkatest.NewPKI(t)
	for _, tc := range []struct {
		name   string
		mech   string // "" = no SASL
		mutual bool
		mechFn func(user, pass string) sasl.Mechanism
	}{
		{"PLAIN over TLS", kafkamux.SASLPlain, false, func(u, p string) sasl.Mechanism { return plain.Auth{User: u, Pass: p}.AsMechanism() }},
		{"SCRAM-SHA-256 over TLS", kafkamux.SASLScramSHA256, false, func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha256Mechanism() }},
		{"SCRAM-SHA-512 over TLS", kafkamux.SASLScramSHA512, false, func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha512Mechanism() }},
		{"mutual TLS", "", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kopts := []kfake.Opt{kfake.TLS(pki.ServerTLS(tc.mutual))}
			if tc.mech != "" {
				kopts = append(kopts, kfake.EnableSASL(), kfake.Superuser(tc.mech, "ferry", "pw-"+tc.mech))
			}
			cluster := kafkatest.Cluster(t, kopts...)
			cert, key := "", ""
			if tc.mutual {
				cert, key = pki.ClientCertFile, pki.ClientKeyFile
			}
			conf, err := kafkamux.LoadTLSConfig(pki.CAFile, cert, key, "")
			if err != nil {
				t.Fatal(err)
			}
			mopts := []kafkamux.Opt{kafkamux.Brokers(cluster.ListenAddrs()...), kafkamux.TLS(conf), kafkamux.Logger(quietLog)}
			if tc.mech != "" {
				mopts = append(mopts, kafkamux.SASL(tc.mech, "ferry", "pw-"+tc.mech))
			}
			f := buildFerry(t, mopts, nil)
			t.Cleanup(f.stop)

			pub := dialV5(t, f.addr, &paho.Connect{ClientID: "secure-pub", CleanStart: true})
			if r := pub.pub(t, &paho.Publish{Topic: "secure/dev/1", QoS: 1, Payload: []byte("over " + tc.name)}); r.ReasonCode != 0 {
				t.Fatalf("PUBACK reason %#x", r.ReasonCode)
			}

			copts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DialTLSConfig(pki.ClientTLS(t, tc.mutual)),
				kgo.ConsumeTopics(f.mux.MessagesTopic()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
			if tc.mech != "" {
				copts = append(copts, kgo.SASL(tc.mechFn("ferry", "pw-"+tc.mech)))
			}
			readOne(t, copts, "secure/dev/1", "over "+tc.name)

			if tc.mech != "" { // the reader's SASL is required, not decorative
				bad := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DialTLSConfig(pki.ClientTLS(t, false))}
				cl, err := kgo.NewClient(bad...)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := cl.Ping(ctx); err == nil {
					t.Error("a client without SASL reached the cluster")
				}
				cancel()
				cl.Close()
			}
		})
	}
}

// readOne reads the messages topic from its start with a plain Kafka client until it finds key = topic.
func readOne(t *testing.T, opts []kgo.Opt, topic, payload string) {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		var found *kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == topic {
				found = r
			}
		})
		if found != nil {
			if string(found.Value) != payload {
				t.Fatalf("record %s: value %q, want %q", topic, found.Value, payload)
			}
			return
		}
	}
	t.Fatalf("no record %s in Kafka within 10s", topic)
}
