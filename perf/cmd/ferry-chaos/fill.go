package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fill writes records shaped like Ferry's (key = an MQTT topic, a small payload, Ferry's QoS header) straight
// into a Kafka topic, in record batches of exactly --per-batch records per partition, until the topic holds
// --bytes more: a big data dir for restart measurements (scripts/restart.sh) in minutes rather than hours.
// The batch size is the knob that matters: the embedded Kafka keeps an index entry per batch, and Ferry under
// a steady MQTT load writes one to three records per batch.
func fill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	kafka := fs.String("kafka", "", "Kafka bootstrap host:port (required)")
	topic := fs.String("topic", "mqtt-messages", "topic to fill (must exist)")
	total := fs.Int64("bytes", 1<<30, "payload bytes to write (keys, headers and batch overhead come on top)")
	perBatch := fs.Int("per-batch", 2, "records per partition per batch")
	value := fs.Int("value", 64, "payload bytes per record")
	conns := fs.Int("conns", 4, "producers writing at once, each with its own connection")
	_ = fs.Parse(args)
	if *kafka == "" || *perBatch < 1 || *value < 1 || *total < 1 || *conns < 1 {
		return fmt.Errorf("want --kafka, and --per-batch, --value, --bytes and --conns of at least 1")
	}
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	var records, batches, written int64
	for i := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, b, w, err := fillOne(*kafka, *topic, *total/int64(*conns), *perBatch, *value, int64(i))
			mu.Lock()
			defer mu.Unlock()
			records, batches, written = records+r, batches+b, written+w
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	el := time.Since(start)
	fmt.Printf("fill: %d records in %d batches, %d payload bytes, %v (%.0f batches/s)\n", records, batches, written, el.Round(time.Millisecond), float64(batches)/el.Seconds())
	return nil
}

// fillOne is one producer of fill: it writes total payload bytes and returns what it wrote.
func fillOne(kafka, topic string, total int64, perBatch, value int, id int64) (n, batches, written int64, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka), kgo.ManualFlushing(), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MaxBufferedRecords(1<<20))
	if err != nil {
		return 0, 0, 0, err
	}
	defer cl.Close()
	ctx := context.Background()
	tds, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cannot load metadata: %w", err)
	}
	parts := len(tds[topic].Partitions)
	if parts == 0 {
		return 0, 0, 0, fmt.Errorf("topic %s not found", topic)
	}
	payload := make([]byte, value)
	qos := []kgo.RecordHeader{{Key: "mqtt.qos", Value: []byte("1")}}
	for written < total {
		// One request: --per-batch records for every partition, so every partition gets one batch of them.
		for p := range parts {
			for range perBatch {
				r := &kgo.Record{Topic: topic, Partition: int32(p), Key: []byte("fill/device/" + strconv.FormatInt(id*10000+n%10000, 10)), Value: payload, Headers: qos}
				cl.TryProduce(ctx, r, func(_ *kgo.Record, err error) {
					if err != nil {
						panic(fmt.Sprintf("fill: produce: %v", err))
					}
				})
				n++
				written += int64(value)
			}
			batches++
		}
		if err := cl.Flush(ctx); err != nil {
			return n, batches, written, err
		}
	}
	return n, batches, written, nil
}
