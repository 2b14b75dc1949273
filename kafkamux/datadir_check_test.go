package kafkamux

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// checkRecords is how many records of checkRecordBytes the damaged-data-dir tests store: with a 4 MiB bound on
// one partition, segments are 512 KiB, so the partition has three segment files.
const (
	checkRecords     = 40
	checkRecordBytes = 32 << 10
)

// pristineDataDir returns a data dir holding checkRecords records in one messages partition of several
// segment files, written by a Mux that was closed cleanly, and that partition's segment files in offset order.
func pristineDataDir(t *testing.T) (dir string, segs []string) {
	t.Helper()
	dir = t.TempDir()
	m, err := New(context.Background(), checkOpts(dir)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	payload := make([]byte, checkRecordBytes)
	for i := range checkRecords {
		payload[0] = byte(i)
		produceSync(t, m, &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("a/b"), Value: payload})
	}
	m.Close()
	segs = segmentFiles(t, filepath.Join(dir, "partitions", m.MessagesTopic()+"-0"))
	if len(segs) < 2 {
		t.Fatalf("the partition has %d segment files, want several", len(segs))
	}
	return dir, segs
}

func checkOpts(dir string) []Opt {
	return []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(dir), Logger(testLogger()), Partitions(1),
		EmbeddedRetentionBytes(4 << 20)}
}

// copyDir copies the files of src into a new temporary dir.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// storedRecords starts a Mux on dir and returns how many records its messages topic holds.
func storedRecords(t *testing.T, dir string) int64 {
	t.Helper()
	ctx := context.Background()
	m, err := New(ctx, checkOpts(dir)...)
	if err != nil {
		t.Fatalf("New on a readable data dir: %v", err)
	}
	defer m.Close()
	ends, err := m.Admin().ListEndOffsets(ctx, m.MessagesTopic())
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// A damaged data dir, or one stamped with a newer format, stops New with one line naming the file and what to
// do, wrapping ErrDataDirCorrupt, and leaves every file as it was; kfake alone would have truncated the
// segment at the damage (losing every batch after it) or started empty, with a warning at most.
func TestDataDirDamagedRefused(t *testing.T) {
	pristine, segs := pristineDataDir(t)
	relSeg := func(i int) string { r, _ := filepath.Rel(pristine, segs[i]); return r }
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   []string
	}{
		{"bit flip in an earlier segment", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, relSeg(0)), 200)
		}, []string{relSeg(0), "record batch at byte 0", "CRC mismatch", "truncate -s 0"}},
		{"bit flip in the last batch of the log", func(t *testing.T, dir string) {
			p := filepath.Join(dir, relSeg(len(segs)-1))
			info, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			flipByte(t, p, info.Size()-10)
		}, []string{relSeg(len(segs) - 1), "CRC mismatch"}},
		{"earlier segment cut short", func(t *testing.T, dir string) {
			p := filepath.Join(dir, relSeg(0))
			info, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, info.Size()-100); err != nil {
				t.Fatal(err)
			}
		}, []string{relSeg(0), "run past the end of the file"}},
		{"meta.json from a newer version", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "meta.json"), `{"version":2,"cluster_id":"ferry-embedded"}`)
		}, []string{"meta.json has format version 2, newer than the 1 this Ferry reads", "written by a newer Ferry"}},
		{"topics.json not JSON", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "topics.json"), `{"version":1,"topics":[{"name":"mq`)
		}, []string{"topics.json is not valid JSON"}},
		{"meta.json missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "meta.json")); err != nil {
				t.Fatal(err)
			}
		}, []string{"meta.json is missing but Kafka data is there"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, pristine)
			tc.damage(t, dir)
			before := snapshotDir(t, dir)
			_, err := New(context.Background(), checkOpts(dir)...)
			if err == nil {
				t.Fatal("New on a damaged data dir succeeded")
			}
			if !errors.Is(err, ErrDataDirCorrupt) {
				t.Errorf("error %q does not wrap ErrDataDirCorrupt", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			after := snapshotDir(t, dir)
			for p, s := range before {
				if after[p] != s && filepath.Base(p) != "ferry.lock" {
					t.Errorf("%s changed by the refused start", p)
				}
			}
			for p := range after {
				if _, ok := before[p]; !ok && filepath.Base(p) != "ferry.lock" {
					t.Errorf("%s created by the refused start", p)
				}
			}
		})
	}
}

// The end of a log that a crash cut short — part of a batch, or a tail of zeros after a power loss — was never
// acknowledged: the data dir starts, with every complete batch.
func TestDataDirTornTailAccepted(t *testing.T) {
	pristine, segs := pristineDataDir(t)
	last, _ := filepath.Rel(pristine, segs[len(segs)-1])
	if n := storedRecords(t, copyDir(t, pristine)); n != checkRecords {
		t.Fatalf("pristine data dir holds %d records, want %d", n, checkRecords)
	}
	first, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	for name, tail := range map[string][]byte{
		"part of a batch": first[:300],
		"a short header":  first[:7],
		"zeros":           make([]byte, 4096),
	} {
		t.Run(name, func(t *testing.T) {
			dir := copyDir(t, pristine)
			f, err := os.OpenFile(filepath.Join(dir, last), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(tail); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if n := storedRecords(t, dir); n != checkRecords {
				t.Errorf("%d records after the restart, want %d", n, checkRecords)
			}
		})
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x20
	writeFile(t, path, string(b))
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
