package payload

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/ferrymq/ferry/kafkamux"
)

// fanOuts records what a Held hands on, in order.
type fanOuts struct {
	mu   sync.Mutex
	offs map[int][]int64
	json map[int][]bool
}

func (f *fanOuts) FanOut(k int, off int64, m *kafkamux.Message, skip bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offs[k] = append(f.offs[k], off)
	f.json[k] = append(f.json[k], m.ContentType == "application/json")
}
func (f *fanOuts) ReplaceRetained(old, m *kafkamux.Message) {}
func (f *fanOuts) Warn(string, ...any)                      {}

func (f *fanOuts) got(k int) ([]int64, []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.offs[k]...), append([]bool(nil), f.json[k]...)
}

// A record whose schema id is being fetched is held, and every later record of its partition behind it, even
// one whose id is known; other partitions go at once. Once the id is known the partition's records go as
// JSON, in order; the counters say what was held.
func TestHeldKeepsPartitionOrder(t *testing.T) {
	reg := srfake.New()
	defer reg.Close()
	reg.SeedSchema("t-value", 1, 11, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	reg.SeedSchema("x-value", 1, 13, sr.Schema{Schema: avroText, Type: sr.TypeAvro})
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, []string{"t/#=avro:registry:t-value;deliver=json"}, Registry(cl), FetchTimeout(time.Second))
	s.Start()
	defer s.Close()
	waitFor(t, func() bool { return s.rules[0].cur.Load() != nil })
	rec, _, err := s.Ingest(0, nil, []byte(`{"device":"d","temp":1}`))
	if err != nil {
		t.Fatal(err)
	}
	withID := func(id byte) []byte { return append([]byte{0, 0, 0, 0, id}, rec[5:]...) }
	msg := func(id byte) *kafkamux.Message { return &kafkamux.Message{Topic: "t/x", Payload: withID(id)} }

	gate := make(chan struct{}) // the registry answers once the records below are admitted
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	defer release()
	reg.Intercept(func(http.ResponseWriter, *http.Request) bool { <-gate; return false })
	f := &fanOuts{offs: map[int][]int64{}, json: map[int][]bool{}}
	h := NewHeld[int](s, f)
	if _, now := h.Admit(1, 10, msg(13), false); now {
		t.Fatal("a record of an unknown schema id was not held")
	}
	if _, now := h.Admit(1, 11, msg(11), false); now {
		t.Fatal("a record behind a held one went first")
	}
	if _, now := h.Admit(1, 12, msg(11), true); now {
		t.Fatal("a skipped record behind a held one went first")
	}
	if m, now := h.Admit(2, 5, msg(11), false); !now || m.ContentType != "application/json" {
		t.Fatalf("another partition's record: now %v, %+v", now, m)
	}
	if held, total, lost := h.Stats(); held != 3 || total != 3 || lost != 0 {
		t.Fatalf("held %d, total %d, lost %d; want 3, 3, 0", held, total, lost)
	}
	if offs, _ := f.got(1); len(offs) != 0 {
		t.Fatalf("partition 1 fanned out %v while its first record's schema id was being fetched", offs)
	}
	release()
	waitFor(t, func() bool { offs, _ := f.got(1); return len(offs) == 3 })
	offs, js := f.got(1)
	if offs[0] != 10 || offs[1] != 11 || offs[2] != 12 || !js[0] || !js[1] {
		t.Fatalf("partition 1 fanned out %v (JSON %v), want 10, 11, 12 with the first two as JSON", offs, js)
	}
	if held, total, _ := h.Stats(); held != 0 || total != 3 {
		t.Fatalf("after the release: held %d, total %d", held, total)
	}
	if _, now := h.Admit(1, 13, msg(11), false); !now {
		t.Fatal("the partition is still held after its records went")
	}
}
