package retained

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/mqttcodec"
)

func matchedTopics(r *Index, filter string) []string {
	var out []string
	for _, m := range r.Match([]byte(filter), nil) {
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
	var r Index
	topics := map[string]bool{}
	for i := 0; i < 400; i++ {
		tp := randTopic()
		r.Set(&kafkamux.Message{Topic: tp, Payload: []byte("p")})
		topics[tp] = true
	}
	for i := 0; i < 100; i++ { // clear some
		tp := randTopic()
		r.Remove(tp, nil)
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
		r.Remove(tp, nil)
	}
	if r.count != 0 || !r.root.Leaf() || r.root.Value != nil {
		t.Fatalf("after removing all: count %d, root %+v", r.count, r.root)
	}
}

// Nodes switch from a slice to a map past smallFanout children and back to nothing when emptied.
func TestRetainedIndexWideNode(t *testing.T) {
	var r Index
	for i := 0; i < 100; i++ {
		r.Set(&kafkamux.Message{Topic: fmt.Sprintf("w/%d", i), Payload: []byte("p")})
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
	r.Set(&kafkamux.Message{Topic: "w/57", Payload: []byte("new")})
	if r.count != 100 || string(r.Match([]byte("w/57"), nil)[0].Payload) != "new" {
		t.Fatal("replacing a retained message did not replace it")
	}
	for i := 0; i < 100; i++ {
		r.Remove(fmt.Sprintf("w/%d", i), nil)
	}
	if !r.root.Leaf() || r.root.Value != nil {
		t.Fatalf("root not empty after removing all: %+v", r.root)
	}
}

// An expired retained message is not delivered and is dropped from the index by the SUBSCRIBE that finds it;
// remove with a message only removes that message [MQTT-3.3.2-5].
func TestRetainedIndexExpiry(t *testing.T) {
	var r Index
	past := &kafkamux.Message{Topic: "e/old", Payload: []byte("p"), ExpiresAt: time.Now().Add(-time.Second)}
	live := &kafkamux.Message{Topic: "e/new", Payload: []byte("p"), ExpiresAt: time.Now().Add(time.Hour)}
	r.Set(past)
	r.Set(live)
	if got := matchedTopics(&r, "e/#"); len(got) != 1 || got[0] != "e/new" {
		t.Fatalf("matched %q, want [e/new]", got)
	}
	if r.count != 1 || r.root.Get("e/old") != nil {
		t.Fatalf("expired message still indexed: count %d", r.count)
	}
	other := &kafkamux.Message{Topic: "e/new", Payload: []byte("q")}
	r.Remove("e/new", other) // not the stored one: kept
	if r.count != 1 {
		t.Fatal("remove(topic, other message) removed the stored one")
	}
}

// TestRetainedIndexMemory measures the heap a retained message costs in the index (the figure quoted in
// its package comment): 100,000 topics of the shape "site/<n>/dev/<m>/state" with 16-byte payloads.
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
		Detach(m)
		msgs[i] = m
	}
	runtime.GC()
	var mid runtime.MemStats
	runtime.ReadMemStats(&mid)
	var r Index
	for _, m := range msgs {
		r.Set(m)
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
		var r Index
		for i := 0; i < size; i++ {
			r.Set(&kafkamux.Message{Topic: fmt.Sprintf("site/%d/dev/%d/state", i/100, i%100), Payload: []byte("p")})
		}
		for _, filter := range []string{"site/7/dev/42/state", "site/7/dev/+/state", "site/+/dev/42/state"} {
			b.Run(fmt.Sprintf("%d/%s", size, filter), func(b *testing.B) {
				b.ReportAllocs()
				f := []byte(filter)
				var dst []*kafkamux.Message
				for b.Loop() {
					dst = r.Match(f, dst[:0])
				}
			})
		}
	}
}
