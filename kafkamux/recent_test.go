package kafkamux

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"weak"
)

// cache hands msg to r as the shared reader does: as the record of partition p at offset off.
func cache(t testing.TB, r *recent, p int32, off int64, msg *Message) {
	rec := msg.Record("mqtt-messages")
	rec.Partition, rec.Offset = p, off
	if _, err := r.take(rec, 0, 0); err != nil {
		t.Fatal(err)
	}
}

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
		cache(t, r, p, i/3, &Message{Topic: "plant/7/temp", Payload: payload})
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
		cache(t, r, 0, i, msg())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(100); i < 20_000; i++ {
			cache(t, r, 0, i, msg())
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

// fetchResponse is n records of the messages topic laid out in one buffer, as a fetch response holds them:
// their keys, values and header values point into it. Records go round the partitions parts.
func fetchResponse(first int64, n int, parts int32) ([]byte, []*Message, []*Record) {
	buf := make([]byte, 0, 64<<10)
	at := func(s []byte) []byte {
		start := len(buf)
		buf = append(buf, s...)
		return buf[start:len(buf):len(buf)]
	}
	msgs := make([]*Message, n)
	recs := make([]*Record, n)
	for i := range n {
		off := first + int64(i)
		m := &Message{
			Topic: fmt.Sprintf("plant/%d/temp", off%7), Payload: []byte(fmt.Sprintf("%064d", off)), QoS: 1,
			ClientID: fmt.Sprintf("dev-%d", off), CorrelationData: []byte{byte(off), 1, 2},
			UserProps: []UserProp{{Key: "unit", Value: "C"}, {Key: "mqtt.x", Value: fmt.Sprint(off)}},
		}
		r := m.Record("mqtt-messages")
		r.Partition, r.Offset = int32(off%int64(parts)), off/int64(parts)
		r.Key, r.Value = at(r.Key), at(r.Value)
		for h := range r.Headers {
			r.Headers[h].Value = at(r.Headers[h].Value)
		}
		if cap(buf) < 64<<10 {
			panic("BUG: fetch response buffer grew")
		}
		msgs[i], recs[i] = m, r
	}
	return buf, msgs, recs
}

// sameMessage reports how got differs from want in what the cache keeps.
func sameMessage(got, want *Message) string {
	if got.Topic != want.Topic || !bytes.Equal(got.Payload, want.Payload) || got.QoS != want.QoS ||
		got.ClientID != want.ClientID || !bytes.Equal(got.CorrelationData, want.CorrelationData) ||
		!slices.Equal(got.UserProps, want.UserProps) {
		return fmt.Sprintf("got %+v, want %+v", *got, *want)
	}
	return ""
}

// A cached message owns its bytes: once the reader has handed a record on, nothing of the fetch response it
// came in is reachable from the cache, the cached messages stay what they were when the response's bytes
// change, and the heap the cache keeps is what it counts (its chunks), not the responses its records came in.
func TestRecentCacheOwnsItsBytes(t *testing.T) {
	const budget = 4 << 20
	r := newRecent(budget)
	var gone []weak.Pointer[byte]
	var last []byte
	var lastMsgs []*Message
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const fetches, per = 400, 300 // 120,000 records, 3 partitions: the window moves many times
	for f := range fetches {
		buf, msgs, recs := fetchResponse(int64(f*per), per, 3)
		for i, rec := range recs {
			got, err := r.take(rec, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if d := sameMessage(got, msgs[i]); d != "" {
				t.Fatalf("record %d: %s", rec.Offset, d)
			}
		}
		gone = append(gone, weak.Make(&buf[0]))
		if f == fetches-1 {
			last, lastMsgs = buf, msgs
		}
	}
	// The last response's bytes overwritten: what the cache serves does not change.
	for i := range last {
		last[i] = 0xff
	}
	served := 0
	for p := int32(0); p < 3; p++ {
		to := int64(fetches*per/3) + 0
		from := to - per/3
		if _, err := r.scan(p, from, to, func(off int64, m *Message) error {
			want := lastMsgs[(off*3+int64(p))-int64((fetches-1)*per)]
			if d := sameMessage(m, want); d != "" {
				t.Errorf("partition %d offset %d after its fetch response changed: %s", p, off, d)
			}
			served++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if served != per {
		t.Fatalf("served %d of the last response's %d records from the cache", served, per)
	}
	last, lastMsgs = nil, nil
	runtime.GC()
	for i, w := range gone {
		if w.Value() != nil {
			t.Fatalf("fetch response %d of %d is still reachable", i, len(gone))
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	counted, held := 0, 0
	for _, pc := range r.parts {
		counted += pc.bytes
		for _, c := range pc.chunks {
			held += recentChunkHead + cap(c.msgs)*messageSize + cap(c.offs)*8 + cap(c.buf) + cap(c.props)*userPropSize
		}
	}
	if counted != held || counted > budget {
		t.Fatalf("the cache counts %d bytes, its chunks hold %d, its budget is %d", counted, held, budget)
	}
	// The heap in use grew by what the cache counts, give or take 5 % (the fetch responses alone were 26 MB).
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("the heap grew by %d bytes for a cache that counts %d", grew, counted)
	if !raceEnabled && (grew > int64(counted)*105/100 || grew < int64(counted)*95/100) {
		t.Fatalf("the heap grew by %d bytes for a cache that counts %d", grew, counted)
	}
	runtime.KeepAlive(r)
}

// A record that is not an MQTT message is skipped without cost: its offset is covered, the slot and bytes it
// was decoded into are the next record's, and the records around it are served as they were.
func TestRecentCacheSkipsWhatItCannotDecode(t *testing.T) {
	r := newRecent(1 << 20)
	cache(t, r, 0, 0, &Message{Topic: "a/1", Payload: []byte("one")})
	bad := (&Message{Topic: "a/2", Payload: []byte("two")}).Record("mqtt-messages")
	bad.Key, bad.Offset = []byte("a/+"), 1
	if m, err := r.take(bad, 0, 0); err == nil || m != nil {
		t.Fatalf("a record keyed by a wildcard: got %v, %v; want an error", m, err)
	}
	cache(t, r, 0, 2, &Message{Topic: "a/3", Payload: []byte("three")})
	var got []string
	next, err := r.scan(0, 0, 3, func(off int64, m *Message) error {
		got = append(got, fmt.Sprintf("%d %s %s", off, m.Topic, m.Payload))
		return nil
	})
	if err != nil || next != 3 || !slices.Equal(got, []string{"0 a/1 one", "2 a/3 three"}) {
		t.Fatalf("scan: %q, next %d, err %v", got, next, err)
	}
	if c := r.parts[0].chunks[0]; c.n != 2 || c.used != len("a/1one")+len("a/3three") {
		t.Fatalf("the chunk holds %d records and %d bytes, want 2 and %d", c.n, c.used, len("a/1one")+len("a/3three"))
	}
}
