package server

import (
	"testing"
	"time"
)

// The reader's rule: behind once a record waited past the limit with enough records behind it; no longer behind
// once one waited less than half the limit or had nothing behind it.
func TestReadLagRule(t *testing.T) {
	const limit = 10 * time.Millisecond
	steps := []struct {
		what   string
		waited time.Duration
		after  int64
		behind bool
	}{
		{"on time", limit / 2, 10 * readLagMinRecords, false},
		{"late, few records behind: a pause, not overload", 10 * limit, readLagMinRecords - 1, false},
		{"late with a backlog", limit + time.Millisecond, readLagMinRecords, true},
		{"under the limit, over half of it: still behind", limit - time.Millisecond, readLagMinRecords, true},
		{"under half the limit: caught up", limit/2 - time.Millisecond, readLagMinRecords, false},
		{"late with a backlog again", 2 * limit, 10 * readLagMinRecords, true},
		{"late, but the end of the partition: caught up", 2 * limit, 0, false},
	}
	r := readLag{limit: int64(limit)}
	for _, s := range steps {
		r.note(s.waited, s.after)
		if got := r.shedQoS0(); got != s.behind {
			t.Fatalf("%s (waited %v, %d behind): behind %v, want %v", s.what, s.waited, s.after, got, s.behind)
		}
	}

	off := readLag{}
	off.note(time.Hour, 1<<40)
	if off.shedQoS0() {
		t.Fatal("a read lag limit of 0 turned shedding on")
	}
}
