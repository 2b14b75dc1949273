package kafkamux

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func produceSync(t testing.TB, m *Mux, r *kgo.Record) *kgo.Record {
	t.Helper()
	errc := make(chan error, 1)
	m.Produce(context.Background(), r, func(_ *kgo.Record, err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("produce: no ack after 15s")
	}
	return r
}

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

// TestFollowIndependentProducer: records written by a plain franz-go
// producer with key = MQTT topic reach the handler, all of them, in per-key
// order; records with invalid keys are skipped and counted.
func TestFollowIndependentProducer(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()

	var mu sync.Mutex
	got := map[string][]int{}
	var n atomic.Int64
	lastOff := map[int32]int64{}
	if err := m.Follow(topic, func(p int32, off int64, msg *Message) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := lastOff[p]; ok && off <= prev {
			t.Errorf("partition %d: offset %d after %d", p, off, prev)
		}
		lastOff[p] = off
		var i int
		fmt.Sscanf(string(msg.Payload), "%d", &i)
		got[msg.Topic] = append(got[msg.Topic], i)
		if msg.QoS != KafkaBornQoS {
			t.Errorf("Kafka-born QoS = %d", msg.QoS)
		}
		n.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Follow(topic, func(int32, int64, *Message) {}); err == nil {
		t.Fatal("second Follow of the same topic succeeded")
	}
	if err := m.Follow("no-such-topic", func(int32, int64, *Message) {}); err == nil {
		t.Fatal("Follow of a missing topic succeeded")
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const keys, per = 20, 50
	ctx := context.Background()
	for i := 0; i < per; i++ {
		for k := 0; k < keys; k++ {
			prod.Produce(ctx, &kgo.Record{
				Key: fmt.Appendf(nil, "dev/%d/temp", k), Value: fmt.Appendf(nil, "%d", i),
				Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("x")}},
			}, nil)
		}
	}
	for _, bad := range [][]byte{nil, {}, []byte("a/+/b"), []byte("a/#"), []byte("a\x00b"), {0xff, 0xfe}} {
		prod.Produce(ctx, &kgo.Record{Key: bad, Value: []byte("bad")}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "all records", func() bool { return n.Load() == keys*per && m.Skipped() == 6 })
	mu.Lock()
	defer mu.Unlock()
	for k := 0; k < keys; k++ {
		seq := got[fmt.Sprintf("dev/%d/temp", k)]
		if len(seq) != per {
			t.Fatalf("key %d: %d records, want %d", k, len(seq), per)
		}
		for i, v := range seq {
			if v != i {
				t.Fatalf("key %d: record %d is %d: out of order", k, i, v)
			}
		}
	}
}

// TestFollowStartsAtEnd: records produced before Follow are not delivered,
// records produced after it returns all are.
func TestFollowStartsAtEnd(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()
	produceSync(t, m, (&Message{Topic: "old", Payload: []byte("x")}).Record(topic))
	var mu sync.Mutex
	var topics []string
	if err := m.Follow(topic, func(_ int32, _ int64, msg *Message) {
		mu.Lock()
		topics = append(topics, msg.Topic)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	produceSync(t, m, (&Message{Topic: "new", Payload: []byte("y")}).Record(topic))
	waitFor(t, 10*time.Second, "new record", func() bool { mu.Lock(); defer mu.Unlock(); return len(topics) > 0 })
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(topics) != 1 || topics[0] != "new" {
		t.Fatalf("delivered %v, want [new]", topics)
	}
}

// TestFollowNewPartitions: partitions added to a followed topic are read
// from their start.
func TestFollowNewPartitions(t *testing.T) {
	m := newMux(t, PartitionRefresh(100*time.Millisecond), Partitions(1))
	topic := m.MessagesTopic()
	var parts sync.Map
	if err := m.Follow(topic, func(p int32, _ int64, _ *Message) { parts.Store(p, true) }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := m.Admin().CreatePartitions(ctx, 2, topic); err != nil {
		t.Fatal(err)
	}
	// Produce to the new partitions right away, before the refresh can
	// have seen them: reading from their start must still deliver.
	prod, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for p := int32(0); p < 3; p++ {
		r := &kgo.Record{Topic: topic, Partition: p, Key: []byte("t"), Value: []byte("v")}
		if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "records from all 3 partitions", func() bool {
		n := 0
		parts.Range(func(any, any) bool { n++; return true })
		return n == 3
	})
}

// TestConnectionsConstant: 1,000 concurrent producers share the instance's
// fixed set of connections.
func TestConnectionsConstant(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()
	if err := m.Follow(topic, func(int32, int64, *Message) {}); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 1000, 20
	var wg sync.WaitGroup
	var acked, failed atomic.Int64
	var maxConns atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if c := int64(m.Connections()); c > maxConns.Load() {
				maxConns.Store(c)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				msg := &Message{Topic: fmt.Sprintf("dev/%d", g), Payload: []byte("payload"), QoS: 1}
				m.Produce(context.Background(), msg.Record(topic), func(_ *kgo.Record, err error) {
					if err != nil {
						failed.Add(1)
					} else {
						acked.Add(1)
					}
				})
			}
		}()
	}
	wg.Wait()
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-sampled
	if failed.Load() != 0 || acked.Load() != goroutines*each {
		t.Fatalf("acked %d failed %d, want %d acked", acked.Load(), failed.Load(), goroutines*each)
	}
	t.Logf("connections: max %d during the run, now %d %v", maxConns.Load(), m.Connections(), m.ConnectionsByBroker())
	if maxConns.Load() > 3 {
		t.Fatalf("up to %d connections to a one-broker cluster, budget is 3", maxConns.Load())
	}
}

// TestSeedRotationStaysInBudget: franz-go sends every other "any broker"
// request (metadata, with one broker) to the seed address; the tracker
// parks those connections so the budget holds while requests still work.
func TestSeedRotationStaysInBudget(t *testing.T) {
	m := newMux(t)
	topic := m.MessagesTopic()
	var got atomic.Int64
	if err := m.Follow(topic, func(int32, int64, *Message) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var maxConns atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if c := int64(m.Connections()); c > maxConns.Load() {
				maxConns.Store(c)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		m.Client().ForceMetadataRefresh()
		if _, err := m.Admin().ListEndOffsets(ctx, topic); err != nil {
			t.Fatalf("admin request %d: %v", i, err)
		}
		produceSync(t, m, (&Message{Topic: "x", Payload: []byte("y")}).Record(topic))
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "records", func() bool { return got.Load() == 10 })
	close(stop)
	<-sampled
	t.Logf("max connections %d, seed connections parked %d", maxConns.Load(), m.conns.parked.Load())
	if maxConns.Load() > 3 {
		t.Fatalf("%d connections, budget 3", maxConns.Load())
	}
}

// TestEndToEndLatency measures produce-ack and produce-to-handler latency
// through the embedded cluster (logged; asserted loosely).
func TestEndToEndLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	m := newMux(t)
	topic := m.MessagesTopic()
	const n = 500
	var sent [n]time.Time
	e2e := make([]time.Duration, 0, n)
	var mu sync.Mutex
	done := make(chan struct{})
	if err := m.Follow(topic, func(_ int32, _ int64, msg *Message) {
		var i int
		fmt.Sscanf(msg.Topic, "lat/%d", &i)
		mu.Lock()
		e2e = append(e2e, time.Since(sent[i]))
		if len(e2e) == n {
			close(done)
		}
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	acks := make([]time.Duration, n)
	for i := 0; i < n; i++ {
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		start := time.Now()
		produceSync(t, m, (&Message{Topic: fmt.Sprintf("lat/%d", i), Payload: []byte("p"), QoS: 1}).Record(topic))
		acks[i] = time.Since(start)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("not all records delivered")
	}
	pct := func(d []time.Duration, p int) time.Duration {
		s := append([]time.Duration(nil), d...)
		slices.Sort(s)
		return s[len(s)*p/100]
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("sequential QoS 1 produce: ack p50 %v p99 %v; produce-to-handler p50 %v p99 %v",
		pct(acks, 50), pct(acks, 99), pct(e2e, 50), pct(e2e, 99))
	if p := pct(e2e, 50); p > 100*time.Millisecond {
		t.Fatalf("produce-to-handler p50 %v: the reader is waiting out FetchMaxWait", p)
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

// TestConnectionsOverTime: with idle reaping and metadata refreshes sped up
// (1s), connections come and go but never exceed the budget.
func TestConnectionsOverTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	m := newMux(t, ExtraKgoOpts(kgo.ConnIdleTimeout(time.Second), kgo.MetadataMaxAge(time.Second)))
	topic := m.MessagesTopic()
	var got atomic.Int64
	if err := m.Follow(topic, func(int32, int64, *Message) { got.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var maxConns int
	deadline := time.Now().Add(4 * time.Second)
	sent := int64(0)
	for i := 0; time.Now().Before(deadline); i++ {
		if i%200 == 0 { // a publish every ~1s: the produce connection idles out in between
			produceSync(t, m, (&Message{Topic: "x", Payload: []byte("y")}).Record(topic))
			sent++
		}
		maxConns = max(maxConns, m.Connections())
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 5*time.Second, "records", func() bool { return got.Load() == sent })
	t.Logf("max connections %d, parked seed connections %d", maxConns, m.conns.parked.Load())
	if maxConns > 3 {
		t.Fatalf("%d connections, budget 3", maxConns)
	}
}

// With a QoS 0 acks level, QoS 0 records go to Kafka at that level on their own client, the others stay
// acks=all; both are stored.
func TestQoS0Acks(t *testing.T) {
	m := newMux(t, QoS0Acks(1))
	var mu sync.Mutex
	acks := map[int16]int{}
	c := m.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		acks[req.(*kmsg.ProduceRequest).Acks]++
		mu.Unlock()
		return nil, nil, false
	})
	errc := make(chan error, 2)
	m.ProduceQoS0(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("q0"), Value: []byte("fast")},
		func(_ *kgo.Record, err error) { errc <- err })
	m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("q1"), Value: []byte("safe")},
		func(_ *kgo.Record, err error) { errc <- err })
	for i := 0; i < 2; i++ {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if acks[1] == 0 || acks[-1] == 0 {
		t.Fatalf("produce requests by acks level: %v; want some with acks=1 (QoS 0) and some with acks=-1", acks)
	}
}
