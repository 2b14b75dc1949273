package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Ferry's data model v1 (kafkamux/README.md): one MQTT PUBLISH is one record of the messages topic, key = the
// MQTT topic name, value = the payload, MQTT 5 properties in "mqtt."-prefixed headers. The example copies the
// two names it needs rather than importing Ferry: a Kafka application needs nothing but a Kafka client.
const (
	headerResponseTopic   = "mqtt.response_topic"   // where the device waits for the answer
	headerCorrelationData = "mqtt.correlation_data" // raw bytes the answer must carry back
)

// Handler computes the answer to one request: the MQTT topic it was published to and its payload.
type Handler func(topic string, payload []byte) []byte

// NewClient returns a Kafka client reading topic (Ferry's messages topic) and producing to it: in consumer
// group group if set (several responders then share the requests), else directly from the end of every
// partition, or from the start with fromStart. It reads committed records only, as Ferry writes QoS 2
// messages in transactions.
func NewClient(brokers []string, topic, group string, fromStart bool, extra ...kgo.Opt) (*kgo.Client, error) {
	start := kgo.NewOffset().AtEnd()
	if fromStart {
		start = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DefaultProduceTopic(topic),
		kgo.ClientID("ferry-kafka-responder"),
	}
	if group != "" {
		opts = append(opts, kgo.ConsumerGroup(group))
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("cannot create Kafka client: %w", err)
	}
	return cl, nil
}

// Run answers every request on cl's topic until ctx is done: each record whose key matches the MQTT topic
// filter and that carries a response topic gets an answer record (see Reply), produced to the same topic.
// It returns nil when ctx is done.
func Run(ctx context.Context, cl *kgo.Client, filter string, h Handler, log *slog.Logger) error {
	if err := validFilter(filter); err != nil {
		return err
	}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			log.Warn("cannot read from Kafka", "topic", t, "partition", p, "err", err)
		})
		fs.EachRecord(func(req *kgo.Record) {
			resp := Reply(req, filter, h)
			if resp == nil {
				return
			}
			cl.Produce(ctx, resp, func(r *kgo.Record, err error) {
				if err != nil && !errors.Is(err, context.Canceled) {
					log.Warn("cannot write answer", "response_topic", string(r.Key), "err", err)
					return
				}
				log.Debug("answered", "request_topic", string(req.Key), "response_topic", string(r.Key))
			})
		})
	}
}

// Reply returns the answer record to req, or nil if req is not a request to answer: its key (the MQTT topic)
// does not match filter, or it has no response topic (answers themselves have none, so a responder never
// answers its own answers). The answer's key is the response topic, its value h's result and its only header
// the correlation data, copied byte for byte when the request had one. Ferry delivers it to the MQTT clients
// subscribed to the response topic, with the correlation data as MQTT 5 Correlation Data. The record's Topic
// is left empty: the client's default produce topic (the one read) applies.
func Reply(req *kgo.Record, filter string, h Handler) *kgo.Record {
	var respTopic, corr []byte
	hasCorr := false
	for _, hd := range req.Headers {
		switch hd.Key {
		case headerResponseTopic:
			respTopic = hd.Value
		case headerCorrelationData:
			corr, hasCorr = hd.Value, true
		}
	}
	if len(respTopic) == 0 || !matches(filter, string(req.Key)) {
		return nil
	}
	resp := &kgo.Record{Key: append([]byte(nil), respTopic...), Value: h(string(req.Key), req.Value)}
	if resp.Value == nil {
		resp.Value = []byte{} // an empty MQTT payload, not a tombstone
	}
	if hasCorr {
		resp.Headers = []kgo.RecordHeader{{Key: headerCorrelationData, Value: append([]byte{}, corr...)}}
	}
	return resp
}

// matches reports whether an MQTT topic name matches a topic filter ('+' one level, '#' the rest), with the
// rule that a filter starting with a wildcard does not match a topic starting with '$'.
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		switch {
		case f == "#":
			return true
		case i >= len(tl):
			return false
		case f != "+" && f != tl[i]:
			return false
		}
	}
	return len(fl) == len(tl)
}

func validFilter(filter string) error {
	if filter == "" {
		return errors.New("invalid request filter: empty")
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if (strings.Contains(l, "+") && l != "+") || (strings.Contains(l, "#") && (l != "#" || i != len(levels)-1)) {
			return fmt.Errorf("invalid request filter %q: a wildcard must be a whole level, '#' the last", filter)
		}
	}
	return nil
}
