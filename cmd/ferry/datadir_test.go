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

// A Ferry started on a data dir written by a newer version, or damaged, exits non-zero with one line naming
// the file, and starts nothing on it (kafkamux TestDataDirDamagedRefused covers the kinds of damage).
func TestDataDirNewerOrDamagedRefused(t *testing.T) {
	for name, meta := range map[string]string{
		"newer":   `{"version":7,"cluster_id":"ferry-embedded"}`,
		"damaged": `{"version":1,"clust`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			if err := os.Mkdir(data, 0o755); err != nil {
				t.Fatal(err)
			}
			metaPath := filepath.Join(data, "meta.json")
			if err := os.WriteFile(metaPath, []byte(meta), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(binary, "--data-dir", data, "--embedded-kafka-addr", "127.0.0.1:0",
				"--mqtt", "tcp://127.0.0.1:0", "--log-level", "error")
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
				t.Fatalf("ferry: %v, want a non-zero exit (output %q)", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], metaPath) {
				t.Fatalf("output %q, want one line naming %s", out, metaPath)
			}
			if name == "newer" && !strings.Contains(lines[0], "written by a newer Ferry") {
				t.Errorf("output %q does not say the data dir is from a newer Ferry", lines[0])
			}
			entries, err := os.ReadDir(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != "meta.json" && e.Name() != "ferry.lock" {
					t.Errorf("refused start created %s", e.Name())
				}
			}
			if b, _ := os.ReadFile(metaPath); string(b) != meta {
				t.Errorf("meta.json rewritten: %q", b)
			}
		})
	}
}
