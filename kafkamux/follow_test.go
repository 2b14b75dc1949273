package kafkamux

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// followLog records what a follower's handler and caughtUp saw.
type followLog struct {
	mu       sync.Mutex
	msgs     []*Message
	offsets  map[int32][]int64
	atUp     int // len(msgs) when caughtUp ran; -1 before
	upCalls  atomic.Int32
	upSignal chan struct{}
}

func newFollowLog() *followLog {
	return &followLog{offsets: map[int32][]int64{}, atUp: -1, upSignal: make(chan struct{})}
}

func (l *followLog) handle(p int32, off int64, msg *Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msg)
	l.offsets[p] = append(l.offsets[p], off)
}

func (l *followLog) caughtUp() {
	l.mu.Lock()
	l.atUp = len(l.msgs)
	l.mu.Unlock()
	if l.upCalls.Add(1) == 1 {
		close(l.upSignal)
	}
}

func (l *followLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

func (l *followLog) waitUp(t *testing.T) {
	t.Helper()
	select {
	case <-l.upSignal:
	case <-time.After(15 * time.Second):
		t.Fatalf("caughtUp not called within 15s (%d records delivered)", l.len())
	}
}

// TestFollowFromStart: records produced before FollowFrom all reach the
// handler, in offset order per partition, tombstones included and flagged;
// caughtUp runs once, after all of them; later records keep coming. The
// reader is already running (another topic is followed) when FollowFrom is
// called, and the connection budget holds.
func TestFollowFromStart(t *testing.T) {
	m := newMux(t)
	if err := m.Follow(m.MessagesTopic(), func(int32, int64, *Message) {}); err != nil {
		t.Fatal(err)
	}
	topic := m.RetainedTopic()
	const keys, rounds = 50, 4
	want := 0
	for r := 0; r < rounds; r++ {
		for k := 0; k < keys; k++ {
			msg := &Message{Topic: fmt.Sprintf("dev/%d", k), Payload: fmt.Appendf(nil, "%d", r), Retain: true, QoS: 1}
			m.Produce(context.Background(), msg.RetainedRecord(topic), nil)
			want++
		}
	}
	for k := 0; k < keys; k += 5 { // clear every fifth topic: a tombstone each
		m.Produce(context.Background(), (&Message{Topic: fmt.Sprintf("dev/%d", k), Retain: true}).RetainedRecord(topic), nil)
		want++
	}
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	l := newFollowLog()
	if err := m.FollowFrom(topic, FromStart, l.handle, l.caughtUp); err != nil {
		t.Fatal(err)
	}
	if err := m.FollowFrom(topic, FromStart, l.handle, nil); err == nil {
		t.Fatal("second FollowFrom of the same topic succeeded")
	}
	l.waitUp(t)
	l.mu.Lock()
	if l.atUp != want {
		t.Errorf("caughtUp after %d records, want all %d produced before FollowFrom", l.atUp, want)
	}
	last := map[string]*Message{}
	tombstones := 0
	for _, msg := range l.msgs {
		if msg.Tombstone {
			tombstones++
			if msg.Payload != nil {
				t.Errorf("tombstone for %s has payload %q", msg.Topic, msg.Payload)
			}
		} else if len(msg.Payload) == 0 {
			t.Errorf("record for %s has an empty payload and no tombstone flag", msg.Topic)
		}
		last[msg.Topic] = msg
	}
	for p, offs := range l.offsets {
		for i := 1; i < len(offs); i++ {
			if offs[i] <= offs[i-1] {
				t.Errorf("partition %d: offset %d after %d", p, offs[i], offs[i-1])
			}
		}
	}
	l.mu.Unlock()
	if tombstones != keys/5 {
		t.Errorf("%d tombstones delivered, want %d", tombstones, keys/5)
	}
	for k := 0; k < keys; k++ {
		msg := last[fmt.Sprintf("dev/%d", k)]
		switch {
		case msg == nil:
			t.Errorf("dev/%d: nothing delivered", k)
		case k%5 == 0 && !msg.Tombstone:
			t.Errorf("dev/%d: last record is %q, want the tombstone", k, msg.Payload)
		case k%5 != 0 && string(msg.Payload) != fmt.Sprint(rounds-1):
			t.Errorf("dev/%d: last record is %q, want %d", k, msg.Payload, rounds-1)
		}
	}

	// Live records keep coming; caughtUp is not called again.
	produceSync(t, m, (&Message{Topic: "later", Payload: []byte("x"), Retain: true}).RetainedRecord(topic))
	produceSync(t, m, (&Message{Topic: "later", Retain: true}).RetainedRecord(topic))
	waitFor(t, 10*time.Second, "live records", func() bool { return l.len() == want+2 })
	l.mu.Lock()
	if tail := l.msgs[len(l.msgs)-1]; !tail.Tombstone || tail.Topic != "later" {
		t.Errorf("last live record: topic %s tombstone %v, want a tombstone for later", tail.Topic, tail.Tombstone)
	}
	l.mu.Unlock()
	if n := l.upCalls.Load(); n != 1 {
		t.Errorf("caughtUp called %d times", n)
	}
	if c := m.Connections(); c > 3 {
		t.Errorf("%d connections to a one-broker cluster, budget is 3", c)
	}
}

// TestFollowFromNothingToRead: an empty topic, or FromEnd, is caught up
// before FollowFrom returns.
func TestFollowFromNothingToRead(t *testing.T) {
	m := newMux(t)
	var up atomic.Int32
	if err := m.FollowFrom(m.RetainedTopic(), FromStart, func(int32, int64, *Message) {}, func() { up.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if up.Load() != 1 {
		t.Fatalf("empty topic: caughtUp called %d times by the time FollowFrom returned, want 1", up.Load())
	}
	produceSync(t, m, (&Message{Topic: "old", Payload: []byte("x")}).Record(m.MessagesTopic()))
	l := newFollowLog()
	if err := m.FollowFrom(m.MessagesTopic(), FromEnd, l.handle, l.caughtUp); err != nil {
		t.Fatal(err)
	}
	if l.upCalls.Load() != 1 {
		t.Fatalf("FromEnd: caughtUp called %d times by the time FollowFrom returned, want 1", l.upCalls.Load())
	}
	produceSync(t, m, (&Message{Topic: "new", Payload: []byte("y")}).Record(m.MessagesTopic()))
	waitFor(t, 10*time.Second, "new record", func() bool { return l.len() == 1 })
	if err := m.FollowFrom("no-such-topic", FromStart, l.handle, nil); err == nil {
		t.Fatal("FollowFrom of a missing topic succeeded")
	}
	if err := m.FollowFrom(m.SessionsTopic(), Start(9), l.handle, nil); err == nil {
		t.Fatal("FollowFrom with an invalid start succeeded")
	}
}

// TestFollowFromTransactionMarkers: partitions whose log ends in a commit
// or an abort marker, or in records an aborted transaction left behind,
// catch up; aborted records never reach the handler.
func TestFollowFromTransactionMarkers(t *testing.T) {
	m := newMux(t)
	topic := m.RetainedTopic()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // no Kafka call may hang the test
	defer cancel()
	txn, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.TransactionalID("follow-test"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	// Partition 0 ends with a commit marker, partition 1 with an abort
	// marker after aborted records, partition 2 with a plain record after
	// an aborted transaction.
	run := func(commit bool, parts ...int32) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			r := (&Message{Topic: fmt.Sprintf("p%d/%v", p, commit), Payload: []byte("v"), Retain: true}).RetainedRecord(topic)
			r.Partition = p
			if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		if err := txn.EndTransaction(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	run(true, 0, 1, 2)
	run(false, 1, 2)
	plain, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	r := (&Message{Topic: "p2/plain", Payload: []byte("v"), Retain: true}).RetainedRecord(topic)
	r.Partition = 2
	if err := plain.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}

	l := newFollowLog()
	if err := m.FollowFrom(topic, FromStart, l.handle, l.caughtUp); err != nil {
		t.Fatal(err)
	}
	l.waitUp(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	got := map[string]bool{}
	for _, msg := range l.msgs {
		got[msg.Topic] = true
	}
	for _, want := range []string{"p0/true", "p1/true", "p2/true", "p2/plain"} {
		if !got[want] {
			t.Errorf("%s not delivered before caughtUp", want)
		}
	}
	for _, aborted := range []string{"p1/false", "p2/false"} {
		if got[aborted] {
			t.Errorf("aborted record %s delivered", aborted)
		}
	}
	if len(l.msgs) != 4 || l.atUp != 4 {
		t.Errorf("%d records delivered, %d before caughtUp; want 4 and 4", len(l.msgs), l.atUp)
	}
	if m.Skipped() != 0 {
		t.Errorf("%d records skipped: transaction markers must not count as bad records", m.Skipped())
	}
}

// TestFollowAll: FollowAll follows all its topics, or none, and reads them
// all.
func TestFollowAll(t *testing.T) {
	m := newMux(t)
	noop := func(int32, int64, *Message) {}
	if err := m.FollowAll(FollowSpec{Topic: m.MessagesTopic(), Handler: noop},
		FollowSpec{Topic: "no-such-topic", Handler: noop}); err == nil {
		t.Fatal("FollowAll with a missing topic succeeded")
	}
	if err := m.FollowAll(FollowSpec{Topic: m.MessagesTopic(), Handler: noop},
		FollowSpec{Topic: m.MessagesTopic(), Handler: noop}); err == nil {
		t.Fatal("FollowAll with a topic given twice succeeded")
	}
	if err := m.FollowAll(); err == nil {
		t.Fatal("FollowAll of nothing succeeded")
	}

	got := make(chan string, 4)
	h := func(_ int32, _ int64, msg *Message) { got <- msg.Topic }
	produceSync(t, m, (&Message{Topic: "r", Payload: []byte("x")}).RetainedRecord(m.RetainedTopic()))
	up := make(chan time.Duration, 1)
	start := time.Now()
	if err := m.FollowAll(
		FollowSpec{Topic: m.MessagesTopic(), Handler: h}, // a failed FollowAll followed nothing: this works
		FollowSpec{Topic: m.RetainedTopic(), Start: FromStart, Handler: h, CaughtUp: func() { up <- time.Since(start) }},
	); err != nil {
		t.Fatal(err)
	}
	// Usually both topics are in the first fetch and this takes a few
	// milliseconds; franz-go may start fetching the messages topic (idle:
	// the broker holds the fetch for FetchMaxWait) before the retained one
	// is assigned, so the time is logged, not asserted.
	select {
	case d := <-up:
		t.Logf("retained topic caught up %v after FollowAll", d)
	case <-time.After(10 * time.Second):
		t.Fatal("retained topic not caught up")
	}
	produceSync(t, m, (&Message{Topic: "m", Payload: []byte("x")}).Record(m.MessagesTopic()))
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case topic := <-got:
			seen[topic] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %v delivered after 10s", seen)
		}
	}
}

// TestFollowFromWaitsForOpenTransaction: records written before FollowFrom
// but hidden from the read_committed reader by a transaction still open are
// delivered before caughtUp, which waits for the transaction to end.
func TestFollowFromWaitsForOpenTransaction(t *testing.T) {
	m := newMux(t)
	topic := m.RetainedTopic()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // no Kafka call may hang the test
	defer cancel()
	txn, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.TransactionalID("follow-open"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	plain, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	rec := func(key string, p int32) *kgo.Record {
		r := (&Message{Topic: key, Payload: []byte("v"), Retain: true}).RetainedRecord(topic)
		r.Partition = p
		return r
	}
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, rec("txn/0", 0)).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*kgo.Record{rec("plain/0", 0), rec("plain/1", 1)} {
		if err := plain.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	l := newFollowLog()
	if err := m.FollowFrom(topic, FromStart, l.handle, l.caughtUp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "plain/1", func() bool { return l.len() == 1 })
	time.Sleep(300 * time.Millisecond)
	if n := l.upCalls.Load(); n != 0 || l.len() != 1 {
		t.Fatalf("with a transaction open: caughtUp called %d times, %d records delivered; want 0 and 1", n, l.len())
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	l.waitUp(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.atUp != 3 {
		t.Fatalf("caughtUp after %d records, want 3 (txn/0, plain/0, plain/1)", l.atUp)
	}
}
