// Command bridge is the "any broker + a bridge into Kafka" peer of the Ferry
// benchmarks: a paho.mqtt.golang client subscribed to a filter at QoS 1 that
// produces every message to Kafka with franz-go (batching, 5 ms linger,
// acks=all, idempotent), key = MQTT topic, value = payload byte for byte —
// the record shape Ferry writes. A message is acknowledged to the broker
// (PUBACK) only after Kafka acknowledged the record, so nothing acked is lost.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	broker := flag.String("mqtt", "tcp://127.0.0.1:1883", "MQTT broker URL")
	filter := flag.String("filter", "#", "MQTT topic filter to bridge")
	kafka := flag.String("kafka", "127.0.0.1:9092", "Kafka bootstrap address")
	topic := flag.String("topic", "mqtt-messages", "Kafka topic")
	linger := flag.Duration("linger", 5*time.Millisecond, "producer linger")
	clientID := flag.String("client-id", "ferry-bench-bridge", "MQTT client id")
	flag.Parse()

	kc, err := kgo.NewClient(
		kgo.SeedBrokers(*kafka),
		kgo.DefaultProduceTopic(*topic),
		kgo.ProducerLinger(*linger),
		kgo.RequiredAcks(kgo.AllISRAcks()), // acks=all (and idempotent, franz-go's default)
		kgo.MaxBufferedRecords(100_000),    // then Produce blocks: backpressure into the MQTT session
		kgo.ProducerBatchMaxBytes(1<<20),
	)
	if err != nil {
		log.Fatalf("cannot create kafka producer: %v", err)
	}
	defer kc.Close()

	var produced, failed atomic.Int64
	onMessage := func(_ paho.Client, m paho.Message) {
		rec := &kgo.Record{Key: []byte(m.Topic()), Value: m.Payload()}
		kc.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1) // not acked: the broker redelivers on reconnect
				return
			}
			produced.Add(1)
			m.Ack()
		})
	}
	opts := paho.NewClientOptions().
		AddBroker(*broker).
		SetClientID(*clientID).
		SetCleanSession(true).
		SetAutoAckDisabled(true). // PUBACK after Kafka's ack
		SetOrderMatters(true).    // handler runs in order; Produce only enqueues
		SetKeepAlive(30 * time.Second).
		SetAutoReconnect(true).
		SetMessageChannelDepth(10_000).
		SetOnConnectHandler(func(c paho.Client) {
			if t := c.Subscribe(*filter, 1, onMessage); t.Wait() && t.Error() != nil {
				log.Printf("cannot subscribe to %q: %v", *filter, t.Error())
			}
		})
	mc := paho.NewClient(opts)
	if t := mc.Connect(); t.Wait() && t.Error() != nil {
		log.Fatalf("cannot connect to %s: %v", *broker, t.Error())
	}
	log.Printf("bridging %s %q → kafka %s topic %s", *broker, *filter, *kafka, *topic)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			mc.Disconnect(250)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = kc.Flush(ctx)
			cancel()
			log.Printf("produced %d, failed %d", produced.Load(), failed.Load())
			return
		case <-tick.C:
		}
	}
}
