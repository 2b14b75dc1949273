package kafkamux

// A Mux's start: the topics it creates or checks, their policies, its options, the embedded broker.

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestEmbeddedPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(dir), Logger(testLogger()), Partitions(2)}
	ctx := context.Background()

	m, err := New(ctx, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	msg := &Message{Topic: "a/b", Payload: []byte("persisted"), QoS: 1, ClientID: "dev1"}
	r := produceSync(t, m, msg.Record(m.MessagesTopic()))
	m.Close()
	m.Close() // idempotent

	m, err = New(ctx, opts...)
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	defer m.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			m.MessagesTopic(): {r.Partition: kgo.NewOffset().At(r.Offset)},
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fs := cl.PollRecords(pctx, 1)
	if err := fs.Err0(); err != nil {
		t.Fatalf("poll after restart: %v", err)
	}
	recs := fs.Records()
	if len(recs) != 1 {
		t.Fatalf("got %d records after restart, want 1", len(recs))
	}
	got, err := MessageFromRecord(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != "a/b" || string(got.Payload) != "persisted" || got.ClientID != "dev1" {
		t.Fatalf("record after restart = %+v", got)
	}
}

func TestTopicsCreatedWithCleanupPolicy(t *testing.T) {
	m := newMux(t, Topics("m1", "r1", "s1"), Partitions(4))
	ctx := context.Background()
	rcs, err := m.Admin().DescribeTopicConfigs(ctx, "m1", "r1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"m1": "delete", "r1": "compact", "s1": "compact"}
	for topic, policy := range want {
		rc, err := rcs.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				got = *c.Value
			}
		}
		if got != policy {
			t.Errorf("%s cleanup.policy = %q, want %q", topic, got, policy)
		}
	}
	td, err := m.Admin().ListTopics(ctx, "m1", "r1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range td {
		if len(d.Partitions) != 4 {
			t.Errorf("%s has %d partitions, want 4", d.Topic, len(d.Partitions))
		}
	}
}

func TestExistingTopicsAndPolicyChecks(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "mqtt-sessions", "other-sessions"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	ctx := context.Background()

	t.Run("sessions topic not compacted", func(t *testing.T) {
		m, err := New(ctx, Brokers(addr), Logger(testLogger()))
		if err == nil {
			m.Close()
			t.Fatal("New succeeded with a non-compacted sessions topic")
		}
		if !strings.Contains(err.Error(), `sessions topic "mqtt-sessions" has cleanup.policy=delete: it must be compacted`) {
			t.Fatalf("unclear error: %v", err)
		}
	})

	t.Run("creation disabled", func(t *testing.T) {
		m, err := New(ctx, Brokers(addr), Logger(testLogger()), CreateTopics(false), Topics("x-m", "x-r", "x-s"))
		if err == nil {
			m.Close()
			t.Fatal("New succeeded with missing topics and creation disabled")
		}
		if !strings.Contains(err.Error(), `messages topic "x-m" does not exist and topic creation is disabled`) {
			t.Fatalf("unclear error: %v", err)
		}
	})

	t.Run("compacted sessions topic accepted", func(t *testing.T) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
		if err != nil {
			t.Fatal(err)
		}
		adm := kadm.NewClient(cl)
		defer adm.Close()
		_, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
			{Op: kadm.SetConfig, Name: "cleanup.policy", Value: kadm.StringPtr("compact")},
		}, "other-sessions")
		if err != nil {
			t.Fatal(err)
		}
		m, err := New(ctx, Brokers(addr), Logger(testLogger()), Topics("o-m", "o-r", "other-sessions"))
		if err != nil {
			t.Fatalf("New with an existing compacted sessions topic: %v", err)
		}
		m.Close()
	})
}

func TestUnreachableBrokersFailFast(t *testing.T) {
	ctx := context.Background()
	// A listener that accepts connections and never answers, like a
	// firewall that drops packets after the handshake or a wedged broker.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	// Each failure names its cause: a dial error comes back at once (franz-go
	// does not retry it inside New), and a broker that never answers is cut
	// off by New's own wait of one DialTimeout, not by franz-go's request
	// overhead. The cause in the error is the mechanism; no clock is read.
	for _, tc := range []struct {
		name, addr, cause string
	}{
		{"refused", "127.0.0.1:1", "connection refused"},
		{"unresolvable", "no-such-host.invalid:9092", "lookup no-such-host.invalid"},
		{"silent", silent.Addr().String(), "no answer within 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			m, err := New(ctx, Brokers(tc.addr), DialTimeout(time.Second), Logger(testLogger()))
			took := time.Since(start)
			if err == nil {
				m.Close()
				t.Fatal("New succeeded")
			}
			if want := "cannot reach Kafka at " + tc.addr + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %q does not start with %q", err, want)
			}
			t.Logf("after %v: %v", took, err)
			if !strings.Contains(err.Error(), tc.cause) {
				t.Fatalf("error %q does not name the cause %q", err, tc.cause)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  Opt
		want string
	}{
		{Partitions(0), "invalid partition count 0"},
		{Topics("a", "a", "b"), "must be distinct"},
		{Topics("a b", "c", "d"), `invalid messages topic "a b"`},
		{EmbeddedAddr("nohost"), `invalid embedded Kafka address "nohost"`},
		{ReplicationFactor(0), "invalid replication factor 0"},
		{RecordDeliveryTimeout(time.Millisecond), "invalid record delivery timeout"},
		{ProduceBatchMaxBytes(100), "invalid produce batch max bytes 100"},
		{TopicConfig("", "cleanup.policy", "delete"), "Ferry sets it by role"},
		{TopicConfig("other", "retention.ms", "1"), `role "other"`},
		{TopicConfig("", "", "1"), "empty key"},
	} {
		_, err := New(context.Background(), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want it to contain %q", err, tc.want)
		}
	}
}

func TestEmbeddedAddresses(t *testing.T) {
	t.Run("wildcard advertises loopback", func(t *testing.T) {
		m := newMux(t, EmbeddedAddr("0.0.0.0:0"))
		if !strings.HasPrefix(m.Addr(), "127.0.0.1:") {
			t.Fatalf("Addr() = %q, want 127.0.0.1:port", m.Addr())
		}
	})
	t.Run("advertised", func(t *testing.T) {
		m := newMux(t, EmbeddedAddr("0.0.0.0:0"), EmbeddedAdvertisedAddr("localhost:0"))
		if !strings.HasPrefix(m.Addr(), "localhost:") {
			t.Fatalf("Addr() = %q, want localhost:port", m.Addr())
		}
		// A Kafka tool bootstrapping from the advertised address works.
		cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := kadm.NewClient(cl).ListTopics(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, err = New(context.Background(), EmbeddedAddr(ln.Addr().String()), DataDir(""), Logger(testLogger()))
		if err == nil || !strings.Contains(err.Error(), "cannot start embedded Kafka on "+ln.Addr().String()) ||
			!strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("err = %v", err)
		}
	})
}
