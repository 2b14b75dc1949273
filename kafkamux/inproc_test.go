package kafkamux

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Ferry's own client reaches the embedded Kafka over in-process connections, while a Kafka tool still reaches
// it over TCP on its address and sees what Ferry produced.
func TestEmbeddedOwnClientInProcess(t *testing.T) {
	m := newMux(t)
	done := make(chan error, 1)
	m.Produce(context.Background(), &kgo.Record{Topic: m.MessagesTopic(), Key: []byte("a/b"), Value: []byte("v")},
		func(_ *kgo.Record, err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("produce: %v", err)
	}
	m.conns.mu.Lock()
	n := len(m.conns.open)
	for c := range m.conns.open {
		if _, ok := c.(*memConn); !ok {
			t.Errorf("Ferry's client holds a %T to the embedded Kafka, want an in-process connection", c)
		}
	}
	m.conns.mu.Unlock()
	if n == 0 {
		t.Fatal("no open connection tracked after a produce")
	}

	tool, err := kgo.NewClient(kgo.SeedBrokers(m.Addr()), kgo.ConsumeTopics(m.MessagesTopic()),
		kgo.Dialer(func(ctx context.Context, network, host string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, host)
			if err == nil {
				if _, ok := c.(*net.TCPConn); !ok {
					t.Errorf("a Kafka tool got a %T, want TCP", c)
				}
			}
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer tool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs := tool.PollRecords(ctx, 1)
	if err := fs.Err0(); err != nil {
		t.Fatalf("Kafka tool over TCP: %v", err)
	}
	if rs := fs.Records(); len(rs) != 1 || string(rs[0].Value) != "v" {
		t.Fatalf("Kafka tool read %v, want the record Ferry produced", rs)
	}
}
