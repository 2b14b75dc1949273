package server

import (
	"io"
	"log/slog"
	"testing"

	"github.com/ferrymq/ferry/kafkamux"
)

// A session resumed from a stored position ahead of this instance's shared reader — handed over by an
// instance that had read further, or read while this one catches up — has completed the records in between
// where that position was written. The resume is caught up at once (nothing to replay up to the reader), and
// the live records before the stored position skip the session; before, they were queued for it again (QoS 2
// under new packet ids). Its delivery record keeps the stored position until the reader passes it.
func TestResumeAheadOfTheReaderSkipsCompletedRecords(t *testing.T) {
	k := tp{0, 1}
	srv := &Server{trie: newTrie(), readPos: map[tp]int64{k: 3}}
	srv.cfg.sessionQueue = 16
	srv.cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &session{id: "ahead", subs: map[string]subOpts{"t/#": {qos: 2}}, resuming: true, ps: &persisted{}}
	srv.trie.add("t/#", s, subOpts{qos: 2})
	done := make(chan struct{})
	srv.resume(s, map[tp]int64{k: 5}, nil, done) // the stored state: offsets before 5 completed
	<-done
	if s.resuming {
		t.Fatal("the resume did not catch up: nothing was left to replay up to the reader")
	}
	srv.matchMu.Lock()
	s.mu.Lock()
	if off := srv.deliveryRecord(s, false).Offsets["1"]; off != 5 {
		t.Errorf("delivery record at offset %d of partition 1, want the stored 5 until the reader passes it", off)
	}
	s.mu.Unlock()
	srv.matchMu.Unlock()
	for off := int64(3); off < 7; off++ { // the reader reaches the stored position, then goes past it
		srv.fanOut(k, off, &kafkamux.Message{Topic: "t/a", QoS: 2}, false)
	}
	var got []int64
	for i := range s.queue.len() {
		got = append(got, s.queue.at(i).off)
	}
	if len(got) != 2 || got[0] != 5 || got[1] != 6 {
		t.Fatalf("queued offsets %v, want [5 6]: records 3 and 4 were completed before the resume", got)
	}
}
