package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// onRetained: tombstones, empty payloads and already expired records clear the topic; stored payloads do not
// share memory with the record.
func TestOnRetained(t *testing.T) {
	s := &Server{}
	buf := []byte("payloadcorr")
	s.onRetained(0, 0, &kafkamux.Message{Topic: "t", Payload: buf[:7], CorrelationData: buf[7:]})
	m := s.retained.Match([]byte("t"), nil)
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
