package offload

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/kafkamux"
)

// BenchmarkTryPublish drives two lanes as two event loops would, 128-byte
// QoS 1 messages over 1,000 topics, through the embedded Kafka, and reports
// acknowledged messages per second.
func BenchmarkTryPublish(b *testing.B) {
	m := newMux(b, kafkamux.Partitions(6))
	const lanes = 2
	o, err := New(m, lanes)
	if err != nil {
		b.Fatal(err)
	}
	topics := make([]string, 1000)
	for i := range topics {
		topics[i] = fmt.Sprintf("devices/%d/telemetry", i)
	}
	payload := make([]byte, 128)
	var acked atomic.Int64
	done := func(err error) {
		if err != nil {
			b.Error(err)
		}
		acked.Add(1)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
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
		go func() {
			defer wg.Done()
			msg := &kafkamux.Message{Payload: payload, QoS: 1, ClientID: "bench"}
			for i := l; i < b.N; i += lanes {
				msg.Topic = topics[i%len(topics)]
				for {
					err := lane.TryPublish(msg, done)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrFull) {
						b.Error(err)
						return
					}
					<-space
				}
			}
		}()
	}
	wg.Wait()
	for acked.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
