package kafkamux

import (
	"runtime"
	"strings"
	"testing"
)

// The recent-records cache holds no more than its budget, whatever the number of records through it: the
// oldest leave as new ones come, each counted with its decoded size, and the heap it keeps stays within a
// small multiple of the budget.
func TestRecentCacheStaysWithinBudget(t *testing.T) {
	const budget = 1 << 20
	r := newRecent(budget)
	payload := []byte(strings.Repeat("x", 100))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 200_000 // about 80 MB counted: 80 times the budget
	for i := int64(0); i < n; i++ {
		p := int32(i % 3)
		msg := &Message{Topic: "plant/7/temp", Payload: append([]byte(nil), payload...)}
		r.add(p, i/3, msg, len(msg.Topic)+len(msg.Payload))
	}
	total := 0
	for _, pc := range r.parts {
		if pc.bytes > r.perPart {
			t.Fatalf("a partition holds %d bytes, more than its share %d", pc.bytes, r.perPart)
		}
		total += pc.bytes
	}
	if total > budget {
		t.Fatalf("the cache counts %d bytes, more than its budget %d", total, budget)
	}
	// The newest records are served; the oldest were evicted.
	next, err := r.scan(0, n/3-10, n/3, func(int64, *Message) error { return nil })
	if err != nil || next != n/3 {
		t.Fatalf("scan of the newest records: next %d err %v", next, err)
	}
	if next, _ := r.scan(0, 0, 10, func(int64, *Message) error { return nil }); next != 0 {
		t.Fatalf("the oldest records are still served (next %d)", next)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 4*budget {
		t.Fatalf("the heap grew by %d bytes for a %d-byte cache", grew, budget)
	}
	runtime.KeepAlive(r)
}

// A scan hands out records without the lock while the reader keeps adding, evicting and compacting: the
// records it was given stay what they were (run with -race).
func TestRecentScanWhileAdding(t *testing.T) {
	r := newRecent(64 << 10)
	msg := func() *Message { return &Message{Topic: "a/b", Payload: make([]byte, 100)} }
	for i := int64(0); i < 100; i++ {
		r.add(0, i, msg(), 103)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(100); i < 20_000; i++ {
			r.add(0, i, msg(), 103)
		}
	}()
	for k := 0; k < 50; k++ {
		r.mu.RLock()
		from := r.parts[0].from
		r.mu.RUnlock()
		want := from
		_, _ = r.scan(0, from, from+20, func(off int64, m *Message) error {
			if off != want || m == nil {
				t.Errorf("scan got offset %d (message %v), want %d", off, m != nil, want)
			}
			want++
			return nil
		})
	}
	<-done
}
