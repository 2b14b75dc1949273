package kafkamux

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
)

// storageFreeMargin is the free space the data dir's filesystem needs before a full data dir counts as
// writable again: a few of the largest record batches (franz-go's default, 1 MB).
const storageFreeMargin = 4 << 20

// storage tracks whether the embedded Kafka's data dir is full. kfake fails a produce whose batch it cannot
// write with UNKNOWN_SERVER_ERROR and logs the file; storage learns it from that log line (noSpace), so a full
// disk is told apart from other failures. It clears when the filesystem has [storageFreeMargin] free again,
// checked by Healthy and by the cleaner's passes (check). One owner: the Mux's storage.
type storage struct {
	dir string
	log *slog.Logger

	full atomic.Bool
	mu   sync.Mutex // guards path, serializes the transitions (and their one log line each)
	path string     // the file kfake could not write
}

// noSpace reports whether a kfake log line's arguments carry ENOSPC, and if so marks the data dir full,
// logging one error line per episode; kfake's own line is then dropped (it repeats for every batch). Runs on
// kfake's goroutine; never blocks for long.
func (s *storage) noSpace(args []any) bool {
	var path string
	found := false
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, syscall.ENOSPC) {
			found = true
			var pe *fs.PathError
			if errors.As(err, &pe) {
				path = pe.Path
			}
		}
	}
	if !found {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full.Load() {
		s.path = path
		s.full.Store(true)
		s.log.Error("embedded Kafka's data dir is full: QoS 1/2 publishes are refused until space returns",
			"data_dir", s.dir, "path", path)
	}
	return true
}

// check returns whether the data dir is still full, clearing the state when its filesystem has room again,
// and why. Cheap when not full (an atomic load); one statfs otherwise. Safe for concurrent use.
func (s *storage) check() (bool, string) {
	if s == nil || !s.full.Load() {
		return false, ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	free, err := freeBytes(s.dir)
	if err == nil && free >= storageFreeMargin && s.full.Load() {
		s.full.Store(false)
		s.log.Info("embedded Kafka's data dir has space again", "data_dir", s.dir, "free_bytes", free)
		return false, ""
	}
	if !s.full.Load() {
		return false, ""
	}
	return true, fmt.Sprintf("embedded Kafka's data dir is full: cannot write %s", s.path)
}

// StorageFull reports whether the embedded Kafka's data dir filled up and has not had room again since:
// records that fail meanwhile failed for want of space. An atomic load: callable from an event loop.
func (m *Mux) StorageFull() bool { return m != nil && m.storage != nil && m.storage.full.Load() }
