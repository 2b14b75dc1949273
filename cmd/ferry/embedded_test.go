package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferrymq/ferry/kafkamux"
)

// The embedded Kafka's figures reach /metrics once its cleaner has run: disk and index per topic (the three
// topics and "other", never more), deletions and the last pass.
func TestEmbeddedMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mux, err := kafkamux.New(ctx, kafkamux.EmbeddedAddr("127.0.0.1:0"), kafkamux.DataDir(t.TempDir()), kafkamux.Partitions(1),
		kafkamux.EmbeddedCleanInterval(50*time.Millisecond), kafkamux.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	done := make(chan error, 1)
	mux.Produce(ctx, &kgo.Record{Topic: mux.MessagesTopic(), Key: []byte("a/b"), Value: []byte("x")}, func(_ *kgo.Record, err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		p := &promWriter{}
		appendEmbeddedMetrics(p, mux)
		text = string(p.b)
		if strings.Contains(text, `ferry_embedded_kafka_index_entries{topic="mqtt-messages"} 1`) &&
			!strings.Contains(text, "ferry_embedded_kafka_clean_passes_total 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pass measured the produced record after 10s:\n%s", text)
		}
	}
	for _, want := range []string{
		`# TYPE ferry_embedded_kafka_disk_bytes gauge`,
		`ferry_embedded_kafka_disk_bytes{topic="other"} 0`,
		`ferry_embedded_kafka_index_memory_bytes 72`,
		`ferry_embedded_kafka_records_deleted_total{topic="mqtt-sessions"} 0`,
		`# TYPE ferry_embedded_kafka_clean_passes_total counter`,
		`ferry_embedded_kafka_last_clean_timestamp_seconds `,
		`ferry_embedded_kafka_last_clean_duration_seconds `,
		`# TYPE ferry_embedded_kafka_clean_seconds histogram`,
		`ferry_embedded_kafka_clean_seconds_bucket{kind="retention",le="+Inf"} `,
		`ferry_embedded_kafka_clean_seconds_count{kind="compaction"} `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "ferry_embedded_kafka_disk_bytes{"); n != 4 {
		t.Errorf("%d disk series, want 4 (three topics and other)", n)
	}
}
