package offload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

func newMux(t testing.TB, opts ...kafkamux.Opt) *kafkamux.Mux {
	t.Helper()
	base := []kafkamux.Opt{kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(""),
		kafkamux.Logger(testLogger()), kafkamux.Partitions(3)}
	m, err := kafkamux.New(context.Background(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("kafkamux.New: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// gateProduce holds every produce request in kfake until the returned
// release function is called; later requests pass straight through.
func gateProduce(c *kfake.Cluster) (release func()) {
	gate := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-gate })
		return nil, nil, false
	})
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// failProduce answers every produce request with code for each partition.
func failProduce(c *kfake.Cluster, code int16) {
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

func msg(topic string, payload int) *kafkamux.Message {
	return &kafkamux.Message{Topic: topic, Payload: make([]byte, payload), QoS: 1, ClientID: "c"}
}

// recorder counts done calls per publish and fails the test on a second one.
type recorder struct {
	t     testing.TB
	mu    sync.Mutex
	calls map[int]int
	errs  []error
	n     atomic.Int64
}

func newRecorder(t testing.TB) *recorder { return &recorder{t: t, calls: map[int]int{}} }

func (r *recorder) done(id int) func(error) {
	return func(err error) {
		r.mu.Lock()
		r.calls[id]++
		if r.calls[id] > 1 {
			r.t.Errorf("done called %d times for publish %d", r.calls[id], id)
		}
		if err != nil {
			r.errs = append(r.errs, err)
		}
		r.mu.Unlock()
		r.n.Add(1)
	}
}

func (r *recorder) wait(t testing.TB, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.n.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d completions after 20s", r.n.Load(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestBudgetRecords(t *testing.T) {
	m := newMux(t)
	o, err := New(m, 2, LaneRecords(4))
	if err != nil {
		t.Fatal(err)
	}
	release := gateProduce(m.Cluster())
	defer release()
	lane := o.Lane(0)
	var spaces atomic.Int64
	lane.OnSpace(func() { spaces.Add(1) })
	rec := newRecorder(t)

	for i := 0; i < 4; i++ {
		if err := lane.TryPublish(msg(fmt.Sprintf("t/%d", i), 10), rec.done(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := lane.TryPublish(msg("t/x", 10), rec.done(99)); !errors.Is(err, ErrFull) {
		t.Fatalf("5th publish: err = %v, want ErrFull", err)
	}
	if r, _ := inFlight(lane); r != 4 {
		t.Fatalf("in flight %d records, want 4", r)
	}
	// Lanes are independent.
	if err := o.Lane(1).TryPublish(msg("t/other", 10), rec.done(100)); err != nil {
		t.Fatalf("other lane: %v", err)
	}
	if spaces.Load() != 0 || rec.n.Load() != 0 {
		t.Fatal("completions before Kafka answered")
	}
	release()
	rec.wait(t, 5)
	waitFor(t, "OnSpace", func() bool { return spaces.Load() == 1 })
	if r, b := inFlight(lane); r != 0 || b != 0 {
		t.Fatalf("in flight after completion: %d records, %d bytes", r, b)
	}
	if len(rec.errs) != 0 {
		t.Fatalf("errors: %v", rec.errs)
	}
	if rec.calls[99] != 0 {
		t.Fatal("done called for a publish refused with ErrFull")
	}
	if err := lane.TryPublish(msg("t/again", 10), rec.done(5)); err != nil {
		t.Fatalf("publish after OnSpace: %v", err)
	}
	rec.wait(t, 6)
	if spaces.Load() != 1 {
		t.Fatalf("OnSpace called %d times, want once per ErrFull episode", spaces.Load())
	}
	if s := o.Stats(); s.Published != 6 || s.Failed != 0 || s.Full != 1 || s.InFlightRecords != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBudgetBytes(t *testing.T) {
	m := newMux(t)
	size := kafkamux.RecordSize(msg("t/0", 300).Record(m.MessagesTopic()))
	o, err := New(m, 1, LaneBytes(3*size+size/2), LaneRecords(1000))
	if err != nil {
		t.Fatal(err)
	}
	release := gateProduce(m.Cluster())
	defer release()
	lane := o.Lane(0)
	spaced := make(chan struct{}, 10)
	lane.OnSpace(func() { spaced <- struct{}{} })
	rec := newRecorder(t)
	for i := 0; i < 3; i++ {
		if err := lane.TryPublish(msg(fmt.Sprintf("t/%d", i), 300), rec.done(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if _, b := inFlight(lane); b != 3*size {
		t.Fatalf("in flight %d bytes, want %d", b, 3*size)
	}
	if err := lane.TryPublish(msg("t/3", 300), rec.done(3)); !errors.Is(err, ErrFull) {
		t.Fatalf("4th publish: err = %v, want ErrFull", err)
	}
	if err := lane.TryPublish(msg("t/s", 1), rec.done(4)); err != nil {
		t.Fatalf("a small message that fits: %v", err)
	}
	release()
	rec.wait(t, 4)
	select {
	case <-spaced:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnSpace")
	}

	// A message larger than the whole budget goes through an empty lane.
	if err := lane.TryPublish(msg("t/big", 10*size), rec.done(5)); err != nil {
		t.Fatalf("oversized message on an empty lane: %v", err)
	}
	rec.wait(t, 5)
}

// TestDoneExactlyOnce: concurrent publishing from several lanes; every
// accepted publish completes exactly once and the budgets return to zero.
func TestDoneExactlyOnce(t *testing.T) {
	m := newMux(t)
	const lanes, per = 4, 2000
	o, err := New(m, lanes, LaneRecords(64))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t)
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for l := 0; l < lanes; l++ {
		lane := o.Lane(l)
		space := make(chan struct{}, 1)
		lane.OnSpace(func() {
			select {
			case space <- struct{}{}:
			default:
			}
		})
		wg.Add(1)
		go func() { // plays the event loop: never blocks on Kafka, waits for OnSpace when full
			defer wg.Done()
			for i := 0; i < per; {
				id := l*per + i
				m := msg(fmt.Sprintf("dev/%d/%d", l, i%17), 64)
				m.Retain = i%10 == 0
				switch err := lane.TryPublish(m, rec.done(id)); {
				case err == nil:
					accepted.Add(1)
					i++
				case errors.Is(err, ErrFull):
					<-space
				default:
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rec.wait(t, accepted.Load())
	if accepted.Load() != lanes*per {
		t.Fatalf("accepted %d, want %d", accepted.Load(), lanes*per)
	}
	time.Sleep(20 * time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.calls) != lanes*per || len(rec.errs) != 0 {
		t.Fatalf("%d publishes completed, %d errors (%v)", len(rec.calls), len(rec.errs), rec.errs)
	}
	for l := 0; l < lanes; l++ {
		if r, b := inFlight(o.Lane(l)); r != 0 || b != 0 {
			t.Fatalf("lane %d in flight %d/%d after all completions", l, r, b)
		}
	}
	// Retained messages were written to both topics.
	ends, err := m.Admin().ListEndOffsets(context.Background(), m.MessagesTopic(), m.RetainedTopic())
	if err != nil {
		t.Fatal(err)
	}
	var nm, nr int64
	ends.Each(func(lo kadm.ListedOffset) {
		if lo.Topic == m.RetainedTopic() {
			nr += lo.Offset
		} else {
			nm += lo.Offset
		}
	})
	if nm != lanes*per || nr != lanes*per/10 {
		t.Fatalf("messages topic has %d records, retained %d; want %d and %d", nm, nr, lanes*per, lanes*per/10)
	}
}

func TestProduceErrorsPropagate(t *testing.T) {
	t.Run("non-retryable", func(t *testing.T) {
		m := newMux(t)
		o, err := New(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		failProduce(m.Cluster(), kerr.InvalidRecord.Code)
		rec := newRecorder(t)
		for i := 0; i < 3; i++ {
			if err := o.Lane(0).TryPublish(msg("t", 5), rec.done(i)); err != nil {
				t.Fatal(err)
			}
		}
		rec.wait(t, 3)
		if len(rec.errs) != 3 || !errors.Is(rec.errs[0], kerr.InvalidRecord) ||
			!strings.HasPrefix(rec.errs[0].Error(), "cannot write MQTT message to Kafka: ") {
			t.Fatalf("errors: %v", rec.errs)
		}
		if r, b := inFlight(o.Lane(0)); r != 0 || b != 0 {
			t.Fatalf("budget not released on failure: %d/%d", r, b)
		}
		if s := o.Stats(); s.Failed != 3 || s.Published != 0 {
			t.Fatalf("stats %+v", s)
		}
	})

	t.Run("retryable until the delivery timeout", func(t *testing.T) {
		m := newMux(t, kafkamux.RecordDeliveryTimeout(time.Second))
		o, err := New(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		failProduce(m.Cluster(), kerr.NotEnoughReplicas.Code)
		rec := newRecorder(t)
		start := time.Now()
		if err := o.Lane(0).TryPublish(msg("t", 5), rec.done(0)); err != nil {
			t.Fatal(err)
		}
		rec.wait(t, 1)
		if len(rec.errs) != 1 {
			t.Fatal("no error after the delivery timeout")
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("failure took %v with a 1s delivery timeout", took)
		}
		t.Logf("failed after %v: %v", time.Since(start), rec.errs[0])
	})

	t.Run("retained half fails", func(t *testing.T) {
		m := newMux(t)
		o, err := New(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		c := m.Cluster()
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: m.RetainedTopic(),
			Err: kerr.TopicAuthorizationFailed, Count: -1})
		rec := newRecorder(t)
		mm := msg("r/1", 5)
		mm.Retain = true
		if err := o.Lane(0).TryPublish(mm, rec.done(0)); err != nil {
			t.Fatal(err)
		}
		rec.wait(t, 1)
		if len(rec.errs) != 1 || !strings.Contains(rec.errs[0].Error(), m.RetainedTopic()) {
			t.Fatalf("errors %v, want one naming the retained topic", rec.errs)
		}
	})

	t.Run("after close", func(t *testing.T) {
		m := newMux(t)
		o, err := New(m, 1)
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
		rec := newRecorder(t)
		if err := o.Lane(0).TryPublish(msg("t", 5), rec.done(0)); err != nil {
			t.Fatal(err)
		}
		rec.wait(t, 1)
		if len(rec.errs) != 1 {
			t.Fatal("publish after close did not fail")
		}
	})
}

func TestNewValidates(t *testing.T) {
	m := newMux(t, kafkamux.MaxBufferedRecords(1000))
	for _, tc := range []struct {
		loops int
		opts  []Opt
		want  string
	}{
		{0, nil, "0 loops"},
		{1, []Opt{LaneBytes(0)}, "invalid lane bytes 0"},
		{1, []Opt{LaneRecords(-1)}, "invalid lane records -1"},
		{1, []Opt{ResumeAt(101)}, "invalid resume mark"},
		{2, []Opt{LaneRecords(600)}, "exceed the Kafka producer buffer"},
	} {
		if _, err := New(m, tc.loops, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%d, ...): err = %v, want %q", tc.loops, err, tc.want)
		}
	}
}

// TestLaneReachesFollower: a message published through a lane reaches a
// follower of the messages topic.
func TestLaneReachesFollower(t *testing.T) {
	m := newMux(t)
	o, err := New(m, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *kafkamux.Message, 1)
	if err := m.Follow(m.MessagesTopic(), func(_ int32, _ int64, msg *kafkamux.Message) { got <- msg }); err != nil {
		t.Fatal(err)
	}
	in := &kafkamux.Message{Topic: "a/b", Payload: []byte("hi"), QoS: 1, UserProps: []kafkamux.UserProp{{Key: "k", Value: "v"}}}
	if err := o.Lane(0).TryPublish(in, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-got:
		if out.Topic != "a/b" || string(out.Payload) != "hi" || len(out.UserProps) != 1 {
			t.Fatalf("got %+v", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// inFlight returns the records and bytes l has produced and not yet seen completed. The server never asks:
// the lane's OnSpace is its only signal (see the package doc).
func inFlight(l *Lane) (records, bytes int) {
	s := l.Stats()
	return s.InFlightRecords, s.InFlightBytes
}
