package kafkamux

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// topicRole is one of the three topics of the data model and the cleanup
// policy it needs.
type topicRole struct {
	role    string // "messages", "retained", "sessions"
	name    string
	compact bool
}

func (c *cfg) roles() []topicRole {
	return []topicRole{
		{"messages", c.topicMessages, false},
		{"retained", c.topicRetained, true},
		{"sessions", c.topicSessions, true},
	}
}

// ensureTopics creates the missing topics of the data model (when allowed)
// and checks the cleanup policy of all three: a sessions topic that is not
// compacted would lose sessions to retention, so it is an error; a wrong
// policy on the other two is logged. It returns the partition count of each
// topic, by name: those it found, or those it created.
func ensureTopics(ctx context.Context, adm *kadm.Client, c *cfg) (map[string]int32, error) {
	roles := c.roles()
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = r.name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("cannot list Kafka topics: %w", err)
	}
	parts := make(map[string]int32, len(roles))
	for _, r := range roles {
		if d, ok := details[r.name]; ok && d.Err == nil {
			parts[r.name] = int32(len(d.Partitions))
			continue
		} else if ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("cannot load %s topic %q: %w", r.role, r.name, d.Err)
		}
		if !c.createTopics {
			return nil, fmt.Errorf("%s topic %q does not exist and topic creation is disabled", r.role, r.name)
		}
		policy := "delete"
		if r.compact {
			policy = "compact"
		}
		n := c.partitions
		if r.role == "messages" {
			n = c.messagesPartitions()
		}
		resp, err := adm.CreateTopic(ctx, n, c.replication, c.topicConfigsOf(r.role, policy, n), r.name)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return nil, fmt.Errorf("cannot create %s topic %q: %w", r.role, r.name, err)
		}
		parts[r.name] = n
		if err == nil {
			c.logger.Info("created Kafka topic", "role", r.role, "topic", r.name,
				"partitions", n, "replication_factor", c.replication, "cleanup.policy", policy)
		}
	}

	configs, err := adm.DescribeTopicConfigs(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("cannot describe Kafka topic configs: %w", err)
	}
	for _, r := range roles {
		rc, err := configs.On(r.name, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			return nil, fmt.Errorf("cannot describe config of %s topic %q: %w", r.role, r.name, err)
		}
		policy := "delete" // Kafka's default when the config is absent
		for _, kv := range rc.Configs {
			if kv.Key == "cleanup.policy" && kv.Value != nil {
				policy = *kv.Value
			}
		}
		compacted := strings.Contains(policy, "compact")
		switch {
		case r.role == "sessions" && !compacted:
			return nil, fmt.Errorf("sessions topic %q has cleanup.policy=%s: it must be compacted "+
				"(kafka-configs --alter --entity-type topics --entity-name %s --add-config cleanup.policy=compact)",
				r.name, policy, r.name)
		case r.compact != compacted:
			c.logger.Warn("Kafka topic has an unexpected cleanup policy", "role", r.role, "topic", r.name,
				"cleanup.policy", policy, "want_compact", r.compact)
		}
	}
	return parts, nil
}

// topicConfigsOf returns the configs of a topic New creates for role: the
// cleanup policy, the embedded cluster's bounds (retention.go), then the
// [TopicConfig]s for all roles, then the role's own.
func (c *cfg) topicConfigsOf(role, policy string, partitions int32) map[string]*string {
	m := map[string]*string{"cleanup.policy": kadm.StringPtr(policy)}
	if c.embedded {
		for k, v := range c.embeddedConfigs(policy == "compact", partitions) {
			m[k] = kadm.StringPtr(v)
		}
	}
	for _, pass := range []string{"", role} {
		for _, tc := range c.topicConfigs {
			if tc.role == pass {
				m[tc.key] = kadm.StringPtr(tc.value)
			}
		}
	}
	return m
}
