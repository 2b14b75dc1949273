package transport

import (
	"strings"
	"testing"
)

// NewShared refuses a configuration out of range with an error that names it, and takes its defaults without
// options.
func TestNewSharedOptions(t *testing.T) {
	if _, err := NewShared(nil, MaxPacketSize(0)); err == nil || !strings.Contains(err.Error(), "max packet size 0") {
		t.Fatalf("NewShared with a max packet size of 0: %v, want an error naming it", err)
	}
	sh, err := NewShared(nil)
	if err != nil {
		t.Fatal(err)
	}
	if sh.maxPacket != 1<<20 {
		t.Fatalf("default max packet size %d, want 1 MiB", sh.maxPacket)
	}
}
