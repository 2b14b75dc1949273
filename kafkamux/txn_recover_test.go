package kafkamux

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// produceTogetherSync writes records in one transaction (Mux.ProduceTogether) and waits for the commit.
func produceTogetherSync(t *testing.T, m *Mux, rs ...*kgo.Record) {
	t.Helper()
	errs := make(chan error, len(rs))
	m.ProduceTogether(rs, func(_ *kgo.Record, err error) { errs <- err })
	for range rs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// segmentFiles returns the paths of a partition dir's segment files (<base offset>.dat), in offset order.
func segmentFiles(t *testing.T, pdir string) []string {
	t.Helper()
	entries, err := os.ReadDir(pdir)
	if err != nil {
		t.Fatal(err)
	}
	var bases []int64
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".dat"); ok {
			base, err := strconv.ParseInt(name, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	segs := make([]string, len(bases))
	for i, b := range bases {
		segs[i] = filepath.Join(pdir, strconv.FormatInt(b, 10)+".dat")
	}
	return segs
}

// lastSegment returns the path of the last segment file of topic's partition p in dataDir.
func lastSegment(t *testing.T, dataDir, topic string, p int32) string {
	t.Helper()
	segs := segmentFiles(t, filepath.Join(dataDir, "partitions", fmt.Sprintf("%s-%d", url.PathEscape(topic), p)))
	if len(segs) == 0 {
		t.Fatalf("%s-%d: no segment", topic, p)
	}
	return segs[len(segs)-1]
}

// cutLastMarker removes the last record batch of a segment and its index entry, after checking that it is a
// transaction marker of producer pid, epoch: the state a crash leaves when the embedded Kafka had written the
// commit markers of a transaction to other partitions but not yet to this one.
func cutLastMarker(t *testing.T, seg string, pid int64, epoch int16) {
	t.Helper()
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	var pos, last, n int64
	for pos < int64(len(data)) {
		last = pos
		pos += batchHeadLen + int64(binary.BigEndian.Uint32(data[pos+8:pos+12]))
		n++
	}
	b := data[last:]
	attrs := binary.BigEndian.Uint16(b[21:23])
	gotPID, gotEpoch := int64(binary.BigEndian.Uint64(b[43:51])), int16(binary.BigEndian.Uint16(b[51:53]))
	if attrs&0x20 == 0 || gotPID != pid || gotEpoch != epoch {
		t.Fatalf("%s: last batch is not the marker of producer %d epoch %d (attributes %#x, producer %d epoch %d)", seg, pid, epoch, attrs, gotPID, gotEpoch)
	}
	if err := os.Truncate(seg, last); err != nil {
		t.Fatal(err)
	}
	idx := strings.TrimSuffix(seg, ".dat") + ".idx"
	if err := os.Truncate(idx, (n-1)*kfakeIndexEntryLen); err != nil {
		t.Fatal(err)
	}
}

// cutEndTxn removes from dataDir's pids.log the entry that logs the end of producer pid's transaction of epoch,
// and everything after it: kfake logs the end after the last marker, so a crash between markers leaves none.
func cutEndTxn(t *testing.T, dataDir string, pid int64, epoch int16) {
	t.Helper()
	path := filepath.Join(dataDir, "pids.log")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := -1
	for pos := 0; pos+pidEntryHead <= len(raw); {
		n := int(binary.LittleEndian.Uint32(raw[pos:]))
		var e pidLogLine
		if err := json.Unmarshal(raw[pos+pidEntryHead:pos+8+n], &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == "endtx" && e.PID == pid && e.Epoch == epoch {
			cut = pos // the last one: a producer without KIP-890 ends many transactions with one epoch
		}
		pos += 8 + n
	}
	if cut < 0 {
		t.Fatalf("pids.log logs no end of producer %d's transaction of epoch %d", pid, epoch)
	}
	if err := os.Truncate(path, int64(cut)); err != nil {
		t.Fatal(err)
	}
}

// A crash of the process while the embedded Kafka writes a transaction's commit markers leaves the commit in
// some partitions and not in others. At start Ferry completes it: a read_committed reader sees every record of
// the transaction, in every partition — not the message without its QoS 2 packet-id record, or the reverse.
func TestDecidedCommitCompletedAtStart(t *testing.T) {
	t.Run("whole", func(t *testing.T) { testDecidedCommitCompleted(t, false) })
	t.Run("torn tail", func(t *testing.T) { testDecidedCommitCompleted(t, true) })
}

func testDecidedCommitCompleted(t *testing.T, torn bool) {
	dir, crashDir := t.TempDir(), t.TempDir()
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), Logger(testLogger()), Partitions(1), Transactions("ferry-recover")}
	ctx := context.Background()
	m, err := New(ctx, append(opts, DataDir(dir))...)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(v string) *kgo.Record {
		return &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("t/a"), Value: []byte(v)}
	}
	q := func(v string) *kgo.Record {
		return &kgo.Record{Topic: m.SessionsTopic(), Key: []byte("q:c\x00" + v), Value: []byte(v)}
	}
	first, second := msg("1"), msg("2")
	produceTogetherSync(t, m, first, q("1"))
	produceTogetherSync(t, m, second, q("2"))
	if first.ProducerEpoch == second.ProducerEpoch {
		t.Fatalf("two transactions with producer epoch %d: a (producer, epoch) pair must name one transaction (KIP-890)", first.ProducerEpoch)
	}
	if err := os.CopyFS(crashDir, os.DirFS(dir)); err != nil { // the state on disk at the crash
		t.Fatal(err)
	}
	m.Close()
	seg := lastSegment(t, crashDir, m.MessagesTopic(), 0)
	cutLastMarker(t, seg, second.ProducerID, second.ProducerEpoch)
	cutEndTxn(t, crashDir, second.ProducerID, second.ProducerEpoch)
	if torn {
		f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte{0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 1, 0, 0}); err != nil { // the start of a batch
			t.Fatal(err)
		}
		f.Close()
	}

	m2, err := New(ctx, append(opts, DataDir(crashDir))...)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	for topic, want := range map[string][]string{m.MessagesTopic(): {"t/a=1", "t/a=2"}, m.SessionsTopic(): {"q:c\x001=1", "q:c\x002=2"}} {
		seen := readCommitted(t, m2.Addr(), topic, len(want))
		for _, k := range want {
			if seen[k] != 1 {
				t.Errorf("%s: %q read %d times, want once (read: %v)", topic, k, seen[k], seen)
			}
		}
	}
}

// A transaction a crash cut short before its commit was decided is aborted in the data dir, with a marker:
// kfake alone aborts it in memory only, so once its producer committed a newer transaction in the same
// partition, a second crash brought the aborted records back, committed.
func TestUndecidedTransactionStaysAbortedAcrossCrashes(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), Logger(testLogger()), Partitions(1)}
	ctx := context.Background()
	start := func(dir string) *Mux {
		m, err := New(ctx, append(opts, DataDir(dir))...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// produce writes records of an application's transaction and commits it or leaves it open.
	produce := func(m *Mux, commit bool, values ...string) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.TransactionalID("an-application"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			for _, topic := range []string{m.MessagesTopic(), m.SessionsTopic()} {
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte(v)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if commit {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
		}
	}
	crash := func(m *Mux, to string) { // copy the data dir as it is on disk now, then stop
		t.Helper()
		if err := os.CopyFS(to, os.DirFS(m.cfg.dataDir)); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}

	m := start(dirs[0])
	produce(m, true, "committed")
	produce(m, false, "open at the crash")
	crash(m, dirs[1])
	m = start(dirs[1])
	produce(m, true, "committed after the first crash")
	crash(m, dirs[2])
	m = start(dirs[2])
	defer m.Close()
	for _, topic := range []string{m.MessagesTopic(), m.SessionsTopic()} {
		seen := readCommitted(t, m.Addr(), topic, 2)
		want := map[string]int{"k=committed": 1, "k=committed after the first crash": 1}
		if !maps.Equal(seen, want) {
			t.Errorf("%s: read %v, want %v", topic, seen, want)
		}
	}
}

// A producer without KIP-890 (no epoch bump at EndTxn) reuses its epoch for many transactions: the COMMIT marker
// of an earlier one in another partition says nothing about the one a crash cut short, which stays aborted.
func TestEpochReusingProducerNotCompletedFromAnotherTransaction(t *testing.T) {
	dir, crashDir := t.TempDir(), t.TempDir()
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), Logger(testLogger()), Partitions(1)}
	ctx := context.Background()
	m, err := New(ctx, append(opts, DataDir(dir))...)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.TransactionalID("an-older-application"),
		kgo.MaxVersions(kversionWithout890()))
	if err != nil {
		t.Fatal(err)
	}
	txn := func(topic, v string, commit bool) *kgo.Record {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		r := &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte(v)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
		}
		return r
	}
	first := txn(m.SessionsTopic(), "committed", true)
	second := txn(m.MessagesTopic(), "open at the crash", false)
	if first.ProducerEpoch != second.ProducerEpoch {
		t.Fatalf("the producer bumped its epoch (%d, %d): the test needs one without KIP-890", first.ProducerEpoch, second.ProducerEpoch)
	}
	if err := os.CopyFS(crashDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	m.Close()

	m2, err := New(ctx, append(opts, DataDir(crashDir))...)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if seen := readCommitted(t, m2.Addr(), m2.MessagesTopic(), 0); len(seen) != 0 {
		t.Fatalf("%s: read %v: a transaction never committed was completed", m2.MessagesTopic(), seen)
	}
}

// kversionWithout890 is the newest protocol with EndTxn and Produce capped below KIP-890 part 2.
func kversionWithout890() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(int16(kmsg.EndTxn), 4)
	v.SetMaxKeyVersion(int16(kmsg.Produce), 11)
	v.SetMaxKeyVersion(int16(kmsg.TxnOffsetCommit), 4)
	return v
}
