package kafkamux

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// describedConfig returns a config of topic as the cluster describes it.
func describedConfig(t *testing.T, m *Mux, topic, key string) string {
	t.Helper()
	rcs, err := m.Admin().DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc.Configs {
		if c.Key == key && c.Value != nil {
			return *c.Value
		}
	}
	return ""
}

// readAll returns the records of partition 0 of topic, from its log start to its end.
func readAll(t *testing.T, m *Mux, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := m.Admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		topic: {0: kgo.NewOffset().AtStart()},
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) == 0 || recs[len(recs)-1].Offset < end.Offset-1 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("reading %s to offset %d: %v (got %d records)", topic, end.Offset, err, len(recs))
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// startOffset returns the log start offset of partition 0 of topic.
func startOffset(t *testing.T, m *Mux, topic string) int64 {
	t.Helper()
	offs, err := m.Admin().ListStartOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := offs.Lookup(topic, 0)
	return o.Offset
}

func produceAll(t *testing.T, m *Mux, recs []*kgo.Record) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, r := range recs {
		wg.Add(1)
		m.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if first != nil {
		t.Fatalf("produce: %v", first)
	}
}

// waitPasses waits until the cleaner has run n more passes than it had.
func waitPasses(t *testing.T, m *Mux, n uint64) EmbeddedStats {
	t.Helper()
	s0, _ := m.EmbeddedStats()
	var s EmbeddedStats
	waitFor(t, 10*time.Second, "cleaner passes", func() bool {
		s, _ = m.EmbeddedStats()
		return s.Passes >= s0.Passes+n
	})
	return s
}

// The embedded topics are created with the documented bounds: the messages topic by time and by size per
// partition, the compacted ones never by retention.
func TestEmbeddedRetentionDefaults(t *testing.T) {
	m := newMux(t, Partitions(4))
	per := strconv.Itoa(DefaultEmbeddedRetentionBytes / 4)
	for _, c := range []struct{ topic, key, want string }{
		{m.MessagesTopic(), "retention.ms", strconv.FormatInt(DefaultEmbeddedRetention.Milliseconds(), 10)},
		{m.MessagesTopic(), "retention.bytes", per},
		{m.MessagesTopic(), "segment.bytes", strconv.Itoa(DefaultEmbeddedRetentionBytes / 4 / 8)},
		{m.RetainedTopic(), "retention.ms", "-1"},
		{m.RetainedTopic(), "retention.bytes", "-1"},
		{m.SessionsTopic(), "retention.ms", "-1"},
		{m.SessionsTopic(), "retention.bytes", "-1"},
		{m.SessionsTopic(), "delete.retention.ms", "60000"},
		{m.RetainedTopic(), "delete.retention.ms", "60000"},
	} {
		if got := describedConfig(t, m, c.topic, c.key); got != c.want {
			t.Errorf("%s %s = %q, want %q", c.topic, c.key, got, c.want)
		}
	}
	if DefaultEmbeddedRetention != 24*time.Hour || DefaultEmbeddedRetentionBytes != 512<<20 || DefaultEmbeddedCleanInterval != 2*time.Minute {
		t.Errorf("defaults changed: update docs/operations.md and the flags' help")
	}
}

// A restart with other bounds applies them to the existing topics; --kafka-topic-config still wins.
func TestEmbeddedRetentionAppliedAtRestart(t *testing.T) {
	dir := t.TempDir()
	base := []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(dir), Logger(testLogger()), Partitions(2)}
	m, err := New(context.Background(), base...)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m, err = New(context.Background(), append(base, EmbeddedRetention(time.Hour), EmbeddedRetentionBytes(0),
		TopicConfig("messages", "segment.bytes", "1048576"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for key, want := range map[string]string{"retention.ms": "3600000", "retention.bytes": "-1", "segment.bytes": "1048576"} {
		if got := describedConfig(t, m, m.MessagesTopic(), key); got != want {
			t.Errorf("after restart %s = %q, want %q", key, got, want)
		}
	}
}

// Records older than the time bound are gone after a pass; compacted topics keep every live key however old
// (kfake would apply 7 days of retention to them) and only its latest value.
func TestEmbeddedRetentionByTimeAndCompaction(t *testing.T) {
	m := newMux(t, DataDir(t.TempDir()), Partitions(1), EmbeddedRetention(2*time.Second), EmbeddedCleanInterval(100*time.Millisecond),
		compactDirty(1))
	msgs, ret := m.MessagesTopic(), m.RetainedTopic()
	var old []*kgo.Record
	for i := range 10 {
		old = append(old, &kgo.Record{Topic: msgs, Key: []byte("a/old"), Value: []byte("old" + strconv.Itoa(i))})
	}
	produceAll(t, m, old)
	for i := range 5 { // one batch per value: compaction keeps the last batch whatever it holds
		produceAll(t, m, []*kgo.Record{{Topic: ret, Key: []byte("k1"), Value: []byte("v" + strconv.Itoa(i))}})
	}
	produceAll(t, m, []*kgo.Record{{Topic: ret, Key: []byte("k0"), Value: []byte("only")}})
	time.Sleep(2100 * time.Millisecond) // every record so far is past the messages topic's retention
	produceAll(t, m, []*kgo.Record{{Topic: msgs, Key: []byte("a/new"), Value: []byte("new")}})
	produceAll(t, m, []*kgo.Record{{Topic: ret, Key: []byte("k2"), Value: []byte("last")}})
	produced := time.Now()

	waitFor(t, 10*time.Second, "retention of the old records", func() bool { return startOffset(t, m, msgs) >= 10 })
	if recs := readAll(t, m, msgs); len(recs) != 1 || string(recs[0].Value) != "new" {
		t.Fatalf("messages topic after retention holds %d records, want only the new one", len(recs))
	}
	waitPasses(t, m, 2)
	got := map[string][]string{}
	for _, r := range readAll(t, m, ret) {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	want := map[string]string{"k0": "only", "k1": "v4", "k2": "last"}
	for k, v := range want {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("retained key %s after compaction = %q, want [%s]", k, got[k], v)
		}
	}
	s, _ := m.EmbeddedStats()
	if s.Topics[0].Topic != msgs || s.Topics[0].RecordsDeleted < 10 {
		t.Errorf("stats %+v: want at least 10 records deleted from %s", s.Topics, msgs)
	}
	if s.LastPass.Before(produced) {
		t.Errorf("last pass %v, want one after the last records were produced (%v)", s.LastPass, produced)
	}
	if s.Compaction.Count == 0 || s.Retention.Count == 0 || s.Passes != s.Compaction.Count+s.Retention.Count {
		t.Errorf("%d passes, %d compactions and %d retention passes measured: want both kinds, adding up",
			s.Passes, s.Compaction.Count, s.Retention.Count)
	}
}

// compactDirty sets the growth of the compacted topics that calls for a compaction.
func compactDirty(n int64) Opt { return opt(func(c *cfg) { c.compactDirty = n }) }

// A pass compacts only when the compacted topics have grown by the threshold since the last compaction:
// retention passes go on meanwhile, and an unchanged topic is never rewritten.
func TestEmbeddedCompactionWhenGrown(t *testing.T) {
	const dirty = 64 << 10
	m := newMux(t, DataDir(t.TempDir()), Partitions(1), EmbeddedCleanInterval(50*time.Millisecond), compactDirty(dirty))
	ret := m.RetainedTopic()
	put := func(key string, n int) {
		produceAll(t, m, []*kgo.Record{{Topic: ret, Key: []byte(key), Value: bytes.Repeat([]byte("v"), n)}})
	}
	compactions := func() uint64 { s, _ := m.EmbeddedStats(); return s.Compaction.Count }
	put("a", 100)
	waitFor(t, 10*time.Second, "the first compaction", func() bool { return compactions() == 1 })

	waitPasses(t, m, 3) // unchanged: retention only
	if n := compactions(); n != 1 {
		t.Fatalf("%d compactions with the compacted topics unchanged, want 1", n)
	}
	for range 4 { // 40 KiB: below the threshold
		put("b", 10<<10)
	}
	waitPasses(t, m, 3)
	if n := compactions(); n != 1 {
		t.Fatalf("%d compactions after %d bytes written, want 1 below the threshold of %d", n, 40<<10, dirty)
	}
	for range 3 { // 70 KiB in all
		put("b", 10<<10)
	}
	put("c", 100) // the last batch, which compaction keeps whatever it holds
	waitFor(t, 10*time.Second, "a compaction past the threshold", func() bool { return compactions() == 2 })
	var bs int
	for _, r := range readAll(t, m, ret) {
		if string(r.Key) == "b" {
			bs++
		}
	}
	if bs != 1 {
		t.Errorf("%d records of key b after the compaction, want 1", bs)
	}
}

// Past the size bound, the oldest records are gone after a pass and the files stay under the bound plus one
// segment; the newest records are kept.
func TestEmbeddedRetentionBySize(t *testing.T) {
	const bound = 256 << 10
	m := newMux(t, DataDir(t.TempDir()), Partitions(1), EmbeddedRetention(0), EmbeddedRetentionBytes(bound),
		EmbeddedCleanInterval(100*time.Millisecond))
	msgs := m.MessagesTopic()
	payload := bytes.Repeat([]byte("x"), 1024)
	// 1 MiB in all, four times the bound, in batches of at most 16 KiB: kfake deletes whole batches, so a
	// bound smaller than a batch would delete the newest too.
	for range 64 {
		var recs []*kgo.Record
		for i := range 16 {
			recs = append(recs, &kgo.Record{Topic: msgs, Key: []byte("a/b"), Value: append([]byte(strconv.Itoa(i)), payload...)})
		}
		produceAll(t, m, recs)
	}
	s := waitPasses(t, m, 2)
	start := startOffset(t, m, msgs)
	if start == 0 {
		t.Fatal("no record deleted past the size bound")
	}
	recs := readAll(t, m, msgs)
	var kept int
	for _, r := range recs {
		kept += len(r.Value)
	}
	if kept > bound || kept < bound/2 {
		t.Errorf("%d payload bytes kept, want between half the bound and the bound %d", kept, bound)
	}
	if last := recs[len(recs)-1]; last.Offset != 4*256-1 {
		t.Errorf("last record kept at offset %d, want the newest, %d", last.Offset, 4*256-1)
	}
	ts := s.Topics[0]
	if seg := int64(minSegmentBytes); ts.DiskBytes > bound+2*seg || ts.DiskBytes == 0 {
		t.Errorf("%s has %d bytes on disk, want at most the bound %d plus a segment", msgs, ts.DiskBytes, bound)
	}
	if ts.IndexEntries == 0 || ts.RecordsDeleted != uint64(start) {
		t.Errorf("stats %+v: want index entries and %d records deleted", ts, start)
	}
}

// The embedded Kafka is compacted only between Ferry's transactions: kfake compacts an open transaction's
// records like committed ones, so a committed value superseded by an open transaction's would be lost with
// it if that transaction then aborted. kfake's own compaction ticker is off, so Ferry's cleaner is the only
// one that compacts.
func TestEmbeddedCompactionBetweenTransactions(t *testing.T) {
	m := newMux(t, DataDir(t.TempDir()), Partitions(1), Transactions("ferry-test-compact"),
		EmbeddedCleanInterval(time.Hour), compactDirty(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := m.adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	backoff := ""
	for _, rc := range rcs {
		for _, c := range rc.Configs {
			if c.Key == "log.cleaner.backoff.ms" && c.Value != nil {
				backoff = *c.Value
			}
		}
	}
	if backoff != kfakeCleanerOff {
		t.Errorf("the embedded Kafka's log.cleaner.backoff.ms = %q, want %s (its own compaction off)", backoff, kfakeCleanerOff)
	}

	// The pass below runs on the test's goroutine; the cleaner's own never runs (an hour's interval). Its
	// start, which the pass reads, is published under the stats lock.
	waitFor(t, 10*time.Second, "the cleaner's start", func() bool { s, _ := m.EmbeddedStats(); return len(s.Topics) > 0 })
	m.txn.open.Lock() // as the pump holds it from BeginTransaction to the transaction's end
	done := make(chan struct{})
	go func() {
		m.cleaner.pass(true)
		close(done)
	}()
	select {
	case <-done:
		m.txn.open.Unlock()
		t.Fatal("the embedded Kafka was compacted while a transaction was open")
	case <-time.After(300 * time.Millisecond):
	}
	m.txn.open.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no compaction after the transaction ended")
	}
	if s, _ := m.EmbeddedStats(); s.Compaction.Count != 1 {
		t.Errorf("%d compactions, want 1", s.Compaction.Count)
	}
}

// The smallest message Ferry writes is stored as a batch of at least EmbeddedMinBatchBytes, the floor the
// memory ceiling of standalone mode divides by (cmd/ferry, memlimit.go); the floor is not far below it either.
func TestEmbeddedMinBatchBytes(t *testing.T) {
	dir := t.TempDir()
	m := newMux(t, DataDir(dir), Partitions(1))
	msg := Message{Topic: "a", QoS: 0}
	produceAll(t, m, []*kgo.Record{msg.Record(m.MessagesTopic())})
	seg, err := filepath.Glob(filepath.Join(dir, "partitions", m.MessagesTopic()+"-0", "*.dat"))
	if err != nil || len(seg) != 1 {
		t.Fatalf("segments of %s: %v, %v", m.MessagesTopic(), seg, err)
	}
	fi, err := os.Stat(seg[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("smallest batch: %d bytes", fi.Size())
	if n := fi.Size(); n < EmbeddedMinBatchBytes || n > EmbeddedMinBatchBytes+16 {
		t.Fatalf("the smallest message is a batch of %d bytes; EmbeddedMinBatchBytes is %d", n, EmbeddedMinBatchBytes)
	}
}
