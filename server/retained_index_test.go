package server

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

func matchedTopics(r *retainedStore, filter string) []string {
	var out []string
	for _, m := range r.match([]byte(filter), nil) {
		out = append(out, m.Topic)
	}
	slices.Sort(out)
	return out
}

// The trie finds exactly what a linear scan with mqttcodec.Match finds, for random topics and filters with
// empty levels, '$' topics, '+' and '#' [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.7.2-1].
func TestRetainedIndexMatchesLikeLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"a", "b", "c", "", "$SYS", "dev", "x"}
	randTopic := func() string {
		n := 1 + rng.IntN(4)
		lv := make([]string, n)
		for i := range lv {
			lv[i] = words[rng.IntN(len(words))]
			if i > 0 && lv[i] == "$SYS" {
				lv[i] = "sys"
			}
		}
		return strings.Join(lv, "/")
	}
	var r retainedStore
	topics := map[string]bool{}
	for i := 0; i < 400; i++ {
		tp := randTopic()
		r.set(&kafkamux.Message{Topic: tp, Payload: []byte("p")})
		topics[tp] = true
	}
	for i := 0; i < 100; i++ { // clear some
		tp := randTopic()
		r.remove(tp, nil)
		delete(topics, tp)
	}
	if r.count != len(topics) {
		t.Fatalf("count %d, want %d", r.count, len(topics))
	}
	for i := 0; i < 3000; i++ {
		f := randTopic()
		lv := strings.Split(f, "/")
		for j := range lv {
			switch rng.IntN(4) {
			case 0:
				lv[j] = "+"
			case 1:
				if j == len(lv)-1 {
					lv[j] = "#"
				}
			}
		}
		filter := strings.Join(lv, "/")
		var want []string
		for tp := range topics {
			if mqttcodec.Match([]byte(filter), []byte(tp)) {
				want = append(want, tp)
			}
		}
		slices.Sort(want)
		if got := matchedTopics(&r, filter); !slices.Equal(got, want) {
			t.Fatalf("filter %q: trie found %q, linear scan %q", filter, got, want)
		}
	}
	// Removing everything leaves an empty root: no node is leaked.
	for tp := range topics {
		r.remove(tp, nil)
	}
	if r.count != 0 || !r.root.Leaf() || r.root.Value != nil {
		t.Fatalf("after removing all: count %d, root %+v", r.count, r.root)
	}
}

// Nodes switch from a slice to a map past smallFanout children and back to nothing when emptied.
func TestRetainedIndexWideNode(t *testing.T) {
	var r retainedStore
	for i := 0; i < 100; i++ {
		r.set(&kafkamux.Message{Topic: fmt.Sprintf("w/%d", i), Payload: []byte("p")})
	}
	w := r.root.Child("w")
	if w == nil {
		t.Fatal("wide node: none")
	}
	if n, mapped := w.Children(); !mapped || n != 100 {
		t.Fatalf("wide node: %+v", w)
	}
	if got := matchedTopics(&r, "w/+"); len(got) != 100 {
		t.Fatalf("w/+ matched %d", len(got))
	}
	if got := matchedTopics(&r, "w/57"); len(got) != 1 || got[0] != "w/57" {
		t.Fatalf("w/57 matched %q", got)
	}
	r.set(&kafkamux.Message{Topic: "w/57", Payload: []byte("new")})
	if r.count != 100 || string(r.match([]byte("w/57"), nil)[0].Payload) != "new" {
		t.Fatal("replacing a retained message did not replace it")
	}
	for i := 0; i < 100; i++ {
		r.remove(fmt.Sprintf("w/%d", i), nil)
	}
	if !r.root.Leaf() || r.root.Value != nil {
		t.Fatalf("root not empty after removing all: %+v", r.root)
	}
}

// An expired retained message is not delivered and is dropped from the index by the SUBSCRIBE that finds it;
// remove with a message only removes that message [MQTT-3.3.2-5].
func TestRetainedIndexExpiry(t *testing.T) {
	var r retainedStore
	past := &kafkamux.Message{Topic: "e/old", Payload: []byte("p"), ExpiresAt: time.Now().Add(-time.Second)}
	live := &kafkamux.Message{Topic: "e/new", Payload: []byte("p"), ExpiresAt: time.Now().Add(time.Hour)}
	r.set(past)
	r.set(live)
	if got := matchedTopics(&r, "e/#"); len(got) != 1 || got[0] != "e/new" {
		t.Fatalf("matched %q, want [e/new]", got)
	}
	if r.count != 1 || r.root.Get("e/old") != nil {
		t.Fatalf("expired message still indexed: count %d", r.count)
	}
	other := &kafkamux.Message{Topic: "e/new", Payload: []byte("q")}
	r.remove("e/new", other) // not the stored one: kept
	if r.count != 1 {
		t.Fatal("remove(topic, other message) removed the stored one")
	}
}

// onRetained: tombstones, empty payloads and already expired records clear the topic; stored payloads do not
// share memory with the record.
func TestOnRetained(t *testing.T) {
	s := &Server{}
	buf := []byte("payloadcorr")
	s.onRetained(0, 0, &kafkamux.Message{Topic: "t", Payload: buf[:7], CorrelationData: buf[7:]})
	m := s.retained.match([]byte("t"), nil)
	if len(m) != 1 || string(m[0].Payload) != "payload" || string(m[0].CorrelationData) != "corr" {
		t.Fatalf("stored %+v", m)
	}
	copy(buf, "XXXXXXXXXXX")
	if string(m[0].Payload) != "payload" || string(m[0].CorrelationData) != "corr" {
		t.Fatal("stored message shares its payload with the Kafka record")
	}
	for _, clear := range []*kafkamux.Message{
		{Topic: "t", Tombstone: true},
		{Topic: "t", Payload: []byte{}},
		{Topic: "t", Payload: []byte("x"), ExpiresAt: time.Now().Add(-time.Millisecond)},
	} {
		s.onRetained(0, 0, &kafkamux.Message{Topic: "t", Payload: []byte("v")})
		s.onRetained(0, 0, clear)
		if s.RetainedCount() != 0 {
			t.Fatalf("%+v did not clear the topic", clear)
		}
	}
}

// TestRetainedIndexMemory measures the heap a retained message costs in the index (the figure quoted in
// retained.go): 100,000 topics of the shape "site/<n>/dev/<m>/state" with 16-byte payloads.
func TestRetainedIndexMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100,000 messages")
	}
	const n = 100_000
	msgs := make([]*kafkamux.Message, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range msgs {
		m := &kafkamux.Message{Topic: fmt.Sprintf("site/%d/dev/%d/state", i/100, i%100), Payload: make([]byte, 16), QoS: 1}
		detach(m)
		msgs[i] = m
	}
	runtime.GC()
	var mid runtime.MemStats
	runtime.ReadMemStats(&mid)
	var r retainedStore
	for _, m := range msgs {
		r.set(m)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	msgBytes := float64(mid.HeapAlloc-before.HeapAlloc) / n
	idxBytes := float64(after.HeapAlloc-mid.HeapAlloc) / n
	t.Logf("per retained message: %.0f bytes for the message (struct, topic, payload), %.0f bytes of index, %.0f in all",
		msgBytes, idxBytes, msgBytes+idxBytes)
	if idxBytes > 250 {
		t.Errorf("index overhead %.0f bytes per retained message, documented as about 157", idxBytes)
	}
	runtime.KeepAlive(msgs)
	runtime.KeepAlive(&r)
}

// BenchmarkRetainedMatch: a narrow filter costs the matching branch, not the index size.
func BenchmarkRetainedMatch(b *testing.B) {
	for _, size := range []int{1_000, 100_000} {
		var r retainedStore
		for i := 0; i < size; i++ {
			r.set(&kafkamux.Message{Topic: fmt.Sprintf("site/%d/dev/%d/state", i/100, i%100), Payload: []byte("p")})
		}
		for _, filter := range []string{"site/7/dev/42/state", "site/7/dev/+/state", "site/+/dev/42/state"} {
			b.Run(fmt.Sprintf("%d/%s", size, filter), func(b *testing.B) {
				b.ReportAllocs()
				f := []byte(filter)
				var dst []*kafkamux.Message
				for b.Loop() {
					dst = r.match(f, dst[:0])
				}
			})
		}
	}
}

// While the index loads, the retained parts of SUBSCRIBEs wait, up to maxRetainedWaits; the rest are counted
// and dropped, and once loaded, SUBSCRIBEs are answered at once.
func TestRetainedWaitsBounded(t *testing.T) {
	s := &Server{}
	s.cfg.defaults()
	s.cfg.log = slog.New(slog.DiscardHandler)
	for i := 0; i < maxRetainedWaits+10; i++ {
		if got := s.retainedFor(nil, []byte("a/#"), 1, 0, nil); len(got) != 0 {
			t.Fatal("answered before the index loaded")
		}
	}
	if len(s.retained.waiting) != maxRetainedWaits || s.retained.waitDropped != 10 {
		t.Fatalf("waiting %d, dropped %d", len(s.retained.waiting), s.retained.waitDropped)
	}
	s.onRetainedCaughtUp() // nothing matches the empty index: no session is touched
	if !s.RetainedReady() || s.retained.waiting != nil {
		t.Fatal("not ready after catching up")
	}
	s.onRetained(0, 0, &kafkamux.Message{Topic: "a/b", Payload: []byte("p")})
	if got := s.retainedFor(nil, []byte("a/#"), 1, 0, nil); len(got) != 1 {
		t.Fatalf("after loading: %d messages, want 1", len(got))
	}
}
