package kafkamux

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// readCommitted reads every committed record of topic with a separate read_committed client.
func readCommitted(t *testing.T, addr, topic string, want int) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	n := 0
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for n < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			seen[string(r.Key)+"="+string(r.Value)]++
			n++
		})
	}
	// Anything beyond want would be a duplicate: look a little longer for one.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	cl.PollFetches(ctx2).EachRecord(func(r *kgo.Record) { seen[string(r.Key)+"="+string(r.Value)]++ })
	return seen
}

// With a transactional id every record is committed in a transaction shared by many records; records handed
// over together land together; a read_committed reader sees each exactly once.
func TestTransactionsCommitBatches(t *testing.T) {
	m := newMux(t, Transactions("ferry-test-txn"))
	const n = 2000
	var wg sync.WaitGroup
	var failed atomic.Int64
	wg.Add(n)
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
		}
		wg.Done()
	}
	for i := 0; i < n; i += 2 {
		a := &kgo.Record{Topic: m.MessagesTopic(), Key: []byte(fmt.Sprintf("t/%d", i%7)), Value: []byte(fmt.Sprint(i))}
		b := &kgo.Record{Topic: m.SessionsTopic(), Key: []byte(fmt.Sprintf("q:c%d", i)), Value: []byte(fmt.Sprint(i))}
		if i%4 == 0 {
			m.ProduceTogether([]*kgo.Record{a, b}, done)
		} else {
			m.Produce(context.Background(), a, done)
			m.PutSession(string(b.Key), b.Value, func(err error) { done(nil, err) })
		}
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d records failed", failed.Load())
	}
	txns := m.Transactions()
	if txns == 0 || txns >= n/2 {
		t.Fatalf("%d transactions for %d records: want several records per transaction", txns, n)
	}
	t.Logf("%d records in %d transactions", n, txns)
	for _, topic := range []string{m.MessagesTopic(), m.SessionsTopic()} {
		seen := readCommitted(t, m.Addr(), topic, n/2)
		if len(seen) != n/2 {
			t.Fatalf("%s: %d distinct records, want %d", topic, len(seen), n/2)
		}
		for k, c := range seen {
			if c != 1 {
				t.Fatalf("%s: %s read %d times", topic, k, c)
			}
		}
	}
}

// A transaction Kafka refuses to commit is aborted and its records are written again in the next one: none
// is lost, and a read_committed reader sees none twice (the aborted copies stay invisible).
func TestTransactionsRetryAbortedCommit(t *testing.T) {
	m := newMux(t, Transactions("ferry-test-abort"))
	c := m.Cluster()
	var refused atomic.Int32
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.EndTxnRequest)
		if !r.Commit || refused.Add(1) > 2 {
			return nil, nil, false
		}
		c.KeepControl()
		resp := r.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.TransactionAbortable.Code
		return resp, nil, true
	})
	const n = 50
	var wg sync.WaitGroup
	var failed atomic.Int64
	wg.Add(n)
	for i := 0; i < n; i++ {
		m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("a/b"), Value: []byte(fmt.Sprint(i))},
			func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
				wg.Done()
			})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d records failed", failed.Load())
	}
	if refused.Load() < 2 {
		t.Fatalf("the cluster refused %d commits; the test wants 2", refused.Load())
	}
	seen := readCommitted(t, m.Addr(), m.MessagesTopic(), n)
	if len(seen) != n {
		t.Fatalf("%d distinct records committed, want %d", len(seen), n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s read %d times", k, c)
		}
	}
}

// A transaction left open by a killed incarnation of the instance (same transactional id) is aborted when
// the instance starts again, before it reads anything: its readers are not held back, even by an embedded
// Kafka restarted from its data dir.
func TestTransactionsFenceLeftOpenAtStart(t *testing.T) {
	dir := t.TempDir()
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(dir), Logger(testLogger()), Partitions(2),
		Transactions("ferry-fence-test"), TransactionTimeout(time.Minute)}
	ctx := context.Background()
	m, err := New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	produceSync(t, m, &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("a"), Value: []byte("committed")})
	// The "killed" incarnation: a transaction with a record, never ended.
	dead, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.TransactionalID("ferry-fence-test"), kgo.TransactionTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := dead.ProduceSync(ctx, &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("a"), Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	dead.Close()
	m.Close()

	m2, err := New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	caught := make(chan struct{})
	var got []string
	var mu sync.Mutex
	if err := m2.FollowFrom(m2.MessagesTopic(), FromStart, func(_ int32, _ int64, msg *Message) {
		mu.Lock()
		got = append(got, string(msg.Payload))
		mu.Unlock()
	}, func() { close(caught) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-caught:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader is held back by the transaction the previous incarnation left open")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "committed" {
		t.Fatalf("read %q, want only the committed record", got)
	}
}

// After a crash (a copy of the data dir taken while the cluster runs stands for one), the embedded Kafka treats
// a transaction that was open as aborted without writing an abort marker. A reader starting from the beginning
// must still know when it has caught up, though the partition ends in records it will never see.
func TestCaughtUpPastCrashAbortedTail(t *testing.T) {
	dir, crashDir := t.TempDir(), t.TempDir()
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), Logger(testLogger()), Partitions(1), Transactions("ferry-crash-tail")}
	ctx := context.Background()
	m, err := New(ctx, append(opts, DataDir(dir))...)
	if err != nil {
		t.Fatal(err)
	}
	produceSync(t, m, &kgo.Record{Topic: m.SessionsTopic(), Key: []byte("s:a"), Value: []byte(`{"v":1}`)})
	other, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.TransactionalID("someone-else"))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := other.ProduceSync(ctx, &kgo.Record{Topic: m.SessionsTopic(), Key: []byte("s:b"), Value: []byte(`{"v":1}`)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(crashDir, os.DirFS(dir)); err != nil { // the state on disk at the crash
		t.Fatal(err)
	}
	other.Close()
	m.Close()

	m2, err := New(ctx, append(opts, DataDir(crashDir))...)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	caught := make(chan struct{})
	if err := m2.FollowFrom(m2.SessionsTopic(), FromStart, func(int32, int64, *Message) {}, func() { close(caught) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-caught:
	case <-time.After(10 * time.Second):
		t.Fatal("never caught up: the reader waits for records of a transaction the crash aborted")
	}
}

// Flush returns once every record handed over is committed: a read_committed reader sees them all at once.
func TestTransactionsFlush(t *testing.T) {
	m := newMux(t, Transactions("ferry-flush-test"))
	for i := 0; i < 300; i++ {
		m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("f/x"), Value: []byte(fmt.Sprint(i))}, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := m.txn.buffered(); n != 0 || m.txn.busy.Load() {
		t.Fatalf("after Flush: %d records pending, busy %v", n, m.txn.busy.Load())
	}
	if seen := readCommitted(t, m.Addr(), m.MessagesTopic(), 300); len(seen) != 300 {
		t.Fatalf("%d records committed after Flush, want 300", len(seen))
	}
}
