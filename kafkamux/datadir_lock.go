package kafkamux

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// LockFileName is the file in the data dir that the running Ferry holds an
// exclusive lock on (flock) and writes its PID to.
const LockFileName = "ferry.lock"

// ErrDataDirLocked is wrapped by the error New returns when another process
// holds the data dir.
var ErrDataDirLocked = errors.New("data dir locked")

// dirLock is the held lock of a data dir; release frees it.
type dirLock struct{ f *os.File }

// lockDataDir takes the exclusive lock of dir before anything else touches
// it (kfake reads and rewrites the files as it loads them), creating dir if
// needed. A second process gets an error naming the holder's PID and writes
// nothing: the lock file is opened without truncation and only the holder
// writes to it. The lock is the kernel's, so it goes with the process, even
// on SIGKILL; a stale PID in the file means nothing.
//
// Runs on New's goroutine.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create data dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open lock file of data dir: %w", err)
	}
	if err := flockExclusive(f); err != nil {
		holder := "unknown"
		if b, rerr := os.ReadFile(path); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
			holder = string(bytes.TrimSpace(b))
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("cannot use data dir %s: process %s holds its lock (%s), "+
				"each Ferry needs its own data dir: %w", dir, holder, path, ErrDataDirLocked)
		}
		return nil, fmt.Errorf("cannot lock data dir %s: %w", dir, err)
	}
	pid := strconv.Itoa(os.Getpid()) + "\n"
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(pid), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot write lock file of data dir: %w", err)
	}
	return &dirLock{f}, nil
}

// release unlocks the data dir. The PID stays in the file: the lock, not the
// file's content, says whether the dir is held. Safe on nil.
func (l *dirLock) release() {
	if l != nil {
		l.f.Close() // closing the last descriptor drops the flock
	}
}
