package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ReadUpTo returns once the raw follower has been handed every record that was in the topic when it was
// called — even when the handler is slow — and not before; it gives up with ctx; it refuses a topic that is
// not followed raw.
func TestReadUpTo(t *testing.T) {
	m := newMux(t)
	var seen atomic.Int64
	up := make(chan struct{})
	err := m.FollowAll(FollowSpec{Topic: m.SessionsTopic(), Start: FromStart, Raw: func(*kgo.Record) {
		time.Sleep(200 * time.Microsecond) // a slow reader: ReadUpTo must wait for it
		seen.Add(1)
	}, CaughtUp: func() { close(up) }})
	if err != nil {
		t.Fatal(err)
	}
	<-up
	const n = 500
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		m.PutSession(fmt.Sprintf("s:client-%d", i), []byte("{}"), func(err error) {
			if err != nil {
				t.Errorf("put: %v", err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.ReadUpTo(ctx, m.SessionsTopic()); err != nil {
		t.Fatal(err)
	}
	if got := seen.Load(); got != n {
		t.Fatalf("ReadUpTo returned with %d of %d records handed on", got, n)
	}
	if err := m.ReadUpTo(ctx, m.MessagesTopic()); err == nil {
		t.Fatal("ReadUpTo of a topic not followed raw succeeded")
	}

	// Fetches stall at the broker: ReadUpTo gives up when ctx ends.
	gate := make(chan struct{})
	defer close(gate)
	c := m.Cluster()
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-gate })
		return nil, nil, false
	})
	time.Sleep(600 * time.Millisecond) // the fetch already at the broker returns (FetchMaxWait)
	var put sync.WaitGroup
	put.Add(1)
	m.PutSession("s:late", []byte("{}"), func(error) { put.Done() })
	put.Wait()
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := m.ReadUpTo(short, m.SessionsTopic()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadUpTo with fetches stalled: %v, want the deadline", err)
	}
}
