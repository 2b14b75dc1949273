package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/ferrymq/ferry/server/sessions"
)

// A session resumed from a stored state ahead of this instance's shared reader — handed over by an instance
// that had read further, or read while this one catches up after a restart — has completed the records in
// between where that state was written, and may have had the next one in flight under a packet id. The
// resume waits until the reader has passed them: the records before the stored position are not delivered
// again, and the one in flight is replayed with its packet id. Before, the resume went live at once and both
// came as new deliveries (QoS 2 under a new packet id: the checker's duplicates after restarts).
func TestResumeAheadOfTheReaderWaitsForIt(t *testing.T) {
	k := tp{0, 1}
	msg := &kafkamux.Message{Topic: "t/a", QoS: 2}
	srv := &Server{trie: newTrie(), readPos: map[tp]int64{k: 3}, kafka: rangeReader{msg: msg}}
	srv.cfg.sessionQueue = 16
	srv.cfg.sessionsWait = time.Minute
	srv.cfg.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &session{id: "ahead", subs: map[string]subOpts{"t/#": {qos: 2}}, resuming: true,
		ps: &persisted{from: map[tp]int64{k: 5}}}
	srv.trie.add("t/#", s, subOpts{qos: 2})
	from := map[tp]int64{k: 5}                                              // offsets before 5 completed
	resend := map[resendKey]sessions.OutRec{{0, 1, 5}: {ID: 9, P: 1, O: 5}} // 5 in flight as packet id 9
	done := make(chan struct{})
	go srv.resume(s, from, resend, done)

	srv.matchMu.Lock()
	s.mu.Lock()
	if off := srv.deliveryRecord(s, false).Offsets["1"]; off != 5 {
		t.Errorf("delivery record at offset %d of partition 1 while resuming, want the stored 5", off)
	}
	s.mu.Unlock()
	srv.matchMu.Unlock()
	for off := int64(3); off < 7; off++ { // the reader reaches the stored position and goes past it
		srv.fanOut(k, off, msg, false)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the resume did not catch up with the reader")
	}
	var got []int64
	var ids []uint16
	for i := range s.queue.len() {
		got = append(got, s.queue.at(i).off)
		ids = append(ids, s.queue.at(i).resendID)
	}
	if len(got) != 2 || got[0] != 5 || got[1] != 6 || ids[0] != 9 || ids[1] != 0 {
		t.Fatalf("queued offsets %v with packet ids %v, want [5 6] with [9 0]: 3 and 4 were completed, 5 was in flight as 9", got, ids)
	}
}

// rangeReader is the Kafka of a test that only replays: every record of the messages topic is msg.
type rangeReader struct {
	Kafka
	msg *kafkamux.Message
}

func (r rangeReader) MessagesTopic() string { return "messages" }

func (r rangeReader) ReadRange(_ context.Context, _ string, _ int32, from, to int64, fn func(int64, *kafkamux.Message) error) error {
	for off := from; off < to; off++ {
		if err := fn(off, r.msg); err != nil {
			return err
		}
	}
	return nil
}
