package kafkamux

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// gatePartitioner holds up the partitioning of records whose value is "held" until open is closed (or
// wait passes): it keeps franz-go's metadata goroutine inside storePartitionsUpdate, after it handed the
// topic's earlier records to their partitions and before it stored those partitions.
type gatePartitioner struct {
	open chan struct{}
	wait time.Duration
}

func (g gatePartitioner) ForTopic(string) kgo.TopicPartitioner { return g }
func (gatePartitioner) RequiresConsistency(*kgo.Record) bool   { return true }
func (g gatePartitioner) Partition(r *kgo.Record, n int) int {
	if string(r.Value) == "held" {
		select {
		case <-g.open:
		case <-time.After(g.wait):
		}
	}
	return 0
}

// The first record of a transaction to a topic the client never produced to is committed, not aborted.
// franz-go v1.22.2 hands a new topic's buffered records to their partitions before it stores those
// partitions in the producer's metadata (kgo storePartitionsUpdate); EndTransaction(TryCommit) running in
// between finds no partition of the transaction, sends EndTxn with abort and returns nil (txn.go). Under load
// that lost a QoS 1 message now and then in the share-group tests: its PUBACK had gone out, and
// read_committed readers never saw it. Here the window is held open on purpose: the metadata response for
// the new topic waits until a second record (not the pump's) is buffered behind the pump's one, and the
// partitioner holds that second record up. The pump must neither lose its record nor ask for an abort.
//
//   - hold 100ms: the pump waits until the producer's metadata has the partition (producerSees), then commits.
//   - hold 5s: producerSees gives up after 2s; franz-go aborts silently, the pump sees its log line
//     (kgoSilentAbort) and writes the record again in the next transaction.
func TestTransactionsFirstRecordToNewTopic(t *testing.T) {
	for _, tc := range []struct {
		name         string
		hold         time.Duration
		silentAborts uint64
	}{{"waits-for-metadata", 100 * time.Millisecond, 0}, {"silent-abort-retried", 5 * time.Second, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			gate := gatePartitioner{open: make(chan struct{}), wait: tc.hold}
			m := newMux(t, Transactions("ferry-test-first"), ExtraKgoOpts(kgo.RecordPartitioner(gate)))
			const topic = "first-records"
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			created, err := m.Admin().CreateTopics(ctx, 1, 1, nil, topic)
			if err == nil {
				err = created.Error()
			}
			if err != nil {
				t.Fatal(err)
			}
			c := m.Cluster()
			metaOpen := make(chan struct{})
			var aborts atomic.Int32
			c.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				for _, rt := range req.(*kmsg.MetadataRequest).Topics {
					if rt.Topic != nil && *rt.Topic == topic {
						c.SleepControl(func() { <-metaOpen })
					}
				}
				return nil, nil, false
			})
			c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if !req.(*kmsg.EndTxnRequest).Commit {
					aborts.Add(1)
				}
				return nil, nil, false
			})
			done := make(chan error, 1)
			m.ProduceTogether([]*kgo.Record{{Topic: topic, Value: []byte("pumped")}},
				func(_ *kgo.Record, err error) { done <- err })
			waitFor(t, 10*time.Second, "the pump's record buffered", func() bool { return m.cl.BufferedProduceRecords() == 1 })
			m.cl.TryProduce(ctx, &kgo.Record{Topic: topic, Value: []byte("held")}, nil) // joins the open transaction
			close(metaOpen)
			if err := <-done; err != nil {
				t.Fatalf("the pump's record failed: %v", err)
			}
			close(gate.open)
			seen := readCommitted(t, m.Addr(), topic, 1)
			if seen["=pumped"] != 1 {
				t.Fatalf("the pump's record committed %d times (read %v), want once", seen["=pumped"], seen)
			}
			if got := m.txnSilentAborts.Load(); got != tc.silentAborts {
				t.Errorf("silent aborts seen: %d, want %d", got, tc.silentAborts)
			}
			if n := aborts.Load(); tc.silentAborts == 0 && n != 0 {
				t.Errorf("%d transactions ended with an abort; the pump asked for none", n)
			}
		})
	}
}

// franz-go still writes the line kgoSilentAbort matches when EndTransaction(TryCommit) aborts instead:
// here a transaction whose only record failed in the client (too large). Should an upgrade change the line,
// this fails, rather than the check in txnPump.end going blind.
func TestKgoSilentAbortLine(t *testing.T) {
	m := newMux(t)
	var silent atomic.Uint64
	var lines strings.Builder
	var mu sync.Mutex
	logger := kgoLogger{l: slog.New(slog.NewTextHandler(&lockedWriter{w: &lines, mu: &mu}, nil)), silentAborts: &silent}
	cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.WithLogger(logger), kgo.TransactionalID("ferry-test-silent"),
		kgo.ProducerBatchMaxBytes(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A first transaction that commits: the client learns the brokers' versions (KIP-890 part 2).
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: m.MessagesTopic(), Value: []byte("ok")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if silent.Load() != 0 {
		t.Fatalf("a committed transaction counted as a silent abort")
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: m.MessagesTopic(), Value: make([]byte, 5000)}).FirstErr(); err == nil {
		t.Fatal("a 5,000-byte record passed a 1,000-byte batch limit")
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("EndTransaction: %v (franz-go used to return nil here)", err)
	}
	if silent.Load() != 1 {
		t.Fatalf("silent aborts counted: %d, want 1", silent.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(lines.String(), "level=INFO") {
		t.Fatalf("franz-go's info lines reached the operator's log: %q", lines.String())
	}
}

type lockedWriter struct {
	w  *strings.Builder
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
