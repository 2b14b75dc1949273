//go:build unix

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A Ferry started on a data dir another process holds exits non-zero with one line naming the holder's PID,
// before it writes anything there.
func TestDataDirHeldByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(data, "ferry.lock")
	pid := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(lock, []byte(pid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(binary, "--data-dir", data, "--embedded-kafka-addr", "127.0.0.1:0",
		"--mqtt", "tcp://127.0.0.1:0", "--log-level", "error")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("second ferry: %v, want a non-zero exit (output %q)", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "process "+pid) || !strings.Contains(lines[0], data) {
		t.Fatalf("output %q, want one line naming the data dir and the holder's PID %s", out, pid)
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries after the refused start, want only the lock file", len(entries))
	}
	if b, _ := os.ReadFile(lock); string(b) != pid+"\n" {
		t.Errorf("lock file rewritten by the refused start: %q", b)
	}
}
