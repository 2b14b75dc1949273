package kafkamux

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// snapshotDir returns every file of dir with its size, modification time and content hash.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		snap[path] = info.ModTime().String() + " " + strconv.FormatInt(info.Size(), 10) + " " + fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// A second embedded start on a data dir in use fails with an error naming the holder's PID, and writes
// nothing; once the first has stopped, the dir can be opened again.
func TestDataDirLockedByOneProcess(t *testing.T) {
	dir := t.TempDir()
	opts := []Opt{EmbeddedAddr("127.0.0.1:0"), DataDir(dir), Logger(testLogger()), Partitions(2)}
	ctx := context.Background()
	m, err := New(ctx, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	msg := &Message{Topic: "a/b", Payload: []byte("held"), QoS: 1}
	produceSync(t, m, msg.Record(m.MessagesTopic()))
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let kfake's own writes of the produce settle
	before := snapshotDir(t, dir)

	_, err = New(ctx, opts...)
	if err == nil {
		t.Fatal("a second New on the same data dir succeeded")
	}
	if !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("error %q does not wrap ErrDataDirLocked", err)
	}
	if pid := strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), "process "+pid) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q is not one line naming the holder's PID %s", err, pid)
	}
	after := snapshotDir(t, dir)
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s changed by the refused start", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s created by the refused start", p)
		}
	}

	m.Close()
	m, err = New(ctx, opts...)
	if err != nil {
		t.Fatalf("New after the holder stopped: %v", err)
	}
	m.Close()
}
