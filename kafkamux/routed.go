package kafkamux

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Routed topics: Kafka topics that route rules (server/route) send MQTT messages to besides the messages topic.
// They hold records of the same shape as the messages topic; Ferry creates them on first use with the
// messages topic's settings (partitions, replication factor, TopicConfigs of all roles and of "messages",
// cleanup.policy=delete).

// CreatesTopics reports whether Ferry may create missing topics ([CreateTopics]).
func (m *Mux) CreatesTopics() bool { return m.cfg.createTopics }

// CreateTopic creates a routed topic with the messages topic's settings; a topic that already exists is not an
// error. It fails at once when topic creation is disabled. It blocks for an admin round trip (the request
// carries a timeout, so franz-go sends it on a connection of its own, closed when idle): never call it on an
// event loop.
func (m *Mux) CreateTopic(ctx context.Context, name string) error {
	if !m.cfg.createTopics {
		return fmt.Errorf("cannot create Kafka topic %q: topic creation is disabled", name)
	}
	n := m.cfg.messagesPartitions()
	resp, err := m.adm.CreateTopic(ctx, n, m.cfg.replication, m.cfg.topicConfigsOf("messages", "delete", n), name)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("cannot create Kafka topic %q: %w", name, err)
	}
	if err == nil {
		m.log.Info("created routed Kafka topic", "topic", name, "partitions", n,
			"replication_factor", m.cfg.replication)
	}
	return nil
}

// ListTopicNames returns the names of the cluster's topics (internal ones excluded). It blocks for a metadata
// round trip.
func (m *Mux) ListTopicNames(ctx context.Context) ([]string, error) {
	details, err := m.adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list Kafka topics: %w", err)
	}
	names := make([]string, 0, len(details))
	for name, d := range details {
		if d.Err == nil && len(d.Partitions) > 0 {
			names = append(names, name)
		}
	}
	return names, nil
}
