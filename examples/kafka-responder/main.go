// Command kafka-responder answers MQTT 5 requests from a Kafka application: it reads Ferry's messages topic,
// and for every record whose key (the MQTT topic) matches --filter and that carries a response topic, it
// produces an answer record whose key is that response topic, with the correlation data copied. Ferry delivers
// the answer to the requesting device. See README.md.
//
//	go run ./examples/kafka-responder --brokers 127.0.0.1:9092 --filter 'svc/echo/#'
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated (Ferry's embedded Kafka by default)")
	topic := flag.String("topic", "mqtt-messages", "Ferry's messages topic")
	filter := flag.String("filter", "svc/echo/#", "MQTT topic filter of the requests to answer")
	group := flag.String("group", "", "Kafka consumer group, to share requests among several responders (empty = read every partition directly)")
	fromStart := flag.Bool("from-start", false, "also answer requests already in the topic (without --group: read from the start)")
	verbose := flag.Bool("v", false, "log every answer")
	flag.Parse()

	lvl := slog.LevelInfo
	if *verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if err := validFilter(*filter); err != nil {
		fmt.Fprintln(os.Stderr, "kafka-responder:", err)
		os.Exit(2)
	}
	cl, err := NewClient(strings.Split(*brokers, ","), *topic, *group, *fromStart)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka-responder:", err)
		os.Exit(1)
	}
	defer cl.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("answering MQTT requests", "brokers", *brokers, "topic", *topic, "filter", *filter)
	if err := Run(ctx, cl, *filter, echo, log); err != nil {
		fmt.Fprintln(os.Stderr, "kafka-responder:", err)
		os.Exit(1)
	}
}

// echo is the example's service: it answers with the request's topic and payload.
func echo(topic string, payload []byte) []byte {
	return fmt.Appendf(nil, "%s: %s", topic, payload)
}
